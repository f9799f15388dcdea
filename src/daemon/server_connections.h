// What the daemon's small servers (the control socket, the metrics endpoint) share: an accept
// loop that bounds the connections open at once, and the spawning of one coroutine per
// connection whose socket is closed and forgotten when it ends, however it ends.
#pragma once

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <asio/co_spawn.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <exception>
#include <list>
#include <memory>
#include <string>

namespace repld {

// Shutting the socket down first ends at once any send or receive the kernel still holds (an
// io_uring operation in a kernel worker, were Asio on that backend, is not reached by a cancel);
// shutting the socket down wakes it, then close() completes it as aborted.
template <typename Socket>
void ShutdownAndClose(Socket& s) {
  if (!s.is_open()) return;
  ::shutdown(s.native_handle(), SHUT_RDWR);
  asio::error_code ignored;
  s.close(ignored);
}

template <typename Socket>
using ConnectionList = std::list<std::shared_ptr<Socket>>;

// Runs serve(socket) as a coroutine; when it ends (an exception is logged, named by `what`) the
// socket is closed and leaves `connections`. `keep` holds what `connections` lives in (the
// server's shared core), as long as the coroutine runs.
template <typename Socket, typename Serve>
void SpawnConnection(std::shared_ptr<void> keep, ConnectionList<Socket>& connections, Socket socket,
                     const char* what, Serve serve) {
  auto shared = std::make_shared<Socket>(std::move(socket));
  auto it = connections.insert(connections.end(), shared);
  auto executor = shared->get_executor();
  asio::co_spawn(executor, serve(shared),
                 [keep = std::move(keep), &connections, it, what](std::exception_ptr e) {
                   if (e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("{}: connection failed: {}", what, ex.what());
                     }
                   }
                   ShutdownAndClose(**it);
                   connections.erase(it);
                 });
}

// Accepts until the acceptor closes or `stopping` is set. A failed accept (EMFILE and friends)
// is logged and retried after 100 ms, the open connections served on. With `max` connections
// open, a newcomer gets `refusal` (one short send: a fresh socket's buffer is empty, so it
// never blocks) and is closed. The others go to spawn(socket). Everything is passed by
// reference: the caller, which co_awaits this, keeps it alive. (Temporaries with destructors in
// a co_await expression are what GCC 12 destroys twice: keep them out of the call.)
template <typename Acceptor, typename Socket, typename Spawn>
asio::awaitable<void> AcceptConnections(Acceptor& acceptor, const bool& stopping,
                                        const ConnectionList<Socket>& connections, size_t max,
                                        const char* what, const std::string& refusal,
                                        const Spawn& spawn) {
  for (;;) {
    asio::error_code ec;
    Socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      spdlog::warn("{}: accept failed: {}", what, ec.message());
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections.size() >= max) {
      (void)!::send(socket.native_handle(), refusal.data(), refusal.size(),
                    MSG_NOSIGNAL | MSG_DONTWAIT);
      spdlog::warn("{}: refused a connection: {} open already", what, connections.size());
      ShutdownAndClose(socket);
      continue;
    }
    spawn(std::move(socket));
  }
}

}  // namespace repld
