// The systemd notification protocol (sd_notify(3)), spoken directly: one datagram per message
// to the unix socket named by $NOTIFY_SOCKET ("@..." for the abstract namespace). repld@.service
// is Type=notify: READY=1 once the resource serves (and, per [startup], its peer connected or
// the wait timed out), STATUS=... lines on state changes, WATCHDOG=1 from the event loop, and
// STOPPING=1 on the way out. Without $NOTIFY_SOCKET (not under systemd) nothing is sent.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace repld {

class SystemdNotify {
 public:
  // Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID.
  static SystemdNotify FromEnvironment();

  bool enabled() const { return !socket_path_.empty(); }
  // How often to send WATCHDOG=1 (half of WatchdogSec); none when the unit has no watchdog or
  // it is meant for another process.
  std::optional<std::chrono::milliseconds> watchdog_interval() const { return watchdog_; }

  // Sends `state` ("READY=1\nSTATUS=..."); does nothing when not enabled. Never blocks: a full
  // socket queue is an error with code EAGAIN.
  Status Send(std::string_view state) const;

 private:
  std::string socket_path_;
  std::optional<std::chrono::milliseconds> watchdog_;
};

}  // namespace repld
