#include "cli/nbd_netlink.h"

#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace repld::cli {

namespace {

constexpr size_t kMessageBytesMax = 8192;

// Builds one netlink message: header, genetlink header, attributes (nested ones closed by End).
class Message {
 public:
  Message(uint16_t type, uint8_t cmd, uint8_t version) {
    Reserve(NLMSG_HDRLEN);
    auto* h = reinterpret_cast<nlmsghdr*>(buf_);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    h->nlmsg_seq = 1;
    auto* g = static_cast<genlmsghdr*>(Reserve(GENL_HDRLEN));
    g->cmd = cmd;
    g->version = version;
  }
  void Put(uint16_t type, const void* data, size_t n) {
    auto* a = static_cast<nlattr*>(Reserve(NLA_HDRLEN + NLA_ALIGN(n)));
    a->nla_type = type;
    a->nla_len = static_cast<uint16_t>(NLA_HDRLEN + n);
    std::memcpy(reinterpret_cast<uint8_t*>(a) + NLA_HDRLEN, data, n);
  }
  void PutU32(uint16_t type, uint32_t v) { Put(type, &v, sizeof v); }
  void PutU64(uint16_t type, uint64_t v) { Put(type, &v, sizeof v); }
  void PutString(uint16_t type, const char* s) { Put(type, s, std::strlen(s) + 1); }
  size_t Begin(uint16_t type) {
    const size_t at = len_;
    auto* a = static_cast<nlattr*>(Reserve(NLA_HDRLEN));
    a->nla_type = static_cast<uint16_t>(type | NLA_F_NESTED);
    return at;
  }
  void End(size_t at) {
    reinterpret_cast<nlattr*>(buf_ + at)->nla_len = static_cast<uint16_t>(len_ - at);
  }
  const uint8_t* data() {
    reinterpret_cast<nlmsghdr*>(buf_)->nlmsg_len = static_cast<uint32_t>(len_);
    return buf_;
  }
  size_t size() const { return len_; }

 private:
  void* Reserve(size_t n) {
    REPLD_CHECK(len_ + n <= sizeof buf_);
    void* p = buf_ + len_;
    std::memset(p, 0, n);
    len_ += n;
    return p;
  }
  alignas(nlmsghdr) uint8_t buf_[kMessageBytesMax]{};
  size_t len_ = 0;
};

class Socket {
 public:
  Socket() : fd_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC)) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  // Sends `m` and reads until its ACK; `on_reply` sees each attribute of a reply message.
  template <typename F>
  Status Call(Message& m, const char* what, F on_reply) {
    if (::send(fd_, m.data(), m.size(), 0) < 0) {
      return Status::Error(errno, std::string(what) + ": " + ErrnoText(errno));
    }
    alignas(nlmsghdr) uint8_t buf[kMessageBytesMax];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::Error(errno, std::string(what) + ": " + ErrnoText(errno));
      int left = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
          const int err = -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
          if (err == 0) return Status::Ok();  // the ACK
          return Status::Error(err, std::string(what) + ": " + ErrnoText(err));
        }
        if (h->nlmsg_type == NLMSG_DONE) return Status::Ok();
        auto* a = reinterpret_cast<nlattr*>(static_cast<uint8_t*>(NLMSG_DATA(h)) + GENL_HDRLEN);
        int rest = static_cast<int>(h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN);
        while (rest >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= rest) {
          on_reply(a->nla_type & NLA_TYPE_MASK, reinterpret_cast<uint8_t*>(a) + NLA_HDRLEN,
                   a->nla_len - NLA_HDRLEN);
          rest -= NLA_ALIGN(a->nla_len);
          a = reinterpret_cast<nlattr*>(reinterpret_cast<uint8_t*>(a) + NLA_ALIGN(a->nla_len));
        }
      }
    }
  }

 private:
  int fd_;
};

Result<uint16_t> FamilyId(Socket& sock) {
  Message m(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
  m.PutString(CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME);
  uint16_t id = 0;
  Status s = sock.Call(m, "netlink family nbd", [&](uint16_t type, const uint8_t* p, size_t n) {
    if (type == CTRL_ATTR_FAMILY_ID && n >= 2) std::memcpy(&id, p, 2);
  });
  if (!s.ok()) {
    if (s.code() == ENOENT) {
      return Status::Error(ENOENT,
                           "the kernel's nbd driver is not loaded (modprobe nbd), or this "
                           "kernel has none: use the NBD socket with a userspace client, or "
                           "frontend = \"ublk\"");
    }
    return s;
  }
  if (id == 0) return Status::Invalid("netlink family nbd: no id in the answer");
  return id;
}

void PutSockets(Message& m, const std::vector<int>& fds) {
  const size_t sockets = m.Begin(NBD_ATTR_SOCKETS);
  for (int fd : fds) {
    const size_t item = m.Begin(NBD_SOCK_ITEM);
    m.PutU32(NBD_SOCK_FD, static_cast<uint32_t>(fd));
    m.End(item);
  }
  m.End(sockets);
}

}  // namespace

Status NbdNetlinkReconfigure(uint32_t index, const std::vector<int>& sockets) {
  Socket sock;
  if (!sock.ok()) return Status::Error(errno, "netlink socket: " + ErrnoText(errno));
  auto family = FamilyId(sock);
  if (!family.ok()) return family.status();
  Message m(family.value(), NBD_CMD_RECONFIGURE, NBD_GENL_VERSION);
  m.PutU32(NBD_ATTR_INDEX, index);
  PutSockets(m, sockets);
  return sock.Call(m, ("nbd RECONFIGURE of /dev/nbd" + std::to_string(index)).c_str(),
                   [](uint16_t, const uint8_t*, size_t) {});
}

Result<uint32_t> NbdNetlinkConnect(const NbdConnectRequest& request) {
  Socket sock;
  if (!sock.ok()) return Status::Error(errno, "netlink socket: " + ErrnoText(errno));
  auto family = FamilyId(sock);
  if (!family.ok()) return family.status();
  Message m(family.value(), NBD_CMD_CONNECT, NBD_GENL_VERSION);
  if (request.index) m.PutU32(NBD_ATTR_INDEX, *request.index);
  m.PutU64(NBD_ATTR_SIZE_BYTES, request.size_bytes);
  m.PutU64(NBD_ATTR_BLOCK_SIZE_BYTES, request.block_bytes);
  m.PutU64(NBD_ATTR_SERVER_FLAGS, request.server_flags);
  if (request.timeout_s > 0) m.PutU64(NBD_ATTR_TIMEOUT, request.timeout_s);
  if (request.dead_conn_timeout_s > 0) {
    m.PutU64(NBD_ATTR_DEAD_CONN_TIMEOUT, request.dead_conn_timeout_s);
  }
  PutSockets(m, request.sockets);
  uint32_t index = UINT32_MAX;
  Status s = sock.Call(m, "nbd CONNECT", [&](uint16_t type, const uint8_t* p, size_t n) {
    if (type == NBD_ATTR_INDEX && n >= 4) std::memcpy(&index, p, 4);
  });
  if (!s.ok()) {
    if (s.code() == EBUSY && request.index) {
      return Status::Error(EBUSY, "/dev/nbd" + std::to_string(*request.index) +
                                      " is in use; pick another --index or leave it out");
    }
    return s;
  }
  if (index == UINT32_MAX) {
    if (!request.index) return Status::Invalid("nbd CONNECT: the driver named no device");
    index = *request.index;
  }
  return index;
}

Status NbdNetlinkDisconnect(uint32_t index) {
  Socket sock;
  if (!sock.ok()) return Status::Error(errno, "netlink socket: " + ErrnoText(errno));
  auto family = FamilyId(sock);
  if (!family.ok()) return family.status();
  Message m(family.value(), NBD_CMD_DISCONNECT, NBD_GENL_VERSION);
  m.PutU32(NBD_ATTR_INDEX, index);
  return sock.Call(m, ("nbd DISCONNECT of /dev/nbd" + std::to_string(index)).c_str(),
                   [](uint16_t, const uint8_t*, size_t) {});
}

}  // namespace repld::cli
