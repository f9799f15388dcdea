#pragma once

#include <cstdint>

namespace repld {

// The dynamic resync controller ([resync] c_plan_ahead, c_fill_target, c_min_rate, c_max_rate,
// after DRBD's): the resync uses what the link gives while the application is idle and yields
// to it, down to c_min_rate, while it is not. Per Tick (one second in the daemon): application
// I/O seen since the last Tick sets the rate to min_rate at once; each quiet Tick doubles it,
// and after plan_ahead_ticks quiet Ticks it is max_rate (0: no limit).
struct ResyncController {
  uint32_t plan_ahead_ticks = 0;   // 0: off; the fixed resync_rate_bytes applies
  uint64_t fill_target_bytes = 0;  // resync data in flight at most; 0: resync_window blocks
  uint64_t min_rate_bytes = 250 * 1024;
  uint64_t max_rate_bytes = 0;  // 0: as fast as the disks and link go
  bool operator==(const ResyncController&) const = default;
};

}  // namespace repld
