#include "daemon/systemd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace repld {

SystemdNotify SystemdNotify::FromEnvironment() {
  SystemdNotify n;
  if (const char* path = std::getenv("NOTIFY_SOCKET"); path != nullptr) n.socket_path_ = path;
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  const bool ours = pid == nullptr || std::strtoll(pid, nullptr, 10) == getpid();
  if (usec != nullptr && ours) {
    const long long us = std::strtoll(usec, nullptr, 10);
    if (us > 0) n.watchdog_ = std::chrono::milliseconds(std::max(1LL, us / 2000));
  }
  return n;
}

Status SystemdNotify::Send(std::string_view state) const {
  if (!enabled()) return Status::Ok();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path) ||
      (socket_path_[0] != '/' && socket_path_[0] != '@')) {
    return Status::Invalid("NOTIFY_SOCKET '" + socket_path_ + "' is not a unix socket path");
  }
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // the abstract namespace
  const socklen_t len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(errno, std::string("notify socket: ") + std::strerror(errno));
  // Never wait: a notify socket whose reader lags (its queue holds net.unix.max_dgram_qlen
  // datagrams, 10 by default) would otherwise stop the event loop. What does not fit is
  // reported; the caller sends it again later.
  const ssize_t n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                           reinterpret_cast<const sockaddr*>(&addr), len);
  const int err = errno;
  close(fd);
  if (n < 0) {
    return Status::Error(err,
                         "cannot notify systemd at " + socket_path_ + ": " + std::strerror(err));
  }
  return Status::Ok();
}

}  // namespace repld
