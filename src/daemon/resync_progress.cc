#include "daemon/resync_progress.h"

namespace repld {

void ResyncProgress::Sample(double now_seconds, uint64_t done_bytes, uint64_t total_bytes) {
  if (first_ && (total_bytes != total_bytes_ || done_bytes < window_.back().done_bytes)) Reset();
  total_bytes_ = total_bytes;
  const Point p{now_seconds, done_bytes};
  if (!first_) first_ = p;
  window_.push_back(p);
  // Keep one point at or before the window's start, so the window spans the whole 10 s.
  while (window_.size() > 2 && now_seconds - window_[1].seconds >= kWindowSeconds) {
    window_.pop_front();
  }
}

void ResyncProgress::Reset() {
  window_.clear();
  first_.reset();
  total_bytes_ = 0;
}

namespace {

std::optional<uint64_t> PerSecond(uint64_t bytes, double seconds) {
  if (seconds < 0.5) return std::nullopt;
  return static_cast<uint64_t>(static_cast<double>(bytes) / seconds);
}

}  // namespace

ResyncRate ResyncProgress::Rate() const {
  ResyncRate r;
  if (window_.size() < 2) return r;
  const Point& last = window_.back();
  r.speed_bytes_per_second = PerSecond(last.done_bytes - window_.front().done_bytes,
                                       last.seconds - window_.front().seconds);
  r.average_bytes_per_second =
      PerSecond(last.done_bytes - first_->done_bytes, last.seconds - first_->seconds);
  if (r.speed_bytes_per_second && *r.speed_bytes_per_second > 0 && total_bytes_ >= last.done_bytes) {
    r.eta_seconds = (total_bytes_ - last.done_bytes + *r.speed_bytes_per_second - 1) /
                    *r.speed_bytes_per_second;
  }
  return r;
}

}  // namespace repld
