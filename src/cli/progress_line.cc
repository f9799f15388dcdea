#include "cli/progress_line.h"

#include <unistd.h>

#include <cstdio>

namespace repld::cli {

ProgressLine::ProgressLine() : enabled_(isatty(STDOUT_FILENO) == 1) {}

ProgressLine::~ProgressLine() { Finish(); }

void ProgressLine::Draw(const std::string& text, bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && !force && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  // Padded: a shorter line must cover the longer one before it.
  std::fprintf(stdout, "\r%-110s", text.c_str());
  std::fflush(stdout);
}

void ProgressLine::Finish() {
  if (!drawn_) return;
  drawn_ = false;
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace repld::cli
