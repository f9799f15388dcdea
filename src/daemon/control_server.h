// The daemon's control socket: replctl's way in (docs/control.md). A unix stream socket, mode
// 0600 (0660 with a group: [control] group), one JSON request per line and one JSON response per
// line, several per connection. It is bounded: kControlConnectionsMax connections (more are told so
// and closed), lines of at most kControlLineBytesMax bytes (a longer one is answered with an error
// and the connection closed), kControlIdleTimeout without progress closes a connection. Nothing
// throws out of it.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace repld {

class ControlServer {
 public:
  // Runs on the io_context's thread with a checked request (see ParseControlRequest): returns
  // the response object without "version"; "ok" defaults to true. An exception it throws
  // becomes an error response. It may wait (a role change that creates or removes a device);
  // the connection's next request waits for it, other connections do not. A response with
  // "subscribe": true (removed before it is sent) turns the connection into a stream of the
  // lines Publish() sends from then on (`replctl events`).
  using Handler = std::function<asio::awaitable<nlohmann::json>(const nlohmann::json& request)>;

  // `group`: empty, or the group whose members may connect too (by name).
  ControlServer(asio::io_context& io, std::string path, Handler handler, std::string group = {});
  ~ControlServer();  // Stop()s
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket (and its directory, 0755, if missing) and starts accepting. A stale
  // socket file left by a dead daemon is replaced; one that answers is an error.
  [[nodiscard]] Status Start();
  // Closes the listener and every connection and removes the socket file. Idempotent.
  void Stop();

  const std::string& path() const { return path_; }
  size_t connection_count() const;

  // Sends `line` (a response line, with its '\n') to every subscribed connection. Each holds at
  // most kControlEventsQueuedMax unsent lines: a client that reads slower than that is told so
  // and dropped, never waited for.
  void Publish(const std::string& line);
  size_t subscriber_count() const;

 private:
  struct Core;  // shared with the connections' coroutines, which may outlive a Stop()
  asio::io_context& io_;
  std::string path_;
  std::string group_;
  std::shared_ptr<Core> core_;
  bool bound_ = false;  // the socket file is ours to remove
};

}  // namespace repld
