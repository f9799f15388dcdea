// `replctl status`'s human form, as DRBD's `drbdadm status` reads:
//
//   r0 role:Primary
//     disk:UpToDate
//     beta role:Secondary
//       replication:SyncSource peer-disk:Inconsistent
//       out-of-sync: 736.0 MiB
//       [=====>..............] sync'ed: 28.1% (736/1024)M  done: 288.0 MiB of 1.0 GiB
//     counters: sent 1.2 GiB, received 0 B, written 1.2 GiB, read 3.4 MiB, al-writes 12, ...
//
// A pure function of the daemon's status object (docs/control.md), so that it is tested without
// a daemon. Missing or mistyped fields print as "?" or 0; it never throws.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace repld::cli {

std::string FormatStatus(const nlohmann::json& status);

// "[=====>..............]": done of total in 20 characters.
std::string FormatProgressBar(uint64_t done, uint64_t total);
// "[=====>..............] 28.1% (288.0 MiB of 1.0 GiB)".
std::string FormatProgress(uint64_t done_bytes, uint64_t total_bytes);
// "[=====>..............] sync'ed: 28.1% (736/1024)M  done: 288.0 MiB of 1.0 GiB".
std::string FormatResyncProgress(uint64_t done_bytes, uint64_t total_bytes);
// "finish: 0:02:30 speed: 23,260 (21,628) K/sec": the time left at the speed of the last 10 s,
// that speed and the average since the start (DRBD's second progress line). "?" for unknowns.
std::string FormatResyncSpeed(std::optional<uint64_t> eta_seconds,
                              std::optional<uint64_t> speed_bytes_per_second,
                              std::optional<uint64_t> average_bytes_per_second);

}  // namespace repld::cli
