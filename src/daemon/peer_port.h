// What a ReplicatedDevice sees of its peer: PeerPort, through which it sends frames, and
// PeerLinkHandler, through which frames and connection changes reach it. repld's PeerPort is the
// PeerLink (TCP, peer_link.h), whose header says how connections, keepalive and reconnect work;
// tests/sim has one over its simulated network. Either keeps the contract written here.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/status.h"
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

// The sending side. Everything runs on the owner's one thread; handler calls never come from
// inside a call of these (they come from the port's own work), Stop() excepted.
//
// When a connection ends: OnSendDone(false) for every Data frame that did not leave, then
// OnDown, then OnConnecting if the port goes on trying. The handler sees its buffers free
// before it re-plans on OnDown.
class PeerPort {
 public:
  virtual ~PeerPort() = default;

  // Starts listening or connecting. Fails if that cannot start (the message says why).
  [[nodiscard]] virtual Status Start() = 0;
  // Closes everything; OnDown comes if a peer was up. Pending sends get OnSendDone(false).
  // All of it before Stop() returns; no handler call comes after.
  virtual void Stop() = 0;
  // Closes the current connection (the peer hears `reason`, best effort) and, if `reconnect`,
  // tries again after a backoff; otherwise stays down until Start() again. up() is false at
  // once; OnSendDone(false) and OnDown(reason) come later, from the port's own work.
  virtual void Drop(const std::string& reason, bool reconnect) = 0;
  // replctl adjust: the secret and the keepalive and reconnect settings of `tunables`.
  virtual void Retune(const PeerLinkConfig& tunables) = 0;

  virtual bool up() const = 0;
  // The round trip of the last answered keepalive; none while no peer is up or before it.
  virtual std::optional<std::chrono::microseconds> peer_rtt() const = 0;
  // Why the last connection attempt or connection ended; empty if none did.
  virtual const std::string& last_error() const = 0;

  // Queue a Data frame with `data` (total head.length_bytes; empty for ZEROES/TRIM). Returns
  // false if no peer is up (nothing queued, no OnSendDone).
  virtual bool SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie) = 0;
  // Small frames; dropped silently when no peer is up.
  virtual void SendRecvAck(uint64_t seq) = 0;
  virtual void SendWriteAck(uint64_t seq, int error) = 0;
  virtual void SendFlush(uint64_t seq) = 0;
  virtual void SendFlushAck(uint64_t seq, int error) = 0;
  virtual void SendState(const PeerState& state) = 0;
  // One frame of the sync target's bitmap (runs.size() <= peer::kOutOfSyncRunsMax).
  virtual void SendOutOfSync(std::span<const OutOfSyncRun> runs, bool last) = 0;
  virtual void SendCsums(const peer::Csums& message) = 0;
  virtual void SendCsumReply(uint64_t seq, std::span<const OutOfSyncRun> differing,
                             int error) = 0;
  // Fast failback: ask the peer for data; its answer is a Data frame with kDataFlagReadReply
  // (SendData, on the peer) or a ReadError.
  virtual void SendReadRequest(uint64_t seq, uint64_t offset_bytes, uint32_t length_bytes) = 0;
  virtual void SendReadError(uint64_t seq, int error) = 0;
  virtual void SendPromoteRequest(uint64_t token) = 0;
  virtual void SendPromoteReply(const peer::PromoteReply& message) = 0;
};

}  // namespace repld
