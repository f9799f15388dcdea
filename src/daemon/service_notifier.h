// Tells systemd how the resource is doing (repld@.service is Type=notify): READY=1 once the
// resource serves and, as DRBD's init script does with wfc-timeout / degr-wfc-timeout, its peer
// has connected or [startup]'s wait ran out; a STATUS= line whenever the summary changes; and
// WATCHDOG=1 from the event loop, so that a hung loop gets the daemon restarted.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/config.h"
#include "daemon/systemd_notify.h"

namespace repld {

class ServiceNotifier {
 public:
  using StatusFn = std::function<nlohmann::json()>;  // the status object (docs/control.md)

  ServiceNotifier(asio::io_context& io, SystemdNotify notify, StartupConfig startup,
                  StatusFn status);
  void Start();
  void Stopping();

  // "Secondary, UpToDate, Connected to beta (Established)": the STATUS= line.
  static std::string Summary(const nlohmann::json& status);

 private:
  void Check();
  void ScheduleCheck();
  void ScheduleWatchdog();
  bool Send(const std::string& state);  // false: not sent (a full queue: try again later)

  asio::io_context& io_;
  SystemdNotify notify_;
  StartupConfig startup_;
  StatusFn status_;
  asio::steady_timer check_timer_;
  asio::steady_timer watchdog_timer_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::milliseconds wait_{0};  // 0: forever
  const char* wait_key_ = "";
  bool ready_ = false;
  bool timed_out_ = false;  // the startup wait ran out (logged once)
  bool stopping_ = false;
  std::string last_summary_;
};

}  // namespace repld
