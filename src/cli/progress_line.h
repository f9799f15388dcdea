// Progress of long work on one terminal line, redrawn in place (create-md on a large disk,
// verify --wait, wait-sync). Nothing at all when standard output is not a terminal, so that
// scripts and logs get the final lines only.
#pragma once

#include <chrono>
#include <string>

namespace repld::cli {

class ProgressLine {
 public:
  ProgressLine();   // on when stdout is a terminal
  ~ProgressLine();  // Finish()
  bool enabled() const { return enabled_; }
  // Redraws the line; at most 10 times a second unless `force` (the first and last states).
  void Draw(const std::string& text, bool force = false);
  // Ends the line (once something was drawn), so that what follows starts on its own.
  void Finish();

 private:
  bool enabled_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace repld::cli
