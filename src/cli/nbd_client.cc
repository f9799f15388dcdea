#include "cli/nbd_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "blockdev/nbd_proto.h"

namespace repld::cli {

namespace {

constexpr uint32_t kReplyPayloadBytesMax = 64 * 1024;

Status SendAll(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Status::Error(errno, "NBD handshake: send: " + ErrnoText(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status RecvAll(int fd, void* data, size_t n) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Status::Invalid("NBD handshake: the server closed the connection");
    if (r < 0) return Status::Error(errno, "NBD handshake: receive: " + ErrnoText(errno));
    p += r;
    n -= static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status Handshake(int fd, const std::string& export_name, NbdExportInfo& info) {
  uint8_t hello[18];
  if (Status s = RecvAll(fd, hello, sizeof hello); !s.ok()) return s;
  if (nbd::GetU64(hello) != nbd::kMagicNbd || nbd::GetU64(hello + 8) != nbd::kMagicIHaveOpt) {
    return Status::Invalid("NBD handshake: not a newstyle NBD server");
  }
  const uint16_t server_flags = nbd::GetU16(hello + 16);
  if ((server_flags & nbd::kFlagFixedNewstyle) == 0) {
    return Status::Invalid("NBD handshake: the server does not speak fixed newstyle");
  }
  uint8_t client_flags[4];
  nbd::PutU32(client_flags, nbd::kClientFlagFixedNewstyle |
                                (server_flags & nbd::kFlagNoZeroes ? nbd::kClientFlagNoZeroes : 0));
  if (Status s = SendAll(fd, client_flags, sizeof client_flags); !s.ok()) return s;

  // NBD_OPT_GO: the name, and one information request (the block sizes).
  std::vector<uint8_t> opt(16 + 4 + export_name.size() + 2 + 2);
  nbd::PutU64(opt.data(), nbd::kMagicIHaveOpt);
  nbd::PutU32(opt.data() + 8, nbd::kOptGo);
  nbd::PutU32(opt.data() + 12, static_cast<uint32_t>(opt.size() - 16));
  nbd::PutU32(opt.data() + 16, static_cast<uint32_t>(export_name.size()));
  std::memcpy(opt.data() + 20, export_name.data(), export_name.size());
  nbd::PutU16(opt.data() + 20 + export_name.size(), 1);
  nbd::PutU16(opt.data() + 22 + export_name.size(), nbd::kInfoBlockSize);
  if (Status s = SendAll(fd, opt.data(), opt.size()); !s.ok()) return s;

  bool have_export = false;
  for (;;) {
    uint8_t head[20];
    if (Status s = RecvAll(fd, head, sizeof head); !s.ok()) return s;
    if (nbd::GetU64(head) != nbd::kMagicOptReply || nbd::GetU32(head + 8) != nbd::kOptGo) {
      return Status::Invalid("NBD handshake: malformed option reply");
    }
    const uint32_t type = nbd::GetU32(head + 12);
    const uint32_t length = nbd::GetU32(head + 16);
    if (length > kReplyPayloadBytesMax) return Status::Invalid("NBD handshake: reply too long");
    std::vector<uint8_t> payload(length);
    if (Status s = RecvAll(fd, payload.data(), length); !s.ok()) return s;
    if (type & nbd::kRepFlagError) {
      std::string text(payload.begin(), payload.end());
      return Status::Invalid("the daemon refused export '" + export_name + "'" +
                             (text.empty() ? "" : ": " + text));
    }
    if (type == nbd::kRepAck) break;
    if (type != nbd::kRepInfo || length < 2) continue;
    const uint16_t what = nbd::GetU16(payload.data());
    if (what == nbd::kInfoExport && length >= 12) {
      info.size_bytes = nbd::GetU64(payload.data() + 2);
      info.transmission_flags = nbd::GetU16(payload.data() + 10);
      have_export = true;
    } else if (what == nbd::kInfoBlockSize && length >= 14) {
      info.block_min_bytes = nbd::GetU32(payload.data() + 2);
    }
  }
  if (!have_export) return Status::Invalid("NBD handshake: the server did not describe the export");
  return Status::Ok();
}

}  // namespace

Result<int> NbdOpenExport(const std::string& path, const std::string& export_name,
                          NbdExportInfo& info) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return Status::Invalid("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(errno, "socket: " + ErrnoText(errno));
  timeval timeout{10, 0};  // a handshake that stalls is an error, not a hang
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd);
    return Status::Error(e, "NBD socket " + path + ": " + ErrnoText(e) +
                                (e == ENOENT || e == ECONNREFUSED
                                     ? " (is the resource's daemon running? systemctl status "
                                       "repld@RES)"
                                     : ""));
  }
  Status s = Handshake(fd, export_name, info);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  timeval none{0, 0};  // the kernel has timeouts of its own
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  return fd;
}

}  // namespace repld::cli
