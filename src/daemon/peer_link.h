// The TCP link to the peer node: connection, handshake, framing, keepalive and reconnect. It
// carries the peer protocol (src/replication/peer_proto.h, docs/peer-protocol.md) and knows
// nothing of what the frames mean: the handler (the ReplicatedDevice) does.
//
// Who connects: the node whose name sorts first connects to the other's address; the other
// listens on its own. So there is never more than one connection attempt in each direction to
// reconcile. The acceptor takes a new authenticated connection over an old one (the peer
// restarted before the old socket timed out).
//
// Handshake, on each connection, both sides at once: Hello -> check (FindHelloRefusal; a
// refusal is sent as an Error and logged on both sides) -> Auth (our answer to their nonce) ->
// verify theirs (a wrong secret: Error kAuthFailed, closed before any data moved) -> State
// (HandshakeState()) -> OnUp(their state). After OnUp, messages flow until OnDown.
//
// Keepalive: a Ping every ping_interval; an answer (a PingAck, or any frame at all) must come
// within ping_timeout. After max(ko_count, 1) missed answers in a row the peer is dropped.
// Reconnect: the first retry after 100 ms, doubling up to reconnect_max; reset by a
// successful handshake. Each connection attempt is bounded by connect_timeout, and so is the
// handshake.
//
// Bounds: received Data payloads go into chunks of the receive BufferPool, and the reader
// waits for free chunks (backpressure through TCP to the peer's writer). The send queue holds
// what the handler queued: Data frames are bounded by the replica's max_buffers, acks by the
// frames received; the writer sends them in gathered batches of up to kSendBatchMax frames.
//
// Everything runs on the io_context's one thread; handler calls are never reentrant from a
// Send*() or Drop() call (they come from the link's own coroutines); Stop() is the exception.
//
// When a connection ends: the write in progress completes first, then OnSendDone(false) for
// every Data frame that did not leave, then OnDown, then OnConnecting if the link goes on
// trying. The handler sees its buffers free before it re-plans on OnDown.
#pragma once

#include <sys/uio.h>

#include <asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "blockdev/buffer_pool.h"
#include "daemon/peer_port.h"
#include "replication/peer_proto.h"
#include "replication/replica.h"

namespace repld {

class PeerLink : public PeerPort {
 public:
  static constexpr size_t kSendBatchMax = 64;

  PeerLink(asio::io_context& io, PeerLinkConfig config, PeerLinkHandler& handler,
           BufferPool& receive_pool);
  // Like Stop(), but silent: no handler call (the handler may be half destroyed).
  ~PeerLink() override;
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Starts listening (acceptor) or connecting (connector). Fails if the listen address cannot
  // be bound (the message names it).
  [[nodiscard]] Status Start() override;
  // The rest of PeerPort (peer_port.h). Drop sends an Error with the reason first, best effort.
  // Retune: a session reads the new values when it uses them: the keepalive from its next ping,
  // connect_timeout and the secret from the next handshake, reconnect_max from the next retry.
  void Stop() override;
  void Drop(const std::string& reason, bool reconnect) override;
  void Retune(const PeerLinkConfig& tunables) override;
  bool up() const override;
  std::optional<std::chrono::microseconds> peer_rtt() const override;
  const std::string& last_error() const override;
  bool SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie) override;
  void SendRecvAck(uint64_t seq) override;
  void SendWriteAck(uint64_t seq, int error) override;
  void SendFlush(uint64_t seq) override;
  void SendFlushAck(uint64_t seq, int error) override;
  void SendState(const PeerState& state) override;
  void SendOutOfSync(std::span<const OutOfSyncRun> runs, bool last) override;
  void SendCsums(const peer::Csums& message) override;
  void SendCsumReply(uint64_t seq, std::span<const OutOfSyncRun> differing, int error) override;
  void SendReadRequest(uint64_t seq, uint64_t offset_bytes, uint32_t length_bytes) override;
  void SendReadError(uint64_t seq, int error) override;
  void SendPromoteRequest(uint64_t token) override;
  void SendPromoteReply(const peer::PromoteReply& message) override;

 private:
  void SendSmall(std::span<const uint8_t> frame);

  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with the coroutines, which may outlive a Stop()
};

}  // namespace repld
