// The daemon's optional Prometheus endpoint ([metrics] listen): a small HTTP/1.1 server on TCP.
// GET /metrics answers with body() (text exposition format, daemon/metrics_text.h), GET / with a
// page that points there; other paths are 404, other methods 405, a malformed request 400.
// One request per connection (Connection: close).
//
// It runs on the daemon's event-loop thread and never blocks it. It is bounded: at most
// kMetricsConnectionsMax connections (more are answered 503 and closed), a request head of at
// most kMetricsRequestHeadBytesMax bytes (beyond: 431), kMetricsRequestTimeout for the request
// and its answer. Nothing throws out of it. Start(), Stop() and the destructor run on the
// io_context's thread, or while no thread runs it.
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "common/units.h"

namespace repld {

inline constexpr size_t kMetricsConnectionsMax = 8;
inline constexpr size_t kMetricsRequestHeadBytesMax = 8 * kKiB;
// From the accept to the last byte of the answer; a scrape takes milliseconds.
inline constexpr std::chrono::seconds kMetricsRequestTimeout{10};
// After the answer: how long the client may take to close before we do. Reading what it still
// sends meanwhile keeps the kernel from answering it with a reset that could destroy our answer.
inline constexpr std::chrono::seconds kMetricsLingerTimeout{2};

class MetricsServer {
 public:
  // Runs on the io_context's thread, once per GET /metrics. An exception it throws becomes a
  // 500 answer.
  using Body = std::function<std::string()>;

  // `listen` is "HOST:PORT" ("127.0.0.1:9942", "[::1]:9942"); Start() checks it.
  MetricsServer(asio::io_context& io, std::string listen, Body body);
  // An endpoint as is: port 0 picks a free port (see port()). For tests.
  MetricsServer(asio::io_context& io, const asio::ip::tcp::endpoint& endpoint, Body body);
  ~MetricsServer();  // Stop()s
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds, listens and starts accepting. An error says which address and why.
  [[nodiscard]] Status Start();
  // Closes the listener and every connection; body() is not called again. Idempotent.
  void Stop();

  // The bound port after a successful Start(); 0 before.
  uint16_t port() const { return port_; }
  size_t connection_count() const;

 private:
  struct Core;  // shared with the connections' coroutines, which may outlive a Stop()
  asio::io_context& io_;
  std::string listen_;  // as configured, for messages
  std::optional<asio::ip::tcp::endpoint> endpoint_;
  std::shared_ptr<Core> core_;
  uint16_t port_ = 0;
};

}  // namespace repld
