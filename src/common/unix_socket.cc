#include "common/unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>

namespace repld {

bool UnixSocketIsLive(const std::string& path, std::string_view probe) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  bool live = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      (probe.empty() || send(fd, probe.data(), probe.size(), MSG_NOSIGNAL | MSG_DONTWAIT) ==
                            static_cast<ssize_t>(probe.size()))) {
    pollfd p{fd, POLLIN, 0};
    char byte;
    live = poll(&p, 1, 1000) == 1 && recv(fd, &byte, 1, MSG_DONTWAIT) >= 0;
  }
  close(fd);
  return live;
}

}  // namespace repld
