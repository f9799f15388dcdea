#include "daemon/metrics_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <exception>
#include <list>
#include <string_view>
#include <vector>

#include "daemon/config.h"
#include "daemon/metrics_text.h"
#include "daemon/server_connections.h"

namespace repld {
namespace {

using tcp = asio::ip::tcp;
using asio::redirect_error;
using asio::use_awaitable;

// What a lingering connection may still send us before we stop reading and close anyway.
constexpr size_t kLingerBytesMax = 64 * kKiB;

std::string EndpointText(const tcp::endpoint& endpoint) {
  const asio::ip::address a = endpoint.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" +
         std::to_string(endpoint.port());
}

std::string ListenHint(const asio::error_code& ec) {
  switch (ec.value()) {
    case EADDRINUSE:
      return "set [metrics] listen to a free port";
    case EADDRNOTAVAIL:
      return "set [metrics] listen to an address of this host";
    case EACCES:
      return "set [metrics] listen to a port above 1023";
    default:
      return "check [metrics] listen";
  }
}

// Just past the empty line that ends a request head, or npos. Lines end in CRLF, or in a bare
// LF, which RFC 9112 lets a server accept.
size_t HeadEnd(std::string_view data) {
  for (size_t i = data.find('\n'); i != std::string_view::npos; i = data.find('\n', i + 1)) {
    if (i + 1 < data.size() && data[i + 1] == '\n') return i + 2;
    if (i + 2 < data.size() && data[i + 1] == '\r' && data[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

// RFC 9110's token characters: method and header names.
bool IsToken(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

struct Request {
  std::string method;
  std::string path;  // the target without its query
};

// The request line and the header lines' shape; nullopt if either is malformed.
std::optional<Request> ParseHead(std::string_view head) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    lines.push_back(line);
    head.remove_prefix(nl == std::string_view::npos ? head.size() : nl + 1);
  }
  if (lines.empty()) return std::nullopt;
  const std::string_view first = lines[0];
  const size_t sp1 = first.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : first.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return std::nullopt;
  const std::string_view method = first.substr(0, sp1);
  const std::string_view target = first.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = first.substr(sp2 + 1);
  if (!IsToken(method) || target.empty() || target.find(' ') != std::string_view::npos) {
    return std::nullopt;
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return std::nullopt;
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string_view::npos || !IsToken(lines[i].substr(0, colon))) {
      return std::nullopt;  // also obsolete line folding, which starts with a space
    }
  }
  return Request{std::string(method), std::string(target.substr(0, target.find('?')))};
}

std::string Response(std::string_view status, std::string_view content_type,
                     const std::string& body, std::string_view extra_headers = {}) {
  std::string r = "HTTP/1.1 " + std::string(status) + "\r\n";
  r += "Content-Type: " + std::string(content_type) + "\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r += std::string(extra_headers);
  r += "Connection: close\r\n\r\n";
  r += body;
  return r;
}

std::string ErrorResponse(std::string_view status, const std::string& text,
                          std::string_view extra_headers = {}) {
  return Response(status, "text/plain; charset=utf-8", text + "\n", extra_headers);
}

std::string IndexResponse() {
  return Response("200 OK", "text/plain; charset=utf-8",
                  "repld: Prometheus metrics of this replicated resource are at /metrics\n");
}

}  // namespace

struct MetricsServer::Core {
  Core(asio::io_context& io, Body b) : acceptor(io), body(std::move(b)) {}

  tcp::acceptor acceptor;
  Body body;
  std::list<std::shared_ptr<tcp::socket>> connections;  // at most kMetricsConnectionsMax
  bool stopping = false;

  static asio::awaitable<void> AcceptLoop(std::shared_ptr<Core> core);
  static asio::awaitable<void> Serve(std::shared_ptr<Core> core,
                                     std::shared_ptr<tcp::socket> socket);
  // The answer to what the client sends; "" if it sends nothing, or stops, or Stop() came.
  asio::awaitable<std::string> ReadAndAnswer(tcp::socket& socket);
  std::string Answer(const Request& request);
};

asio::awaitable<void> MetricsServer::Core::AcceptLoop(std::shared_ptr<Core> core) {
  const std::string refusal =
      ErrorResponse("503 Service Unavailable",
                    "too many metrics connections (" + std::to_string(kMetricsConnectionsMax) +
                        " at once); try again",
                    "Retry-After: 1\r\n");
  const auto spawn = [core](tcp::socket socket) {
    SpawnConnection(core, core->connections, std::move(socket), "metrics",
                    [core](std::shared_ptr<tcp::socket> s) { return Serve(core, std::move(s)); });
  };
  co_await AcceptConnections(core->acceptor, core->stopping, core->connections,
                             kMetricsConnectionsMax, "metrics", refusal, spawn);
}

asio::awaitable<void> MetricsServer::Core::Serve(std::shared_ptr<Core> core,
                                                 std::shared_ptr<tcp::socket> socket) {
  asio::error_code ec;
  socket->non_blocking(true, ec);  // never blocks the loop
  asio::steady_timer watchdog(socket->get_executor());
  auto arm = [&watchdog, weak = std::weak_ptr<tcp::socket>(socket)](auto timeout) {
    watchdog.expires_after(timeout);
    watchdog.async_wait([weak](const asio::error_code& wait_ec) {
      if (wait_ec) return;
      if (auto s = weak.lock()) ShutdownAndClose(*s);
    });
  };
  arm(kMetricsRequestTimeout);
  const std::string response = co_await core->ReadAndAnswer(*socket);
  if (response.empty() || core->stopping) co_return;
  const asio::const_buffer out = asio::buffer(response);
  co_await asio::async_write(*socket, out, redirect_error(use_awaitable, ec));
  if (ec || core->stopping) co_return;
  // Close our side and read what the client still sends until it closes too: closing with
  // unread bytes would make the kernel send a reset, which may destroy the answer in flight.
  ::shutdown(socket->native_handle(), SHUT_WR);
  arm(kMetricsLingerTimeout);
  std::string scratch(4096, '\0');  // on the heap, as in ReadAndAnswer
  const asio::mutable_buffer in = asio::buffer(scratch);
  for (size_t drained = 0; drained < kLingerBytesMax && !core->stopping;) {
    drained += co_await socket->async_read_some(in, redirect_error(use_awaitable, ec));
    if (ec) break;
  }
}

asio::awaitable<std::string> MetricsServer::Core::ReadAndAnswer(tcp::socket& socket) {
  std::string head;
  // On the heap: with a 2 KiB array in the coroutine's frame, GCC 12 falsely reports
  // -Wmismatched-new-delete on the frame's allocation.
  std::string chunk(2048, '\0');
  std::string response;
  while (response.empty()) {
    const size_t room = kMetricsRequestHeadBytesMax - head.size();
    if (room == 0) {
      response = ErrorResponse("431 Request Header Fields Too Large",
                               "the request head is longer than " +
                                   std::to_string(kMetricsRequestHeadBytesMax) + " bytes");
      break;
    }
    asio::error_code ec;
    const asio::mutable_buffer in = asio::buffer(chunk.data(), std::min(room, chunk.size()));
    const size_t n = co_await socket.async_read_some(in, redirect_error(use_awaitable, ec));
    if (stopping) break;
    if (ec == asio::error::eof && !head.empty()) {
      response = ErrorResponse("400 Bad Request", "the request head ends early");
      break;
    }
    if (ec) break;  // closed by the client, the watchdog or Stop()
    const size_t scan_from = head.size() < 2 ? 0 : head.size() - 2;
    head.append(chunk.data(), n);
    const size_t end = HeadEnd(std::string_view(head).substr(scan_from));
    if (end == std::string_view::npos) continue;
    const std::optional<Request> request =
        ParseHead(std::string_view(head).substr(0, scan_from + end));
    response =
        request ? Answer(*request) : ErrorResponse("400 Bad Request", "malformed HTTP request");
  }
  co_return response;
}

std::string MetricsServer::Core::Answer(const Request& request) {
  if (request.method != "GET") {
    return ErrorResponse("405 Method Not Allowed", "only GET is served here", "Allow: GET\r\n");
  }
  if (request.path == "/") return IndexResponse();
  if (request.path != "/metrics") {
    return ErrorResponse("404 Not Found", "not found; the metrics are at /metrics");
  }
  std::string failure;
  try {
    return Response("200 OK", kMetricsContentType, body());
  } catch (const std::exception& e) {
    failure = e.what();
  }
  spdlog::error("metrics: building the metrics failed: {}", failure);
  return ErrorResponse("500 Internal Server Error",
                       "building the metrics failed: " + failure + "; see the daemon's log");
}

MetricsServer::MetricsServer(asio::io_context& io, std::string listen, Body body)
    : io_(io), listen_(std::move(listen)), core_(std::make_shared<Core>(io, std::move(body))) {}

MetricsServer::MetricsServer(asio::io_context& io, const tcp::endpoint& endpoint, Body body)
    : io_(io),
      listen_(EndpointText(endpoint)),
      endpoint_(endpoint),
      core_(std::make_shared<Core>(io, std::move(body))) {}

MetricsServer::~MetricsServer() { Stop(); }

size_t MetricsServer::connection_count() const { return core_->connections.size(); }

Status MetricsServer::Start() {
  if (!endpoint_) {
    const std::optional<HostPort> hp = ParseHostPort(listen_);
    if (!hp) {
      return Status::Invalid("metrics: '" + listen_ +
                             "' is not HOST:PORT; set [metrics] listen to an address and port "
                             "such as \"127.0.0.1:9942\" or \"[::1]:9942\"");
    }
    endpoint_ = tcp::endpoint(asio::ip::make_address(hp->host), hp->port);  // checked by the parse
  }
  asio::error_code ec;
  tcp::acceptor& acceptor = core_->acceptor;
  acceptor.open(endpoint_->protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(*endpoint_, ec);
  if (!ec) acceptor.listen(static_cast<int>(2 * kMetricsConnectionsMax), ec);
  if (!ec) acceptor.non_blocking(true, ec);  // never blocks the loop
  tcp::endpoint bound;
  if (!ec) bound = acceptor.local_endpoint(ec);
  if (ec) {
    ShutdownAndClose(acceptor);
    return Status::Error(ec.value(), "metrics: cannot listen on " + listen_ + ": " + ec.message() +
                                         "; " + ListenHint(ec));
  }
  port_ = bound.port();
  core_->stopping = false;
  asio::co_spawn(io_, Core::AcceptLoop(core_), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("metrics: the accept loop failed: {}", ex.what());
    }
  });
  spdlog::info("metrics: serving Prometheus metrics on http://{}/metrics", EndpointText(bound));
  return Status::Ok();
}

void MetricsServer::Stop() {
  core_->stopping = true;
  ShutdownAndClose(core_->acceptor);
  for (auto& socket : core_->connections) ShutdownAndClose(*socket);
}

}  // namespace repld
