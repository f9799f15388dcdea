// Speed and time left of a resync, for status: the done bytes sampled once a second (the core
// keeps no clock). The speed is over the last ten seconds, as DRBD's status shows it next to the
// average since the resync started.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <utility>

namespace repld {

struct ResyncRate {
  std::optional<uint64_t> speed_bytes_per_second;    // over the last 10 s; unset before 1 s
  std::optional<uint64_t> average_bytes_per_second;  // since the resync started
  std::optional<uint64_t> eta_seconds;               // at `speed`; unset when it is 0
};

class ResyncProgress {
 public:
  static constexpr double kWindowSeconds = 10.0;

  // `now_seconds` on a monotonic clock. A total that changes or done bytes that go back start
  // a new resync.
  void Sample(double now_seconds, uint64_t done_bytes, uint64_t total_bytes);
  void Reset();
  ResyncRate Rate() const;

 private:
  struct Point {
    double seconds;
    uint64_t done_bytes;
  };
  std::deque<Point> window_;  // the last kWindowSeconds of samples (and one before)
  std::optional<Point> first_;
  uint64_t total_bytes_ = 0;
};

}  // namespace repld
