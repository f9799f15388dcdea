#include "daemon/service_notifier.h"

#include <spdlog/spdlog.h>

#include <cerrno>

namespace repld {
namespace {

// Before READY=1 the status is checked often, so that systemd hears of the peer promptly; then
// once a second is plenty for STATUS= lines (each check builds the whole status object).
constexpr auto kCheckInterval = std::chrono::milliseconds(200);
constexpr auto kCheckIntervalReady = std::chrono::seconds(1);

std::string Text(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string Seconds(std::chrono::milliseconds ms) {
  return std::to_string((ms.count() + 999) / 1000) + " s";
}

}  // namespace

ServiceNotifier::ServiceNotifier(asio::io_context& io, SystemdNotify notify, StartupConfig startup,
                                 StatusFn status)
    : io_(io),
      notify_(std::move(notify)),
      startup_(startup),
      status_(std::move(status)),
      check_timer_(io),
      watchdog_timer_(io) {}

std::string ServiceNotifier::Summary(const nlohmann::json& status) {
  std::string s = Text(status, "role") + ", " + Text(status, "disk");
  const auto peer = status.find("peer");
  if (peer == status.end() || !peer->is_object()) return s + ", no peer";
  const std::string conn = Text(status, "connection");
  s += ", " + conn + (conn == "Connected" ? " to " : " (peer ") + Text(*peer, "node");
  if (conn == "Connected") {
    s += " (" + Text(status, "replication") + ")";
  } else {
    s += ")";
  }
  const auto resync = status.find("resync");
  if (resync != status.end() && resync->is_object()) {
    const auto total = resync->value("total_bytes", uint64_t{0});
    const auto done = resync->value("done_bytes", uint64_t{0});
    if (total > 0) s += ", synced " + std::to_string(done * 100 / total) + "%";
  }
  return s;
}

void ServiceNotifier::Start() {
  started_ = std::chrono::steady_clock::now();
  const nlohmann::json status = status_();
  const bool degraded = status.value("degraded_at_start", false);
  wait_ = degraded ? startup_.degr_wfc_timeout : startup_.wfc_timeout;
  wait_key_ = degraded ? "startup.degr_wfc_timeout" : "startup.wfc_timeout";
  const auto peer = status.find("peer");
  if (notify_.enabled() && peer != status.end() && peer->is_object() &&
      Text(status, "connection") != "Connected") {
    const std::string peer_name = Text(*peer, "node");
    spdlog::info("startup: telling systemd the resource is ready once peer '{}' connects{}",
                 peer_name,
                 wait_.count() == 0 ? std::string(" (no time limit: ") + wait_key_ + " = 0)"
                                    : " or after " + Seconds(wait_) + " (" + wait_key_ + ")");
  }
  if (auto interval = notify_.watchdog_interval()) {
    spdlog::info("systemd watchdog: a ping every {} ms", interval->count());
    ScheduleWatchdog();
  }
  Check();
}

void ServiceNotifier::Stopping() {
  stopping_ = true;
  check_timer_.cancel();
  Send("STOPPING=1\nSTATUS=stopping");
}

void ServiceNotifier::Check() {
  if (stopping_) return;
  const nlohmann::json status = status_();
  const std::string summary = Summary(status);
  std::string state;
  if (!ready_) {
    const auto peer = status.find("peer");
    const bool no_peer = peer == status.end() || !peer->is_object();
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started_);
    if (no_peer || Text(status, "connection") == "Connected") {
      state = "READY=1\n";
    } else if (wait_.count() > 0 && waited >= wait_) {
      state = "READY=1\n";
      if (!timed_out_) {
        timed_out_ = true;
        spdlog::warn("startup: peer '{}' did not connect within {} ({}): serving without it",
                     Text(*peer, "node"), Seconds(wait_), wait_key_);
      }
    } else if (summary == last_summary_) {
      ScheduleCheck();
      return;
    } else {
      state = "STATUS=" + summary + "; waiting for peer '" + Text(*peer, "node") + "'" +
              (wait_.count() > 0 ? " (up to " + Seconds(wait_) + ", " + wait_key_ + ")" : "");
      if (Send(state)) last_summary_ = summary;
      ScheduleCheck();
      return;
    }
  }
  // Sent again at the next check if it did not fit in the socket's queue.
  if ((!state.empty() || summary != last_summary_) && Send(state + "STATUS=" + summary)) {
    last_summary_ = summary;
    if (!state.empty()) ready_ = true;
  }
  ScheduleCheck();
}

void ServiceNotifier::ScheduleCheck() {
  if (!notify_.enabled()) return;
  if (ready_) {
    check_timer_.expires_after(kCheckIntervalReady);
  } else {
    check_timer_.expires_after(kCheckInterval);
  }
  check_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) Check();
  });
}

void ServiceNotifier::ScheduleWatchdog() {
  watchdog_timer_.expires_after(*notify_.watchdog_interval());
  watchdog_timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    Send("WATCHDOG=1");
    ScheduleWatchdog();
  });
}

bool ServiceNotifier::Send(const std::string& state) {
  Status s = notify_.Send(state);
  if (s.ok()) return true;
  if (s.code() == EAGAIN || s.code() == EWOULDBLOCK) {
    spdlog::debug("systemd's notify socket is full; sent again later");
  } else {
    spdlog::warn("{}", s.message());
  }
  return false;
}

}  // namespace repld
