// The receiving side of a peer connection after the handshake: frames are checked in the order
// docs/peer-protocol.md gives and handed to the handler. Data payloads are read straight into
// receive-pool chunks; when the pool is empty the reader stops reading, and TCP pushes back on
// the peer's writer.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>

#include "daemon/peer_session.h"
#include "replication/crc32c.h"

namespace repld::link {

using asio::redirect_error;
using asio::use_awaitable;

asio::awaitable<void> PeerSession::Reader(std::shared_ptr<PeerSession> /*self*/) {
  std::array<uint8_t, peer::kFrameHeaderBytes> header_bytes{};
  while (!closed_) {
    asio::error_code ec = co_await ReadExactly(header_bytes.data(), header_bytes.size());
    if (closed_) break;
    if (ec) {
      Close(LostReason(ec));
      break;
    }
    Result<peer::FrameHeader> header = peer::DecodeFrameHeader(header_bytes);
    if (!header.ok()) {
      Violation(header.status().message());
      break;
    }
    if (header->type == peer::MessageType::kData) {
      co_await ReadData(header.value());
      continue;
    }
    // Every other type's bounds (checked by DecodeFrameHeader) fit: the largest is OutOfSync.
    REPLD_CHECK(header->payload_bytes <= small_payload_.size());
    const std::span<uint8_t> payload(small_payload_.data(), header->payload_bytes);
    ec = co_await ReadExactly(payload.data(), payload.size());
    if (closed_) break;
    if (ec) {
      Close(LostReason(ec));
      break;
    }
    if (Status s = peer::CheckPayloadCrc(header.value(), Crc32c(payload)); !s.ok()) {
      Violation(s.message());
      break;
    }
    NoteReceived();
    Dispatch(header->type, payload);
  }
  ReleaseChunks();
}

asio::awaitable<void> PeerSession::ReadData(const peer::FrameHeader& header) {
  std::array<uint8_t, peer::Data::kHeadBytes> head_bytes{};
  asio::error_code ec = co_await ReadExactly(head_bytes.data(), head_bytes.size());
  if (closed_) co_return;
  if (ec) co_return Close(LostReason(ec));
  Result<peer::Data> head = peer::Data::DecodeHead(head_bytes, header.payload_bytes);
  if (!head.ok()) co_return Violation(head.status().message());
  uint32_t crc = Crc32c(head_bytes);
  const size_t count = head->HasPayloadData() ? BufferPool::ChunksFor(head->length_bytes) : 0;
  if (count > chunks_.size()) {
    co_return Violation("write " + std::to_string(head->seq) + " of " +
                        std::to_string(head->length_bytes) + " bytes needs " +
                        std::to_string(count) + " receive buffers of 128 KiB, more than the " +
                        std::to_string(chunks_.size()) + " of the whole receive pool");
  }
  if (count > 0) {
    if (!co_await AcquireChunks(count)) co_return;
    pieces_.clear();
    uint64_t left_bytes = head->length_bytes;
    for (size_t i = 0; i < count; ++i) {
      const size_t n = std::min<uint64_t>(left_bytes, BufferPool::kChunkBytes);
      pieces_.emplace_back(chunks_[i], n);
      left_bytes -= n;
    }
    ec = co_await ReadPieces();
    if (closed_ || ec) {
      ReleaseChunks();
      if (!closed_) Close(LostReason(ec));
      co_return;
    }
    left_bytes = head->length_bytes;
    for (size_t i = 0; i < count; ++i) {
      const size_t n = std::min<uint64_t>(left_bytes, BufferPool::kChunkBytes);
      crc = Crc32c(std::span<const uint8_t>(chunks_[i], n), crc);
      left_bytes -= n;
    }
  }
  if (Status s = peer::CheckPayloadCrc(header, crc); !s.ok()) {
    ReleaseChunks();
    co_return Violation(s.message());
  }
  NoteReceived();
  chunks_held_ = 0;  // the handler's now
  core_->handler.OnData(head.value(), std::span<uint8_t* const>(chunks_.data(), count));
}

asio::awaitable<bool> PeerSession::AcquireChunks(size_t count) {
  const std::span<uint8_t*> out(chunks_.data(), count);
  // The pool may be gone once the session is closed by Stop(): check before touching it.
  while (!closed_) {
    if (core_->pool.TryAcquire(out)) {
      chunks_held_ = count;
      co_return true;
    }
    waiting_for_pool_ = true;
    co_await core_->pool.WaitForFree();
    waiting_for_pool_ = false;
  }
  co_return false;
}

void PeerSession::ReleaseChunks() {
  if (chunks_held_ == 0) return;
  core_->pool.Release(std::span<uint8_t* const>(chunks_.data(), chunks_held_));
  chunks_held_ = 0;
}

void PeerSession::NoteReceived() {
  ++frames_received_;
  misses_ = 0;
}

template <typename M, typename F>
void PeerSession::Deliver(std::span<const uint8_t> payload, F&& deliver) {
  Result<M> message = M::Decode(payload);
  if (!message.ok()) return Violation(message.status().message());
  deliver(message.value());
}

void PeerSession::Dispatch(peer::MessageType type, std::span<const uint8_t> payload) {
  PeerLinkHandler& h = core_->handler;
  using peer::MessageType;
  switch (type) {
    case MessageType::kRecvAck:
      return Deliver<peer::RecvAck>(payload, [&](const auto& m) { h.OnRecvAck(m.seq); });
    case MessageType::kWriteAck:
      return Deliver<peer::WriteAck>(payload, [&](const auto& m) { h.OnWriteAck(m.seq, m.error); });
    case MessageType::kFlush:
      return Deliver<peer::Flush>(payload, [&](const auto& m) { h.OnFlush(m.seq); });
    case MessageType::kFlushAck:
      return Deliver<peer::FlushAck>(payload, [&](const auto& m) { h.OnFlushAck(m.seq, m.error); });
    case MessageType::kState:
      return Deliver<peer::State>(payload, [&](const auto& m) { h.OnState(FromWireState(m)); });
    case MessageType::kOutOfSync:
      return Deliver<peer::OutOfSync>(payload, [&](const auto& m) { h.OnOutOfSync(m); });
    case MessageType::kCsums:
      return Deliver<peer::Csums>(payload, [&](const auto& m) { h.OnCsums(m); });
    case MessageType::kCsumReply:
      return Deliver<peer::CsumReply>(payload, [&](const auto& m) { h.OnCsumReply(m); });
    case MessageType::kReadRequest:
      return Deliver<peer::ReadRequest>(payload, [&](const auto& m) { h.OnReadRequest(m); });
    case MessageType::kReadError:
      return Deliver<peer::ReadError>(payload, [&](const auto& m) { h.OnReadError(m); });
    case MessageType::kPromoteRequest:
      return Deliver<peer::PromoteRequest>(payload,
                                           [&](const auto& m) { h.OnPromoteRequest(m.token); });
    case MessageType::kPromoteReply:
      return Deliver<peer::PromoteReply>(payload, [&](const auto& m) { h.OnPromoteReply(m); });
    case MessageType::kPing:
      return Deliver<peer::Ping>(
          payload, [&](const auto& m) { SendSmall(peer::PingAck{m.token}.Encode()); });
    case MessageType::kPingAck:
      // NoteReceived did the keepalive's part; the answer to the last Ping times the link.
      return Deliver<peer::PingAck>(payload, [&](const auto& m) {
        if (m.token == ping_token_) {
          rtt_ = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::steady_clock::now() - ping_sent_);
        }
      });
    case MessageType::kError:
      return Deliver<peer::Error>(payload, [&](const peer::Error& e) {
        const std::string text = core_->peer_name + " closed the connection (" +
                                 std::string(peer::ErrorCodeName(e.code)) + "): " + e.text;
        if (e.code == peer::ErrorCode::kShutdown) {
          spdlog::info("{}: {}", config_.resource, text);
        } else {
          spdlog::error("{}: {}", config_.resource, text);
        }
        Close(text);
      });
    case MessageType::kQuorumPing:
    case MessageType::kQuorumPong:
    case MessageType::kVoteRequest:
    case MessageType::kVoteReply:
    case MessageType::kOutdateRequest:
    case MessageType::kOutdateReply:
      // Not agreed: this build does not offer peer::kFeatureQuorum yet.
      return Violation("peer sent " + std::string(peer::MessageTypeName(type)) +
                       " without the quorum feature");
    case MessageType::kHello:
    case MessageType::kAuth:
    case MessageType::kData:  // Reader() reads Data itself
      break;
  }
  Violation("peer sent " + std::string(peer::MessageTypeName(type)) + " after the handshake");
}

void PeerSession::Violation(const std::string& what) {
  const std::string reason = "protocol violation by " + who_ + ": " + what;
  spdlog::error("{}: {}; closing the connection", config_.resource, reason);
  Close(reason, peer::Error{peer::ErrorCode::kProtocolViolation, what});
}

// `length_bytes` into `dest`, through the read-ahead buffer.
asio::awaitable<asio::error_code> PeerSession::ReadExactly(uint8_t* dest, size_t length_bytes) {
  asio::error_code ec;
  while (length_bytes > 0) {
    if (read_begin_ == read_end_) {
      read_begin_ = read_end_ = 0;
      read_end_ = co_await socket_.async_read_some(asio::buffer(read_buffer_),
                                                   redirect_error(use_awaitable, ec));
      if (ec) co_return ec;
    }
    const size_t n = std::min(length_bytes, read_end_ - read_begin_);
    std::memcpy(dest, read_buffer_.data() + read_begin_, n);
    read_begin_ += n;
    dest += n;
    length_bytes -= n;
  }
  co_return ec;
}

// Fills pieces_: what the read-ahead buffer already holds is copied, the rest is read straight
// into the pieces with one gathered read.
asio::awaitable<asio::error_code> PeerSession::ReadPieces() {
  size_t first = 0;
  while (first < pieces_.size() && read_begin_ < read_end_) {
    const size_t n = std::min(read_end_ - read_begin_, pieces_[first].size());
    std::memcpy(pieces_[first].data(), read_buffer_.data() + read_begin_, n);
    read_begin_ += n;
    pieces_[first] += n;
    if (pieces_[first].size() == 0) ++first;
  }
  asio::error_code ec;
  if (first == pieces_.size()) co_return ec;
  // One read per wake-up, each asking to be woken only when the rest (up to kLowWaterMaxBytes)
  // is there: a large payload then takes a few completions instead of one per segment burst.
  std::span<asio::mutable_buffer> rest(pieces_.data() + first, pieces_.size() - first);
  while (!rest.empty()) {
    size_t left_bytes = 0;
    for (const asio::mutable_buffer& piece : rest) left_bytes += piece.size();
    // Small rests are not worth two setsockopt calls: they arrive in one burst anyway.
    SetLowWater(left_bytes >= kLowWaterMinBytes ? left_bytes : 1);
    size_t n = co_await socket_.async_read_some(std::span<const asio::mutable_buffer>(rest),
                                                redirect_error(use_awaitable, ec));
    if (ec) break;
    while (n > 0) {
      const size_t used = std::min(n, rest.front().size());
      rest.front() += used;
      n -= used;
      if (rest.front().size() == 0) rest = rest.subspan(1);
    }
  }
  SetLowWater(1);
  co_return ec;
}

// SO_RCVLOWAT: the kernel wakes the reader only once `bytes` (at most kLowWaterMaxBytes) can be
// read. It caps the value at half the receive buffer, so a read never waits for more than fits.
void PeerSession::SetLowWater(size_t bytes) {
  const int value = static_cast<int>(std::min(bytes, kLowWaterMaxBytes));
  if (value == low_water_ || !socket_.is_open()) return;
  low_water_ = value;
  (void)!::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &value, sizeof value);
}

}  // namespace repld::link
