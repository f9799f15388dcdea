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
#include "replication/peer_proto.h"
#include "replication/replica.h"

namespace repld {

struct PeerLinkConfig {
  std::string resource;
  std::string node;          // this node
  std::string peer_node;     // the other node
  std::string address;       // HOST:PORT this node listens on (used when it is the acceptor)
  std::string peer_address;  // HOST:PORT of the peer (used when this node connects)
  std::string secret;
  Protocol protocol = Protocol::kC;
  uint64_t data_bytes = 0;
  std::chrono::milliseconds ping_interval{10'000};
  std::chrono::milliseconds ping_timeout{500};
  uint32_t ko_count = 7;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds reconnect_max{10'000};
};

// What the link tells its owner. All calls come on the io_context's thread. Between OnDown and
// the next OnUp nothing else is delivered (frames of a dead connection are dropped).
class PeerLinkHandler {
 public:
  virtual ~PeerLinkHandler() = default;
  // Our State for the handshake (role, disk, generation ids, sizes).
  virtual PeerState HandshakeState() = 0;
  // The link is trying to reach the peer (after start, and after every drop).
  virtual void OnConnecting() = 0;
  // `features`: the peer::kFeature* bits both sides agreed on in the Hello exchange; `sent`:
  // the State this node sent in the handshake, as the peer decoded it (the peer decides from
  // it, so this node does too).
  virtual void OnUp(const PeerState& peer, uint64_t features, const PeerState& sent) = 0;
  virtual void OnDown(const std::string& reason) = 0;
  // A Data frame whose payload CRC checked (a write, a resync block, or a read reply). `chunks`
  // hold the data (for a plain write: the length_bytes rounded up to whole chunks; empty for
  // ZEROES/TRIM); they now belong to the handler, which gives them back to the receive pool.
  virtual void OnData(const peer::Data& head, std::span<uint8_t* const> chunks) = 0;
  virtual void OnRecvAck(uint64_t seq) = 0;
  virtual void OnWriteAck(uint64_t seq, int error) = 0;
  virtual void OnFlush(uint64_t seq) = 0;
  virtual void OnFlushAck(uint64_t seq, int error) = 0;
  virtual void OnState(const PeerState& peer) = 0;
  virtual void OnOutOfSync(const peer::OutOfSync& message) = 0;
  virtual void OnCsums(const peer::Csums& message) = 0;
  virtual void OnCsumReply(const peer::CsumReply& message) = 0;
  virtual void OnReadRequest(const peer::ReadRequest& message) = 0;
  virtual void OnReadError(const peer::ReadError& message) = 0;
  virtual void OnPromoteRequest(uint64_t token) = 0;
  virtual void OnPromoteReply(const peer::PromoteReply& message) = 0;
  // A frame queued with SendData left (sent = true: handed to the socket) or will never leave
  // (sent = false: the connection closed first). Comes exactly once per SendData that returned
  // true, and only then may the handler reuse the buffers it passed.
  virtual void OnSendDone(uint64_t cookie, bool sent) = 0;
};

class PeerLink {
 public:
  static constexpr size_t kSendBatchMax = 64;

  PeerLink(asio::io_context& io, PeerLinkConfig config, PeerLinkHandler& handler,
           BufferPool& receive_pool);
  // Like Stop(), but silent: no handler call (the handler may be half destroyed).
  ~PeerLink();
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Starts listening (acceptor) or connecting (connector). Fails if the listen address cannot
  // be bound (the message names it).
  [[nodiscard]] Status Start();
  // Closes everything; OnDown comes if a peer was up. Pending sends get OnSendDone(false).
  // All of it before Stop() returns; no handler call comes after.
  void Stop();
  // Closes the current connection (sending an Error with `reason` first, best effort) and, if
  // `reconnect`, tries again after the backoff; otherwise stays down until Start() again.
  // up() is false at once; OnSendDone(false) and OnDown(reason) come from the loop, later.
  void Drop(const std::string& reason, bool reconnect);

  // replctl adjust: takes the secret and the keepalive and reconnect settings of `tunables`
  // (the rest stays). A session reads them when it uses them: the keepalive from its next ping,
  // connect_timeout and the secret from the next handshake, reconnect_max from the next retry.
  void Retune(const PeerLinkConfig& tunables);

  bool up() const;
  // The round trip of the last answered keepalive ping; none while no peer is up or before the
  // first answer.
  std::optional<std::chrono::microseconds> peer_rtt() const;
  // Why the last connection attempt or connection ended; empty if none did.
  const std::string& last_error() const;

  // Queue a Data frame with `data` (nullptr-free iovecs, total head.length_bytes; empty for
  // ZEROES/TRIM). Returns false if no peer is up (nothing queued, no OnSendDone).
  bool SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie);
  // Small frames; dropped silently when no peer is up.
  void SendRecvAck(uint64_t seq);
  void SendWriteAck(uint64_t seq, int error);
  void SendFlush(uint64_t seq);
  void SendFlushAck(uint64_t seq, int error);
  void SendState(const PeerState& state);
  // One frame of the sync target's bitmap (runs.size() <= peer::kOutOfSyncRunsMax).
  void SendOutOfSync(std::span<const OutOfSyncRun> runs, bool last);
  void SendCsums(const peer::Csums& message);
  void SendCsumReply(uint64_t seq, std::span<const OutOfSyncRun> differing, int error);
  // Fast failback: ask the peer for data; its answer is a Data frame with kDataFlagReadReply
  // (SendData, on the peer) or a ReadError.
  void SendReadRequest(uint64_t seq, uint64_t offset_bytes, uint32_t length_bytes);
  void SendReadError(uint64_t seq, int error);
  void SendPromoteRequest(uint64_t token);
  void SendPromoteReply(const peer::PromoteReply& message);

 private:
  void SendSmall(std::span<const uint8_t> frame);

  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with the coroutines, which may outlive a Stop()
};

}  // namespace repld
