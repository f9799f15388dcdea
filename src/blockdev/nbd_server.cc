#include "blockdev/nbd_server.h"

#include "common/unix_socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace repld {

NbdServer::NbdServer(asio::io_context& io, NbdExport exp, NbdLimits limits, BlockSink& store,
                     BufferPool& pool)
    : io_(io),
      export_(std::move(exp)),
      limits_(limits),
      store_(store),
      pool_(pool),
      connection_closed_(io.get_executor()) {}

NbdServer::~NbdServer() {
  if (!unix_path_.empty()) unlink(unix_path_.c_str());
}

Status NbdServer::ListenUnix(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return Status::Invalid("unix socket path '" + path + "' is longer than " +
                           std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::Invalid("'" + path + "' exists and is not a socket; remove it or choose " +
                             "another nbd.socket");
    }
    if (UnixSocketIsLive(path)) {
      return Status::Invalid("'" + path + "' is in use by another process (is this resource " +
                             "already running?)");
    }
    unlink(path.c_str());  // stale, left by a daemon that died
  }
  asio::error_code ec;
  Acceptor& acceptor = acceptors_.emplace_back(io_);
  const asio::local::stream_protocol::endpoint local(path);
  const asio::generic::stream_protocol::endpoint ep(local);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptors_.pop_back();
    return Status::Error(ec.value(),
                         "cannot listen on unix socket '" + path + "': " + ec.message());
  }
  chmod(path.c_str(), 0660);
  unix_path_ = path;
  spdlog::info("nbd: listening on unix socket {}", path);
  return Status::Ok();
}

Status NbdServer::ListenTcp(const std::string& host, uint16_t port) {
  const std::string host_port = host + ":" + std::to_string(port);
  asio::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) return Status::Invalid("'" + host + "' is not an IP address");
  const asio::ip::tcp::endpoint tcp_ep(address, port);
  const asio::generic::stream_protocol::endpoint ep(tcp_ep);
  Acceptor& acceptor = acceptors_.emplace_back(io_);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptors_.pop_back();
    return Status::Error(ec.value(), "cannot listen on TCP " + host_port + ": " + ec.message());
  }
  spdlog::info("nbd: listening on TCP {}", host_port);
  return Status::Ok();
}

void NbdServer::Start() {
  for (Acceptor& acceptor : acceptors_) {
    asio::error_code ec;
    acceptor.non_blocking(true, ec);  // never blocks the loop
    const bool is_tcp = acceptor.local_endpoint().protocol().family() != AF_UNIX;
    asio::co_spawn(io_, AcceptLoop(acceptor, is_tcp ? "tcp" : "unix"), asio::detached);
  }
}

asio::awaitable<void> NbdServer::AcceptLoop(Acceptor& acceptor, std::string kind) {
  for (;;) {
    asio::error_code ec;
    auto socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // EMFILE and friends: log, back off briefly, keep serving the clients we have.
      spdlog::warn("nbd: accept on {} failed: {}", kind, ec.message());
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    const std::string name = kind + "#" + std::to_string(next_connection_id_++);
    if (connections_.size() >= limits_.connections_max) {
      spdlog::warn("nbd {}: refused: {} clients connected already (nbd.connections_max)", name,
                   connections_.size());
      socket.close(ec);
      continue;
    }
    if (kind == "tcp") {
      const int one = 1;
      setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    Serve(std::move(socket), name);
  }
}

void NbdServer::Serve(asio::generic::stream_protocol::socket socket, std::string name) {
  auto connection = std::make_shared<NbdConnection>(std::move(socket), std::move(name), export_,
                                                    limits_, store_, pool_);
  auto it = connections_.insert(connections_.end(), connection);
  asio::co_spawn(io_, connection->Run(), [this, it](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("nbd {}: connection failed: {}", (*it)->name(), ex.what());
      }
    }
    connections_.erase(it);
    connection_closed_.Notify();
  });
}

void NbdServer::AbortConnections() {
  for (auto& connection : connections_) connection->Abort();
}

asio::awaitable<void> NbdServer::Shutdown(std::chrono::milliseconds drain_timeout) {
  stopping_ = true;
  asio::error_code ec;
  for (Acceptor& acceptor : acceptors_) {
    // A pending io_uring accept may sit in a kernel worker where cancellation does not reach
    // it; shutting the listening socket down wakes it, then close() completes it as aborted.
    ::shutdown(acceptor.native_handle(), SHUT_RDWR);
    acceptor.close(ec);
  }
  if (!unix_path_.empty()) {
    unlink(unix_path_.c_str());
    unix_path_.clear();
  }
  for (auto& connection : connections_) connection->Stop();
  asio::steady_timer deadline(io_, drain_timeout);
  deadline.async_wait([this](const asio::error_code& wait_ec) {
    if (wait_ec) return;
    spdlog::warn("nbd: {} connections still busy after the drain timeout; closing them",
                 connections_.size());
    AbortConnections();
  });
  while (!connections_.empty()) co_await connection_closed_.Wait();
  deadline.cancel();
}

}  // namespace repld
