#include "daemon/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "daemon/control_proto.h"

namespace repld {

ControlClient::~ControlClient() {
  if (fd_ >= 0) close(fd_);
}

Status ControlClient::Connect(const std::string& path, std::chrono::milliseconds timeout) {
  path_ = path;
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return Status::Invalid("control socket path '" + path + "' is longer than " +
                           std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return Status::Error(errno, "cannot create a unix socket: " + ErrnoText(errno));
  // On AF_UNIX the send timeout also bounds connect() to a daemon whose backlog is full.
  const timeval tv{static_cast<time_t>(timeout.count() / 1000),
                   static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = (errno == EAGAIN || errno == EINPROGRESS) ? ETIMEDOUT : errno;
    return Status::Error(e, "cannot connect to the control socket '" + path + "': " + ErrnoText(e));
  }
  return Status::Ok();
}

Status ControlClient::Send(const std::string& line) {
  for (size_t sent = 0; sent < line.size();) {
    const ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno == EAGAIN ? ETIMEDOUT : errno;
      return Status::Error(e, "cannot send to the control socket '" + path_ + "': " + ErrnoText(e));
    }
    sent += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<nlohmann::json> ControlClient::Read(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    if (const size_t nl = buffer_.find('\n'); nl != std::string::npos) {
      const std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return ParseControlResponse(line);
    }
    if (buffer_.size() > kControlLineBytesMax * 16) {
      return Status::Invalid("the daemon's answer on '" + path_ + "' has no end of line");
    }
    int wait_ms = -1;
    if (timeout.count() > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<int64_t>(left.count(), 0));
    }
    pollfd p{fd_, POLLIN, 0};
    const int ready = poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      return Status::Error(ETIMEDOUT, "the daemon did not answer on '" + path_ + "' within " +
                                          std::to_string(timeout.count()) + " ms");
    }
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      return Status::Error(e,
                           "cannot read from the control socket '" + path_ + "': " + ErrnoText(e));
    }
    if (n == 0) {
      return Status::Error(ECONNRESET, "the daemon closed the control connection on '" + path_ +
                                           "' without answering");
    }
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<nlohmann::json> CallControl(const std::string& path, const std::string& request_line,
                                   std::chrono::milliseconds timeout) {
  ControlClient client;
  if (Status s = client.Connect(path, timeout); !s.ok()) return s;
  if (Status s = client.Send(request_line); !s.ok()) return s;
  return client.Read(timeout);
}

}  // namespace repld
