// The handshake of one peer connection (docs/peer-protocol.md, "Handshake"): Hello, Auth and
// State in both directions, each side sending before it reads, so neither waits for the other.
// The whole exchange is bounded by connect_timeout.
#include <spdlog/spdlog.h>

#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "daemon/peer_session.h"
#include "replication/crc32c.h"

namespace repld::link {

using asio::redirect_error;
using asio::use_awaitable;

peer::State ToWireState(const PeerState& s) {
  peer::State w;
  w.role = s.role;
  w.disk = s.disk;
  w.flags = (s.resync_done ? peer::kStateFlagResyncDone : 0) |
            (s.discard_my_data ? peer::kStateFlagDiscardMyData : 0) |
            (s.primary_at_split ? peer::kStateFlagPrimaryAtSplit : 0);
  w.data_bytes = s.data_bytes;
  w.current_uuid = s.ids.current;
  w.bitmap_uuid = s.ids.bitmap;
  w.history_uuids = {s.ids.history[0], s.ids.history[1]};
  w.out_of_sync_bytes = s.out_of_sync_bytes;
  return w;
}

PeerState FromWireState(const peer::State& w) {
  PeerState s;
  s.role = w.role;
  s.disk = w.disk;
  s.resync_done = (w.flags & peer::kStateFlagResyncDone) != 0;
  s.discard_my_data = (w.flags & peer::kStateFlagDiscardMyData) != 0;
  s.primary_at_split = (w.flags & peer::kStateFlagPrimaryAtSplit) != 0;
  s.data_bytes = w.data_bytes;
  s.ids.current = w.current_uuid;
  s.ids.bitmap = w.bitmap_uuid;
  s.ids.history[0] = w.history_uuids[0];
  s.ids.history[1] = w.history_uuids[1];
  s.out_of_sync_bytes = w.out_of_sync_bytes;
  return s;
}

void PeerSession::ArmWatchdog() {
  // Each arming has its own number: a timer that expired just before it was cancelled still
  // runs its handler, which must then do nothing.
  const uint64_t arming = ++watchdog_armings_;
  watchdog_armed_ = arming;
  timed_out_ = false;
  watchdog_.expires_after(config_.connect_timeout);
  watchdog_.async_wait([weak = weak_from_this(), arming](const asio::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->watchdog_armed_ != arming) return;
    self->timed_out_ = true;
    ShutdownAndClose(self->socket_);
  });
}

void PeerSession::DisarmWatchdog() {
  watchdog_armed_ = 0;
  watchdog_.cancel();
}

asio::awaitable<Status> PeerSession::Connect(const asio::ip::tcp::endpoint& endpoint) {
  ArmWatchdog();
  asio::error_code ec;
  co_await socket_.async_connect(endpoint, redirect_error(use_awaitable, ec));
  DisarmWatchdog();
  const std::string what = "cannot connect to " + who_;
  if (timed_out_) {
    co_return Status::Invalid(what + ": no answer within " +
                              std::to_string(config_.connect_timeout.count()) + " ms (timeout)");
  }
  if (closed_) co_return Status::Invalid(what + ": " + reason_);
  if (ec) co_return Status::Error(ec.value(), what + ": " + ec.message());
  co_return Status::Ok();
}

asio::awaitable<Status> PeerSession::Handshake() {
  asio::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  // Sends and receives then run as plain syscalls on this thread once the reactor reports the
  // socket ready: the kernel never reads our buffers behind our back (see Abandon).
  if (!ec) socket_.non_blocking(true, ec);
  if (ec)
    co_return Status::Error(ec.value(),
                            "cannot set up the socket of " + who_ + ": " + ec.message());
  ArmWatchdog();
  Status s = co_await Exchange();
  DisarmWatchdog();
  if (!s.ok() && timed_out_) {
    s = Status::Invalid("the handshake with " + who_ + " did not finish within " +
                        std::to_string(config_.connect_timeout.count()) + " ms (timeout)");
    spdlog::info("{}: {}", config_.resource, s.message());
  }
  co_return s;
}

// Hello, Auth, State: each is sent, then the peer's is read and checked.
asio::awaitable<Status> PeerSession::Exchange() {
  Result<peer::Hello> theirs = co_await ExchangeHello();
  if (!theirs.ok()) co_return theirs.status();
  if (Status s = co_await ExchangeAuth(theirs.value()); !s.ok()) co_return s;
  co_return co_await ExchangeState();
}

asio::awaitable<Result<peer::Hello>> PeerSession::ExchangeHello() {
  mine_ = peer::HelloExpectations{.resource = config_.resource,
                                  .node = config_.node,
                                  .peer_node = config_.peer_node,
                                  .protocol = config_.protocol,
                                  .data_bytes = config_.data_bytes};
  if (Status s = peer::RandomBytes(mine_.nonce); !s.ok()) co_return s;
  const std::vector<uint8_t> hello = mine_.ToHello().Encode();
  if (Status s = co_await WriteAll(hello); !s.ok()) co_return s;
  std::vector<uint8_t> payload;
  if (Status s = co_await ReadHandshakeFrame(peer::MessageType::kHello, payload); !s.ok()) {
    co_return s;
  }
  Result<peer::Hello> theirs = peer::Hello::Decode(payload);
  if (!theirs.ok()) co_return co_await RefuseViolation(theirs.status().message());
  if (std::optional<peer::Error> refusal = peer::FindHelloRefusal(theirs.value(), mine_)) {
    const std::string text = "refused " + who_ + ": " + refusal->text;
    co_return co_await Refuse(*refusal, text);
  }
  const Result<peer::HelloAgreement> agreed = peer::NegotiateHello(theirs.value(), mine_);
  version_ = agreed->version;
  features_ = agreed->features;
  who_ = core_->peer_name + " at " + address_;
  co_return theirs;
}

asio::awaitable<Status> PeerSession::ExchangeAuth(const peer::Hello& theirs) {
  Result<peer::AuthResponse> ours = peer::ComputeAuthResponse(
      config_.secret, peer::OurAnswerTranscript(core_->side, mine_, theirs));
  const peer::Error refusal = peer::AuthRefusal(mine_);
  if (!ours.ok()) co_return co_await Refuse(refusal, ours.status().message());
  const auto answer = peer::Auth{ours.value()}.Encode();
  if (Status s = co_await WriteAll(answer); !s.ok()) co_return s;
  std::vector<uint8_t> payload;
  if (Status s = co_await ReadHandshakeFrame(peer::MessageType::kAuth, payload); !s.ok()) {
    co_return s;
  }
  Result<peer::Auth> auth = peer::Auth::Decode(payload);
  if (!auth.ok()) co_return co_await RefuseViolation(auth.status().message());
  if (!peer::VerifyAuthResponse(config_.secret,
                                peer::TheirAnswerTranscript(core_->side, mine_, theirs),
                                auth->response)) {
    const std::string text = core_->peer_name + " failed authentication on resource '" +
                             config_.resource +
                             "': wrong or missing shared secret (net.secret); it must be the "
                             "same in the config of both nodes";
    co_return co_await Refuse(refusal, text);
  }
  co_return Status::Ok();
}

asio::awaitable<Status> PeerSession::ExchangeState() {
  if (closed_) co_return Status::Invalid(reason_);
  const peer::State state = ToWireState(core_->handler.HandshakeState());
  sent_state_ = FromWireState(state);
  if (Status s = co_await WriteAll(state.Encode()); !s.ok()) co_return s;
  std::vector<uint8_t> payload;
  if (Status s = co_await ReadHandshakeFrame(peer::MessageType::kState, payload); !s.ok()) {
    co_return s;
  }
  Result<peer::State> theirs = peer::State::Decode(payload);
  if (!theirs.ok()) co_return co_await RefuseViolation(theirs.status().message());
  peer_state_ = FromWireState(theirs.value());
  co_return Status::Ok();
}

// One whole frame of type `expected` into `payload`. An Error from the peer is its refusal: it
// is logged and ends the handshake. Anything else is a protocol violation.
asio::awaitable<Status> PeerSession::ReadHandshakeFrame(peer::MessageType expected,
                                                        std::vector<uint8_t>& payload) {
  std::array<uint8_t, peer::kFrameHeaderBytes> header_bytes{};
  if (asio::error_code ec = co_await ReadExactly(header_bytes.data(), header_bytes.size())) {
    co_return LostDuringHandshake(ec);
  }
  Result<peer::FrameHeader> header = peer::DecodeFrameHeader(header_bytes);
  std::string violation;
  if (!header.ok()) {
    violation = header.status().message();
  } else if (header->type != expected && header->type != peer::MessageType::kError) {
    violation = "peer sent " + std::string(peer::MessageTypeName(header->type)) + " where " +
                std::string(peer::MessageTypeName(expected)) + " was expected";
  }
  if (violation.empty()) {
    // Handshake payloads are small: the type's bounds (checked above) say at most 518 bytes.
    payload.resize(header->payload_bytes);
    if (asio::error_code ec = co_await ReadExactly(payload.data(), payload.size())) {
      co_return LostDuringHandshake(ec);
    }
    Status crc = peer::CheckPayloadCrc(header.value(), Crc32c(payload));
    if (!crc.ok()) violation = crc.message();
  }
  if (!violation.empty()) co_return co_await RefuseViolation(violation);
  if (header->type != peer::MessageType::kError) co_return Status::Ok();
  Result<peer::Error> error = peer::Error::Decode(payload);
  if (!error.ok()) co_return co_await RefuseViolation(error.status().message());
  const std::string text = peer::DescribeRefusal(error.value(), config_.peer_node);
  spdlog::error("{}: {}", config_.resource, text);
  co_return Status::Invalid(text);
}

asio::awaitable<Status> PeerSession::WriteAll(std::span<const uint8_t> bytes) {
  asio::error_code ec;
  writing_ = true;
  co_await asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()),
                             redirect_error(use_awaitable, ec));
  writing_ = false;
  if (ec) co_return LostDuringHandshake(ec);
  co_return Status::Ok();
}

// Logs the refusal, tells the peer (bounded by the watchdog) and fails the handshake.
// By value: a coroutine's reference parameters would outlive what they refer to.
asio::awaitable<Status> PeerSession::Refuse(peer::Error error, std::string log_text) {
  spdlog::error("{}: {}", config_.resource, log_text);
  if (!closed_) {
    const std::vector<uint8_t> frame = error.Encode();
    (void)co_await WriteAll(frame);
  }
  co_return Status::Invalid(log_text);
}

// Not logged after a timeout: Handshake() logs that with a better message.
asio::awaitable<Status> PeerSession::RefuseViolation(std::string what) {
  const peer::Error error{peer::ErrorCode::kProtocolViolation, what};
  const std::string text = "protocol violation by " + who_ + " during the handshake: " + what;
  co_return co_await Refuse(error, text);
}

Status PeerSession::LostDuringHandshake(const asio::error_code& ec) {
  if (closed_) return Status::Invalid(reason_);
  const std::string what = "connection lost during the handshake with " + who_ + ": " +
                           (ec == asio::error::eof ? "closed by the other end" : ec.message());
  if (!timed_out_) spdlog::info("{}: {}", config_.resource, what);
  return Status::Error(ec == asio::error::eof ? -1 : ec.value(), what);
}

}  // namespace repld::link
