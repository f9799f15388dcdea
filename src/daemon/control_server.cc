#include "daemon/control_server.h"

#include <grp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <deque>
#include <filesystem>
#include <list>
#include <vector>

#include "common/unix_socket.h"
#include "daemon/control_proto.h"
#include "daemon/server_connections.h"

namespace repld {
namespace {

using Socket = asio::local::stream_protocol::socket;
using Acceptor = asio::local::stream_protocol::acceptor;

// The id of group `name` ([control] group), from the system's group database.
Result<gid_t> GroupId(const std::string& name) {
  std::vector<char> buffer(16384);
  group entry{};
  group* found = nullptr;
  const int rc = getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (rc != 0) {
    return Status::Error(rc,
                         "control.group: cannot look up group '" + name + "': " + ErrnoText(rc));
  }
  if (found == nullptr) {
    return Status::Invalid("control.group: there is no group '" + name +
                           "' on this machine (groupadd " + name +
                           ", or remove the key: then only root may use the control socket)");
  }
  return found->gr_gid;
}

Status PrepareDirectory(const std::string& path) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) return Status::Ok();
  std::error_code ec;
  if (std::filesystem::create_directories(dir, ec)) {
    chmod(dir.c_str(), 0755);
  } else if (ec) {
    return Status::Error(ec.value(), "cannot create the control socket's directory '" +
                                         dir.string() + "': " + ec.message());
  }
  return Status::Ok();
}

Status RemoveStaleSocket(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) {
    return Status::Invalid("'" + path + "' exists and is not a socket; remove it or set another " +
                           "control_socket for this node");
  }
  if (UnixSocketIsLive(path, ControlRequestLine("status"))) {
    return Status::Invalid("a daemon already answers on the control socket '" + path +
                           "' (is this resource already running on this node?)");
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::Error(
        errno, "cannot remove the stale control socket '" + path + "': " + ErrnoText(errno));
  }
  spdlog::info("control: replaced the stale socket {} left by a daemon that died", path);
  return Status::Ok();
}

}  // namespace

// A connection that asked for events: the lines published since, until it reads them.
struct Subscriber {
  explicit Subscriber(const asio::any_io_executor& ex) : wake(ex) {}
  std::deque<std::string> lines;  // at most kControlEventsQueuedMax
  asio::steady_timer wake;        // cancelled when a line comes
  bool overflowed = false;
  bool gone = false;  // the client hung up (or sent something: events take no requests)
};

struct ControlServer::Core {
  Core(asio::io_context& io, Handler h) : acceptor(io), handler(std::move(h)) {}

  Acceptor acceptor;
  Handler handler;
  std::list<std::shared_ptr<Socket>> connections;  // at most kControlConnectionsMax
  std::list<std::shared_ptr<Subscriber>> subscribers;
  bool stopping = false;

  struct Answered {
    std::string line;
    bool subscribe = false;
  };
  static asio::awaitable<void> AcceptLoop(std::shared_ptr<Core> core);
  static asio::awaitable<void> Serve(std::shared_ptr<Core> core, std::shared_ptr<Socket> socket);
  static asio::awaitable<void> Stream(std::shared_ptr<Core> core, std::shared_ptr<Socket> socket);
  // The response line to one request line.
  asio::awaitable<Answered> Answer(std::string line);
};

// Sends the published lines as they come; ends when the client goes, falls behind, or Stop().
asio::awaitable<void> ControlServer::Core::Stream(std::shared_ptr<Core> core,
                                                  std::shared_ptr<Socket> socket) {
  auto sub = std::make_shared<Subscriber>(socket->get_executor());
  auto it = core->subscribers.insert(core->subscribers.end(), sub);
  struct Unsubscribe {
    std::shared_ptr<Core> core;
    std::list<std::shared_ptr<Subscriber>>::iterator it;
    ~Unsubscribe() { core->subscribers.erase(it); }
  } unsubscribe{core, it};
  // A client that hangs up is noticed by a read that ends (it sends nothing more).
  std::array<char, 1> byte{};
  socket->async_read_some(asio::buffer(byte), [sub](const asio::error_code&, size_t) {
    sub->gone = true;
    sub->wake.cancel();
  });
  asio::error_code ec;
  for (;;) {
    while (sub->lines.empty() && !sub->overflowed && !sub->gone && !core->stopping) {
      sub->wake.expires_at(asio::steady_timer::time_point::max());
      co_await sub->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (core->stopping || sub->gone) co_return;
    std::string batch;
    while (!sub->lines.empty()) {
      batch += sub->lines.front();
      sub->lines.pop_front();
    }
    if (sub->overflowed) {
      batch += ControlErrorLine("events: this client fell more than " +
                                std::to_string(kControlEventsQueuedMax) +
                                " events behind; run 'replctl events' again for the current state");
    }
    asio::steady_timer watchdog(socket->get_executor());
    watchdog.expires_after(kControlIdleTimeout);
    watchdog.async_wait([weak = std::weak_ptr<Socket>(socket)](const asio::error_code& wait_ec) {
      if (wait_ec) return;
      if (auto s = weak.lock()) ShutdownAndClose(*s);
    });
    co_await asio::async_write(*socket, asio::buffer(batch),
                               asio::redirect_error(asio::use_awaitable, ec));
    watchdog.cancel();
    if (ec || sub->overflowed) co_return;
  }
}

asio::awaitable<void> ControlServer::Core::AcceptLoop(std::shared_ptr<Core> core) {
  const std::string refusal =
      ControlErrorLine("too many control connections (" + std::to_string(kControlConnectionsMax) +
                       " at once); try again");
  const auto spawn = [core](Socket socket) {
    SpawnConnection(core, core->connections, std::move(socket), "control",
                    [core](std::shared_ptr<Socket> s) { return Serve(core, std::move(s)); });
  };
  co_await AcceptConnections(core->acceptor, core->stopping, core->connections,
                             kControlConnectionsMax, "control", refusal, spawn);
}

asio::awaitable<void> ControlServer::Core::Serve(std::shared_ptr<Core> core,
                                                 std::shared_ptr<Socket> socket) {
  asio::error_code ec;
  socket->non_blocking(true, ec);
  asio::steady_timer watchdog(socket->get_executor());
  // Every read and write must make progress within kControlIdleTimeout.
  auto arm = [&watchdog, weak = std::weak_ptr<Socket>(socket)] {
    watchdog.expires_after(kControlIdleTimeout);
    watchdog.async_wait([weak](const asio::error_code& wait_ec) {
      if (wait_ec) return;
      if (auto s = weak.lock()) ShutdownAndClose(*s);
    });
  };
  std::string buffer;
  for (;;) {
    arm();
    // One byte more than a line may hold, so that a full buffer without '\n' means too long.
    const size_t n = co_await asio::async_read_until(
        *socket, asio::dynamic_buffer(buffer, kControlLineBytesMax + 1), '\n',
        asio::redirect_error(asio::use_awaitable, ec));
    if (core->stopping) co_return;
    // The idle timeout is the client's: a request that takes long (a role change that waits
    // for a device) must not close the connection before its answer.
    watchdog.cancel();
    std::string response;
    bool close_after = false;
    bool subscribe = false;
    if (ec == asio::error::not_found) {
      response =
          ControlErrorLine("request line longer than " + std::to_string(kControlLineBytesMax) +
                           " bytes; closing the connection");
      close_after = true;
    } else if (ec == asio::error::eof && !buffer.empty()) {
      response = (co_await core->Answer(buffer)).line;  // a last request without its '\n'
      close_after = true;
    } else if (ec) {
      co_return;  // closed by the client, the watchdog or Stop()
    } else {
      std::string_view line(buffer.data(), n - 1);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      Answered answered = co_await core->Answer(std::string(line));
      response = std::move(answered.line);
      subscribe = answered.subscribe;
      buffer.erase(0, n);
    }
    arm();
    co_await asio::async_write(*socket, asio::buffer(response),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec || close_after || core->stopping) co_return;
    if (subscribe) {
      watchdog.cancel();
      co_await Stream(core, socket);
      co_return;
    }
  }
}

asio::awaitable<ControlServer::Core::Answered> ControlServer::Core::Answer(std::string line) {
  auto request = ParseControlRequest(line);
  if (!request.ok()) co_return Answered{ControlErrorLine(request.status().message())};
  const std::string command = request.value()["command"].get<std::string>();
  std::string failure;
  try {
    nlohmann::json answer = co_await handler(request.value());
    Answered a;
    if (answer.is_object() && answer.contains("subscribe")) {
      a.subscribe = answer["subscribe"] == true;
      answer.erase("subscribe");
    }
    a.line = ControlResponseLine(std::move(answer));
    co_return a;
  } catch (const std::exception& e) {
    failure = e.what();
  }
  spdlog::error("control: '{}' failed: {}", command, failure);
  co_return Answered{ControlErrorLine("internal error in the daemon while handling '" + command +
                                      "': " + failure + "; see the daemon's log")};
}

void ControlServer::Publish(const std::string& line) {
  for (auto& sub : core_->subscribers) {
    if (sub->overflowed) continue;
    if (sub->lines.size() >= kControlEventsQueuedMax) {
      sub->overflowed = true;
    } else {
      sub->lines.push_back(line);
    }
    sub->wake.cancel();
  }
}

size_t ControlServer::subscriber_count() const { return core_->subscribers.size(); }

ControlServer::ControlServer(asio::io_context& io, std::string path, Handler handler,
                             std::string group)
    : io_(io),
      path_(std::move(path)),
      group_(std::move(group)),
      core_(std::make_shared<Core>(io, std::move(handler))) {}

ControlServer::~ControlServer() { Stop(); }

size_t ControlServer::connection_count() const { return core_->connections.size(); }

Status ControlServer::Start() {
  if (path_.size() >= sizeof(sockaddr_un::sun_path)) {
    return Status::Invalid("control socket path '" + path_ + "' is longer than " +
                           std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
  }
  if (Status s = PrepareDirectory(path_); !s.ok()) return s;
  if (Status s = RemoveStaleSocket(path_); !s.ok()) return s;
  asio::error_code ec;
  Acceptor& acceptor = core_->acceptor;
  const asio::local::stream_protocol::endpoint ep(path_);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (ec) {
    ShutdownAndClose(acceptor);
    return Status::Error(ec.value(),
                         "cannot bind the control socket '" + path_ + "': " + ec.message());
  }
  bound_ = true;
  // Before listen(), nobody can connect, so the owner and mode are right before anyone can use
  // the socket.
  if (!group_.empty()) {
    auto gid = GroupId(group_);
    if (!gid.ok()) {
      Stop();
      return gid.status();
    }
    if (chown(path_.c_str(), static_cast<uid_t>(-1), gid.value()) != 0) {
      const int e = errno;
      Stop();
      return Status::Error(e, "cannot give the control socket '" + path_ + "' to group '" + group_ +
                                  "': " + ErrnoText(e));
    }
  }
  const mode_t mode = group_.empty() ? 0600 : 0660;
  if (chmod(path_.c_str(), mode) != 0) {
    const int e = errno;
    Stop();
    return Status::Error(e, "cannot make the control socket '" + path_ + "' mode " +
                                (group_.empty() ? "0600" : "0660") + ": " + ErrnoText(e));
  }
  acceptor.listen(static_cast<int>(kControlConnectionsMax), ec);
  if (!ec) acceptor.non_blocking(true, ec);  // never blocks the loop
  if (ec) {
    Stop();
    return Status::Error(ec.value(),
                         "cannot listen on the control socket '" + path_ + "': " + ec.message());
  }
  asio::co_spawn(io_, Core::AcceptLoop(core_), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("control: the accept loop failed: {}", ex.what());
    }
  });
  spdlog::info("control: listening on {}", path_);
  return Status::Ok();
}

void ControlServer::Stop() {
  core_->stopping = true;
  for (auto& sub : core_->subscribers) sub->wake.cancel();
  ShutdownAndClose(core_->acceptor);
  for (auto& socket : core_->connections) ShutdownAndClose(*socket);
  if (bound_) {
    unlink(path_.c_str());
    bound_ = false;
  }
}

}  // namespace repld
