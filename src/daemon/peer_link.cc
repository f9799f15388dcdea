// The peer link's outer loop: who connects, listening and accepting, connecting with backoff,
// and Start / Stop / Drop. A connection's own life is a PeerSession (peer_session.h).
#include "daemon/peer_link.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/ip/address.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <optional>

#include "daemon/peer_session.h"

namespace repld {
namespace {

using asio::redirect_error;
using asio::use_awaitable;
using asio::ip::tcp;

// "127.0.0.1:7789", "[::1]:7789": numeric addresses only, as the config allows.
Result<tcp::endpoint> ParseEndpoint(const std::string& text, const std::string& what) {
  const std::string bad = what + " '" + text + "' is not HOST:PORT with a numeric address (" +
                          "\"127.0.0.1:7789\", \"[::1]:7789\")";
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return Status::Invalid(bad);
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port_text = text.substr(colon + 1);
  if (port_text.size() > 5 || !std::all_of(port_text.begin(), port_text.end(), ::isdigit)) {
    return Status::Invalid(bad);
  }
  const unsigned long port = std::stoul(port_text);
  asio::error_code ec;
  const asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec || port == 0 || port > 65535) return Status::Invalid(bad);
  return tcp::endpoint(address, static_cast<uint16_t>(port));
}

std::string ToString(const tcp::endpoint& endpoint) {
  const asio::ip::address a = endpoint.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" +
         std::to_string(endpoint.port());
}

}  // namespace

struct PeerLink::Impl : link::LinkCore {
  Impl(asio::io_context& io_context, PeerLinkConfig link_config, PeerLinkHandler& link_handler,
       BufferPool& receive_pool)
      : LinkCore(io_context, std::move(link_config), link_handler, receive_pool),
        acceptor(io_context),
        backoff(io_context) {}

  Status CheckConfig();
  Status Listen();
  static asio::awaitable<void> AcceptLoop(std::shared_ptr<Impl> self, uint64_t run);
  static asio::awaitable<void> ConnectLoop(std::shared_ptr<Impl> self, uint64_t run);
  asio::awaitable<bool> AnnounceConnecting(uint64_t run);
  void NoteConnectFailure(const std::string& reason);
  void EndRun();
  void Halt(bool notify);
  std::vector<std::shared_ptr<link::PeerSession>> LiveSessions() const;

  tcp::acceptor acceptor;       // the acceptor's; closed while the link is down
  asio::steady_timer backoff;   // the connector's wait between attempts
  tcp::endpoint peer_endpoint;  // the connector's target
};

Status PeerLink::Impl::CheckConfig() {
  for (const std::string* name : {&config.resource, &config.node, &config.peer_node}) {
    if (!peer::IsValidWireName(*name)) {
      return Status::Invalid("peer link: name '" + *name + "' is not 1 to 64 of A-Z a-z 0-9 _ - .");
    }
  }
  if (config.node == config.peer_node) {
    return Status::Invalid("peer link: node '" + config.node + "' cannot be its own peer");
  }
  if (config.secret.empty()) {
    return Status::Invalid("peer link of resource '" + config.resource +
                           "': no shared secret; set net.secret in the config of both nodes");
  }
  if (side == peer::HandshakeSide::kConnector) {
    Result<tcp::endpoint> ep = ParseEndpoint(config.peer_address, "the address of " + peer_name);
    if (!ep.ok()) return ep.status();
    peer_endpoint = ep.value();
  }
  return Status::Ok();
}

Status PeerLink::Impl::Listen() {
  Result<tcp::endpoint> ep =
      ParseEndpoint(config.address, "the address of node '" + config.node + "'");
  if (!ep.ok()) return ep.status();
  asio::error_code ec;
  acceptor.open(ep->protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep.value(), ec);
  if (!ec) acceptor.listen(static_cast<int>(link::kHandshakesMax), ec);
  if (!ec) acceptor.non_blocking(true, ec);  // never blocks the loop
  if (ec) {
    acceptor.close();
    return Status::Error(ec.value(), "cannot listen for " + peer_name + " on " + config.address +
                                         " (the address of node '" + config.node +
                                         "'): " + ec.message());
  }
  spdlog::info("{}: listening for {} on {}", config.resource, peer_name, config.address);
  return Status::Ok();
}

// OnConnecting for a new run, after the OnDown of an older run's connection.
asio::awaitable<bool> PeerLink::Impl::AnnounceConnecting(uint64_t r) {
  while (ending > 0 && Active(r)) co_await ended.Wait();
  if (!Active(r)) co_return false;
  handler.OnConnecting();
  co_return true;
}

asio::awaitable<void> PeerLink::Impl::AcceptLoop(std::shared_ptr<Impl> self, uint64_t r) {
  if (!co_await self->AnnounceConnecting(r)) co_return;
  for (;;) {
    asio::error_code ec;
    tcp::socket socket = co_await self->acceptor.async_accept(redirect_error(use_awaitable, ec));
    if (!self->Active(r)) co_return;
    if (ec) {
      // EMFILE and friends: pause briefly instead of spinning.
      spdlog::warn("{}: accepting a connection failed: {}", self->config.resource, ec.message());
      asio::steady_timer pause(self->io, std::chrono::milliseconds(100));
      co_await pause.async_wait(redirect_error(use_awaitable, ec));
      if (!self->Active(r)) co_return;
      continue;
    }
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    const std::string address = ec ? "an unknown address" : ToString(remote);
    if (self->HandshakesInProgress() >= link::kHandshakesMax) {
      spdlog::warn("{}: closed the connection from {}: {} handshakes are in progress already",
                   self->config.resource, address, link::kHandshakesMax);
      link::ShutdownAndClose(socket);
      continue;
    }
    auto session = self->NewSession(std::move(socket), address, "the connection from " + address);
    asio::co_spawn(self->io, session->Run(), [session](std::exception_ptr e, bool) {
      link::LogIfFailed(e, "a peer connection");
    });
  }
}

asio::awaitable<void> PeerLink::Impl::ConnectLoop(std::shared_ptr<Impl> self, uint64_t r) {
  if (!co_await self->AnnounceConnecting(r)) co_return;
  spdlog::info("{}: connecting to {} at {}", self->config.resource, self->peer_name,
               self->config.peer_address);
  std::chrono::milliseconds delay = link::kReconnectFirst;
  while (self->Active(r)) {
    auto session = self->NewSession(tcp::socket(self->io), self->config.peer_address,
                                    self->peer_name + " at " + self->config.peer_address);
    Status s = co_await session->Connect(self->peer_endpoint);
    if (!self->Active(r)) co_return;
    if (!s.ok()) {
      self->NoteConnectFailure(s.message());
      session->Close(s.message());
    } else if (co_await session->Run()) {
      delay = link::kReconnectFirst;  // it was up: the next attempt starts the backoff afresh
    }
    session.reset();
    if (!self->Active(r)) co_return;
    self->backoff.expires_after(delay);
    asio::error_code ec;
    co_await self->backoff.async_wait(redirect_error(use_awaitable, ec));
    delay = std::min(delay * 2, self->config.reconnect_max);
  }
}

// A peer that is simply not running yet fails every attempt the same way: say so once.
void PeerLink::Impl::NoteConnectFailure(const std::string& reason) {
  if (reason == last_connect_failure) {
    spdlog::debug("{}: {}; retrying", config.resource, reason);
    return;
  }
  last_connect_failure = reason;
  spdlog::info("{}: {}; retrying (repeats are logged at debug level)", config.resource, reason);
}

void PeerLink::Impl::EndRun() {
  running = false;
  ++run;
  asio::error_code ignored;
  acceptor.close(ignored);
  backoff.cancel();
}

std::vector<std::shared_ptr<link::PeerSession>> PeerLink::Impl::LiveSessions() const {
  std::vector<std::shared_ptr<link::PeerSession>> live;
  for (const auto& weak : sessions) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  return live;
}

void PeerLink::Impl::Halt(bool notify) {
  const bool was_running = running;
  EndRun();
  // A copy: the handler may call back into the link from OnSendDone / OnDown.
  for (const auto& session : LiveSessions()) session->Abandon(notify);
  current.reset();
  if (was_running) spdlog::info("{}: the link to {} is stopped", config.resource, peer_name);
}

PeerLink::PeerLink(asio::io_context& io, PeerLinkConfig config, PeerLinkHandler& handler,
                   BufferPool& receive_pool)
    : impl_(std::make_shared<Impl>(io, std::move(config), handler, receive_pool)) {}

// Silent: the handler may be partly destroyed already. Call Stop() first to hear OnDown.
PeerLink::~PeerLink() { impl_->Halt(false); }

Status PeerLink::Start() {
  Impl& c = *impl_;
  if (c.running) return Status::Ok();
  if (Status s = c.CheckConfig(); !s.ok()) return s;
  if (c.side == peer::HandshakeSide::kAcceptor) {
    if (Status s = c.Listen(); !s.ok()) return s;
  }
  c.running = true;
  const uint64_t r = ++c.run;
  asio::co_spawn(c.io,
                 c.side == peer::HandshakeSide::kAcceptor ? Impl::AcceptLoop(impl_, r)
                                                          : Impl::ConnectLoop(impl_, r),
                 [](std::exception_ptr e) { link::LogIfFailed(e, "the peer link loop"); });
  return Status::Ok();
}

void PeerLink::Stop() { impl_->Halt(true); }

void PeerLink::Drop(const std::string& reason, bool reconnect) {
  Impl& c = *impl_;
  if (!reconnect && c.running) {
    c.EndRun();
    spdlog::info("{}: the link to {} stays down until started again: {}", c.config.resource,
                 c.peer_name, reason);
  }
  if (std::shared_ptr<link::PeerSession> current = c.current) {
    current->Close(reason, peer::Error{peer::ErrorCode::kUnspecified, reason});
  }
  if (!reconnect) {
    for (const auto& session : c.LiveSessions()) session->Close(reason);
  }
}

void PeerLink::Retune(const PeerLinkConfig& tunables) {
  PeerLinkConfig& c = impl_->config;
  c.secret = tunables.secret;
  c.ping_interval = tunables.ping_interval;
  c.ping_timeout = tunables.ping_timeout;
  c.ko_count = tunables.ko_count;
  c.connect_timeout = tunables.connect_timeout;
  c.reconnect_max = tunables.reconnect_max;
}

bool PeerLink::up() const { return impl_->current && impl_->current->up(); }

std::optional<std::chrono::microseconds> PeerLink::peer_rtt() const {
  if (!up()) return std::nullopt;
  return impl_->current->rtt();
}

const std::string& PeerLink::last_error() const { return impl_->last_error; }

bool PeerLink::SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie) {
  return impl_->current && impl_->current->SendData(head, data, cookie);
}

void PeerLink::SendRecvAck(uint64_t seq) { SendSmall(peer::RecvAck{seq}.Encode()); }

void PeerLink::SendWriteAck(uint64_t seq, int error) {
  SendSmall(peer::WriteAck{seq, error}.Encode());
}

void PeerLink::SendFlush(uint64_t seq) { SendSmall(peer::Flush{seq}.Encode()); }

void PeerLink::SendFlushAck(uint64_t seq, int error) {
  SendSmall(peer::FlushAck{seq, error}.Encode());
}

void PeerLink::SendState(const PeerState& state) { SendSmall(link::ToWireState(state).Encode()); }

void PeerLink::SendOutOfSync(std::span<const OutOfSyncRun> runs, bool last) {
  peer::OutOfSync m;
  m.flags = last ? peer::kOutOfSyncFlagLast : 0;
  m.runs.reserve(runs.size());
  for (const OutOfSyncRun& r : runs) m.runs.push_back({r.offset_bytes, r.length_bytes});
  if (impl_->current) impl_->current->SendLarge(m.Encode());
}

void PeerLink::SendCsums(const peer::Csums& message) {
  if (impl_->current) impl_->current->SendLarge(message.Encode());
}

void PeerLink::SendCsumReply(uint64_t seq, std::span<const OutOfSyncRun> differing, int error) {
  peer::CsumReply m;
  m.seq = seq;
  m.error = error;
  for (const OutOfSyncRun& r : differing) m.differing.push_back({r.offset_bytes, r.length_bytes});
  if (impl_->current) impl_->current->SendLarge(m.Encode());
}

void PeerLink::SendReadRequest(uint64_t seq, uint64_t offset_bytes, uint32_t length_bytes) {
  SendSmall(peer::ReadRequest{seq, offset_bytes, length_bytes}.Encode());
}

void PeerLink::SendPromoteRequest(uint64_t token) {
  SendSmall(peer::PromoteRequest{token}.Encode());
}

void PeerLink::SendPromoteReply(const peer::PromoteReply& message) {
  if (impl_->current) impl_->current->SendLarge(message.Encode());  // the reason: up to 512 bytes
}

void PeerLink::SendReadError(uint64_t seq, int error) {
  SendSmall(peer::ReadError{seq, error}.Encode());
}

void PeerLink::SendSmall(std::span<const uint8_t> frame) {
  if (impl_->current) impl_->current->SendSmall(frame);
}

}  // namespace repld
