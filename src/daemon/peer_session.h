// One TCP connection of the peer link (daemon/peer_link.h), from its handshake to its end, and
// the state the link shares with its connections. Internal to the link: PeerLink is the API.
//
// A session's life: [Connect (connector only)] -> Handshake -> Promote (becomes the link's
// current connection, replacing an older one) -> OnUp -> reader, writer and keepalive run until
// Close() -> the writer's last write completes -> OnSendDone(false) for every Data frame that did
// not leave -> OnDown. Stop() short-cuts the end with Abandon(), which reports the same things at
// once and makes the session silent for good.
#pragma once

#include <sys/uio.h>

#include <array>
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "blockdev/async_signal.h"
#include "blockdev/buffer_pool.h"
#include "daemon/peer_link.h"
#include "daemon/peer_send_queue.h"
#include "replication/peer_auth.h"
#include "replication/peer_proto.h"

namespace repld::link {

class PeerSession;

// The first retry waits this long; each failure doubles it up to reconnect_max.
inline constexpr std::chrono::milliseconds kReconnectFirst{100};
// Handshakes the acceptor runs at once; more connections are closed at once. A stranger
// holding a few open costs nothing, since each ends after connect_timeout.
inline constexpr size_t kHandshakesMax = 4;
// The send queue's limit. The handler bounds its Data (max_buffers) and the acks it sends (one
// per frame received), so this is only reached when the peer stops reading: the connection is
// dropped rather than letting the queue grow without end.
inline constexpr size_t kSendQueueFramesMax = 64 * 1024;
// The most a Data read waits for before it wakes up (SO_RCVLOWAT).
inline constexpr size_t kLowWaterMaxBytes = 512 * 1024;
// Below this the reader does not set SO_RCVLOWAT (no syscalls per small frame).
inline constexpr size_t kLowWaterMinBytes = 64 * 1024;

// The wire State <-> the core's PeerState (the crashed-primary flag has no PeerState field).
peer::State ToWireState(const PeerState& state);
PeerState FromWireState(const peer::State& state);

// What the link and its sessions share; lives as long as the last coroutine holding it.
struct LinkCore : std::enable_shared_from_this<LinkCore> {
  LinkCore(asio::io_context& io, PeerLinkConfig config, PeerLinkHandler& handler, BufferPool& pool);

  // A session for `socket`, tracked so Stop() and Drop() reach it. `address`: the other end's
  // HOST:PORT; `who`: how messages name it until its Hello names the peer.
  std::shared_ptr<PeerSession> NewSession(asio::ip::tcp::socket socket, std::string address,
                                          std::string who);
  bool Active(uint64_t r) const { return running && run == r; }
  size_t HandshakesInProgress() const;

  asio::io_context& io;
  PeerLinkConfig config;     // PeerLink::Retune changes its tunable fields, nothing else does
  PeerLinkHandler& handler;  // never called once a session is abandoned or the run ended
  BufferPool& pool;
  const peer::HandshakeSide side;  // the node whose name sorts first connects
  const std::string peer_name;     // "peer 'beta'", for messages

  bool running = false;  // between Start() and Stop() / Drop(reconnect = false)
  uint64_t run = 0;      // bumped by each of those; loops of an older run end
  std::string last_error;
  std::string last_connect_failure;      // logged at info once, then at debug while it repeats
  std::shared_ptr<PeerSession> current;  // up, or about to go up
  // Sessions that were up, were closed and have not yet called OnDown. A new session waits for
  // 0 before OnUp, so OnDown of the old connection always comes first.
  size_t ending = 0;
  AsyncSignal ended;
  std::vector<std::weak_ptr<PeerSession>> sessions;  // at most kHandshakesMax + 2 live ones
};

class PeerSession : public std::enable_shared_from_this<PeerSession> {
 public:
  PeerSession(std::shared_ptr<LinkCore> core, asio::ip::tcp::socket socket, std::string address,
              std::string who);
  PeerSession(const PeerSession&) = delete;
  PeerSession& operator=(const PeerSession&) = delete;

  // Connector only: connects within connect_timeout.
  asio::awaitable<Status> Connect(const asio::ip::tcp::endpoint& endpoint);
  // Handshake, then, if it authenticated, the connection's whole life; returns after OnDown
  // (true) or when it never went up (false; the reason is in core->last_error).
  asio::awaitable<bool> Run();

  bool up() const { return up_reported_ && !closed_; }
  std::optional<std::chrono::microseconds> rtt() const { return rtt_; }
  bool handshaking() const { return !up_reported_ && !closed_; }
  // Ends the connection; the first reason stays. `tell`: an Error for the peer, sent only if it
  // can go at once (no write in progress), i.e. best effort.
  void Close(const std::string& reason, std::optional<peer::Error> tell = std::nullopt);
  // For Stop(): Close, then report now what Run would have reported (OnSendDone(false) for
  // every queued Data frame and OnDown, if `notify` and the session was up); silent afterwards.
  void Abandon(bool notify);

  bool SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie);
  void SendSmall(std::span<const uint8_t> frame);
  void SendLarge(std::vector<uint8_t> frame);  // a whole frame too large for SendSmall

 private:
  using Frame = PeerSendQueue::Frame;

  // peer_handshake.cc
  asio::awaitable<Status> Handshake();
  asio::awaitable<Status> Exchange();
  asio::awaitable<Result<peer::Hello>> ExchangeHello();
  asio::awaitable<Status> ExchangeAuth(const peer::Hello& theirs);
  asio::awaitable<Status> ExchangeState();
  asio::awaitable<Status> ReadHandshakeFrame(peer::MessageType expected,
                                             std::vector<uint8_t>& payload);
  asio::awaitable<Status> WriteAll(std::span<const uint8_t> bytes);
  asio::awaitable<Status> Refuse(peer::Error error, std::string log_text);
  asio::awaitable<Status> RefuseViolation(std::string what);
  Status LostDuringHandshake(const asio::error_code& ec);
  void ArmWatchdog();
  void DisarmWatchdog();

  // peer_session.cc
  asio::awaitable<bool> Promote();
  void GoUp();
  void Finish();
  bool HasRoom();
  asio::awaitable<void> Writer();
  void ReportBatch();
  void ReportUnsent();
  // Spawned: `self` keeps the session alive until they have started and finished.
  asio::awaitable<void> Reader(std::shared_ptr<PeerSession> self);
  asio::awaitable<void> ReadData(const peer::FrameHeader& header);
  asio::awaitable<bool> AcquireChunks(size_t count);
  void ReleaseChunks();
  void NoteReceived();
  void Dispatch(peer::MessageType type, std::span<const uint8_t> payload);
  template <typename M, typename F>
  void Deliver(std::span<const uint8_t> payload, F&& deliver);
  void Violation(const std::string& what);
  asio::awaitable<void> Keepalive(std::shared_ptr<PeerSession> self);
  asio::awaitable<bool> Sleep(std::chrono::milliseconds duration);
  asio::awaitable<asio::error_code> ReadExactly(uint8_t* dest, size_t length_bytes);
  asio::awaitable<asio::error_code> ReadPieces();
  void SetLowWater(size_t bytes);
  std::string LostReason(const asio::error_code& ec) const;

  const std::shared_ptr<LinkCore> core_;
  const PeerLinkConfig& config_;
  const uint64_t run_;  // the link's run this session belongs to
  asio::ip::tcp::socket socket_;
  const std::string address_;  // the other end, "10.0.0.2:41234"
  std::string who_;  // "the connection from 10.0.0.2:41234", then "peer 'beta' at 10.0.0.2:41234"

  // Handshake.
  asio::steady_timer watchdog_;
  uint64_t watchdog_armings_ = 0;
  uint64_t watchdog_armed_ = 0;  // which arming may still fire; 0: none
  bool timed_out_ = false;
  peer::HelloExpectations mine_;
  uint16_t version_ = 0;
  uint64_t features_ = 0;  // agreed in the Hello exchange
  PeerState peer_state_;
  PeerState sent_state_;  // ours, as the peer decoded it

  // Life.
  bool closed_ = false;
  bool abandoned_ = false;
  bool up_reported_ = false;
  bool down_reported_ = false;
  std::string reason_;

  // Sending: the queue, and the batch of the write in progress (fixed storage, so the gathered
  // buffers stay valid while new frames are queued).
  PeerSendQueue queue_;
  AsyncSignal send_ready_;
  std::array<Frame, PeerLink::kSendBatchMax> batch_;
  size_t batch_count_ = 0;
  size_t batch_reported_ = 0;
  bool writing_ = false;
  uint64_t batch_written_bytes_ = 0;  // by the batch's write, once it completed
  std::vector<asio::const_buffer> gather_;

  // Receiving: a read-ahead buffer for headers and small frames; Data goes into pool chunks.
  std::vector<uint8_t> read_buffer_;
  size_t read_begin_ = 0;
  size_t read_end_ = 0;
  // Every type but Data fits: the largest is OutOfSync (64 KiB).
  std::vector<uint8_t> small_payload_ =
      std::vector<uint8_t>(std::max({peer::Error::kBytesMax, peer::OutOfSync::kBytesMax,
                                     peer::Csums::kBytesMax, peer::CsumReply::kBytesMax}));
  std::vector<uint8_t*> chunks_;  // sized for the largest Data the pool can take
  size_t chunks_held_ = 0;
  std::vector<asio::mutable_buffer> pieces_;
  bool waiting_for_pool_ = false;
  int low_water_ = 1;  // SO_RCVLOWAT

  // Keepalive.
  asio::steady_timer keepalive_timer_;
  uint64_t frames_received_ = 0;
  uint32_t misses_ = 0;
  // The last Ping out and when; its PingAck measures the round trip (through both send queues
  // and readers: what replication sees, not TCP's).
  uint64_t ping_token_ = 0;
  std::chrono::steady_clock::time_point ping_sent_;
  std::optional<std::chrono::microseconds> rtt_;
};

// Shuts a socket down before closing it: a send or receive the kernel still holds ends at once
// (and, the socket being non-blocking, no send reads the caller's buffers after this returns).
void ShutdownAndClose(asio::ip::tcp::socket& socket);
// The completion of a spawned coroutine: logs an exception (none is expected to escape).
void LogIfFailed(std::exception_ptr e, const char* what);

}  // namespace repld::link
