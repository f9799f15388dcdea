// A replicated resource's block device on this node: the adapter between the replication core
// (Replica, which does no I/O) and the real parts. Frontend requests come in as DiskIo (it is a
// BlockSink) and become core events; the core's actions become local disk I/O (a DiskSink: the
// BackingStore), frames on a PeerPort (the PeerLink), metadata writes (a MetadataStore: the
// MdDevice) and replies to the frontend.
//
// The parts are seams: tests/sim builds this very adapter on a simulated disk, network and
// metadata, on an io_context it polls, with the timer off (it calls Tick and RateSlice on its
// own clock) and a seeded core (Options).
//
// Buffers. A client write's data stays in the frontend's buffers: the local write and the send
// to the peer both read them, and the reply (which frees them) waits until the link is done
// with them (OnSendDone). A peer's Data arrives in chunks of the receive pool and goes back
// there when applied. Resync reads use buffers of their own, one per block in flight.
//
// Per-request state: one slot per frontend request in flight, preallocated (the frontends bound
// their requests: NBD connections_max x inflight_max). Auxiliary operations (applies, flushes,
// resync reads) come from free lists that grow to the peak the core allows (its windows) and
// are reused.
//
// AL transactions on internal metadata go through the disk ring (FUA); the other metadata
// writes (bitmap pages, superblock, external AL) are synchronous on the loop thread: rare once
// the working set is hot (docs/benchmarks.md measures what they cost).
#pragma once

#include <sys/uio.h>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "blockdev/backing_store.h"
#include "blockdev/block_sink.h"
#include "blockdev/buffer_pool.h"
#include "blockdev/io_memory.h"
#include "blockdev/md_device.h"
#include "common/status.h"
#include "daemon/config.h"
#include "daemon/control_proto.h"
#include "daemon/peer_link.h"
#include "daemon/peer_port.h"
#include "daemon/released_disk.h"
#include "daemon/resync_progress.h"
#include "replication/block_digest.h"
#include "replication/replica.h"

namespace repld {

class ReplicatedDevice : public BlockSink, private PeerLinkHandler {
 public:
  struct Options {
    uint32_t requests_max = 1024;  // frontend requests in flight at most
    uint64_t receive_pool_bytes = 64ULL << 20;
    // The seams (see the top of this file); unset, the real parts.
    std::function<Result<std::unique_ptr<MetadataStore>>(const MdLocation&)> open_metadata;
    std::function<std::unique_ptr<PeerPort>(const PeerLinkConfig&, PeerLinkHandler&, BufferPool&)>
        make_peer_port;
    bool timer = true;        // false: the owner calls RateSlice and Tick
    uint64_t core_seed = 0;   // the core's randomness (tokens, generation ids); 0: random
    uint32_t resync_window = 0;  // resync blocks in flight; 0: the core's default
    // The owner detached this disk after it failed, and its metadata may not say so (the
    // write that records the failure can fail too): opened as failed, resynced whole.
    bool disk_failed_before = false;
  };

  // Reads the metadata (refusing a disk without it, or with metadata of another resource) and
  // builds the core. Nothing starts yet.
  static Result<std::unique_ptr<ReplicatedDevice>> Open(asio::io_context& io,
                                                        const ResourceConfig& config,
                                                        const NodeConfig& node, DiskSink& store,
                                                        Options options);
  ~ReplicatedDevice() override;

  // The size clients see: the data area before the internal metadata.
  uint64_t data_bytes() const { return data_bytes_; }
  // The metadata's identity (create-md draws a new one): the same disk, or a replacement.
  const MdUuid& device_uuid() const { return superblock_.device_uuid; }
  // A metadata write failed: no clean superblock any more, and commands that change the
  // metadata are refused until the daemon restarts.
  bool metadata_failed() const { return md_failed_; }

  [[nodiscard]] Status Start();
  // Stopping, after the frontend drained: StopLink() (the core marks what the peer did not
  // confirm), wait for Idle() (applies and flushes in flight), make the data durable, then
  // Shutdown() (the bitmap and a clean superblock).
  void StopLink();
  bool Idle() const;
  void Shutdown();

  void Submit(DiskIo* io) override;

  // replctl primary. Connected, the peer must agree first (Replica::Promote): this waits for
  // its answer, at most kPromotionAnswerTimeout, and says why it was refused.
  asio::awaitable<Status> Promote(bool force);
  // Promote without the waiting: BeginPromote asks (an error: refused at once); while
  // promotion_pending() the peer has not answered; then FinishPromote says how it ended (and
  // abandons the promotion if it is still pending: the answer came too late).
  Status BeginPromote(bool force);
  bool promotion_pending() const { return replica_->promotion_pending(); }
  Status FinishPromote();
  Status Demote(uint32_t open_clients);
  // replctl connect / disconnect: leave StandAlone and start the link again; drop the peer and
  // stay StandAlone. `message` tells what happened (nothing, when it already was so).
  Status Connect(bool discard_my_data, std::string& message);
  Status Disconnect(std::string& message);
  // replctl detach: drops the peer, which hears `why`, and stays StandAlone.
  void DisconnectFor(const std::string& why);
  // replctl invalidate / invalidate-remote (Replica::Invalidate, InvalidateRemote).
  Status Invalidate(bool remote);
  // replctl pause-sync / resume-sync (Replica::PauseResync).
  Status PauseResync(bool pause);
  // replctl verify (Replica::StartVerify).
  Status StartVerify();
  // replctl adjust: takes the keys of `live` that a running device can change (config_diff.h:
  // net's secret, keepalive, reconnect and split-brain keys, [resync], [startup]).
  void Retune(const ResourceConfig& live);
  ReplicaStatus Report() const { return replica_->Report(); }
  // The core, read-only: its state for tests/sim's invariant checks.
  const Replica& core() const { return *replica_; }
  // The timer's work (Options::timer): RateSlice kRateSlicesPerTick times a second, Tick once.
  void RateSlice();
  void Tick();
  static constexpr uint32_t kRateSlicesPerTick = 10;
  Role role() const { return replica_->role(); }
  // The disk failed under on_io_error = detach while Primary: serving through the peer.
  bool diskless_primary() const { return replica_->diskless_primary(); }
  // A diskless Primary lets go of its failed disk and metadata, once the owner saw the disk
  // finish every request submitted to it: the owner then closes the disk (its lock with it),
  // which can be replaced and attached (resource_attach_primary.cc). Any later use fails
  // with EIO (released_disk.h); none comes from a diskless replica.
  void ReleaseDisk();
  bool disk_released() const { return released_; }
  // The metadata says this node was Primary and did not step down cleanly (a crash or kill).
  bool was_primary() const { return replica_->crashed_primary(); }
  // Why the peer link last failed, for status; empty if it did not.
  std::string link_error() const;
  ResyncRate resync_rate() const { return progress_.Rate(); }
  // The metadata, when opened, said this node ran without its peer: a bitmap generation (it
  // recorded writes the peer missed) or the peer marked Outdated.
  bool degraded_at_start() const { return degraded_at_start_; }
  std::optional<std::chrono::microseconds> peer_rtt() const { return link_->peer_rtt(); }
  // Called (on the loop thread) after a batch of work changed a state events report.
  void set_on_state_change(std::function<void()> fn) { on_state_change_ = std::move(fn); }
  // Called (on the loop thread, inside the core's work: the owner posts what it does) when the
  // disk failed an I/O under [disk] on_io_error = "detach": the owner detaches the disk
  // (Resource::Detach), with `why` for the peer and the log. A Primary, Diskless and serving
  // through its peer, keeps its device: the owner releases the disk (ReleaseDisk).
  void set_on_detach_needed(std::function<void(const std::string& why)> fn) {
    on_detach_needed_ = std::move(fn);
  }
  // The first I/O the disk failed since it was opened (or the failure its metadata records).
  std::optional<DiskErrorRecord> disk_error() const;

 private:
  struct ClientSlot {
    ReplicatedDevice* device = nullptr;
    uint32_t index = 0;
    uint32_t generation = 0;   // bumped at every reuse: RequestId = generation << 32 | index
    DiskIo* client = nullptr;  // the frontend's request; null when the slot is free
    // The part of it in the core now: all of it, except for trims and write-zeroes larger
    // than part_bytes_max_, which go in parts one after the other.
    uint64_t part_offset_bytes = 0;
    uint64_t part_length_bytes = 0;
    DiskIo local{};                // the local disk I/O on its behalf
    std::vector<iovec> local_iov;  // the disk may rewrite it; the client's stays for the send
    uint64_t seq = 0;              // the frame that carries it to the peer
    bool sending = false;          // the link still reads the client's buffers
    bool completed = false;        // the core answered; the reply waits for the send
    int error = 0;
  };
  struct Received {  // a peer's Data frame, until applied
    peer::Data head;
    std::vector<uint8_t*> chunks;
  };
  struct AuxIo {  // an apply, a local flush or a resync read
    DiskIo io{};
    ReplicatedDevice* device = nullptr;
    enum class Kind : uint8_t {
      kApply,
      kFlush,
      kResyncRead,
      kCsumRead,
      kAlFlush,
      kAlWrite,
      kPeerRead
    } kind = Kind::kApply;
    uint64_t key = 0;  // apply: frame key; flush and resync read: token; AL: transaction seq
    std::vector<iovec> iov;
  };
  struct ResyncBuffer {
    uint8_t* data = nullptr;  // resync_block_bytes in resync_memory_
    uint64_t token = 0;
    uint64_t offset_bytes = 0;
    iovec iov{};  // the block: {data, length}
    bool in_use = false;
    bool sending = false;
    bool want_digests = false;
    std::vector<uint64_t> digests;  // of the block, once read, when wanted
  };
  // The peer's digests waiting for the local data to compare them with.
  struct CsumWork {
    uint64_t offset_bytes = 0;
    uint32_t length_bytes = 0;
    std::vector<uint64_t> digests;
    uint8_t* buffer = nullptr;  // the range, rounded up to 4 KiB, while the read runs
  };
  // A read for the peer (fast failback), until its reply has left.
  struct PeerReadBuffer {
    uint8_t* data = nullptr;  // the range, rounded up to the direct I/O alignment
    iovec iov{};              // the range: {data, length}
    uint64_t offset_bytes = 0;
    bool sending = false;
  };
  // A peer may have this many digest frames waiting here; more drop the connection (a sender
  // keeps at most kCsumsInFlightMax unanswered; the rest is room for an old connection's).
  static constexpr size_t kCsumWorkMax = 2 * peer::kCsumsInFlightMax;

  ReplicatedDevice(asio::io_context& io, const ResourceConfig& config, const NodeConfig& node,
                   DiskSink& store, Options options);
  Status Load();
  PeerLinkConfig LinkConfig() const;
  void SubmitAlWrite();

  // Runs the core's actions until it has none, then answers requests whose send finished.
  void Drain();
  void Execute(Action& action);
  void ExecuteSubmit(RequestId id);
  void ExecuteSendData(const SendData& a);
  void ExecuteApply(uint64_t key);
  void ExecuteResyncRead(const ResyncRead& a);
  void ExecuteSendResync(const SendResync& a);
  void ExecuteSendCsums(const SendCsums& a);
  void ExecuteCompareCsums(const CompareCsums& a);
  void FinishCompareCsums(uint64_t key, int error);
  void ExecuteReadForPeer(const ReadForPeer& a);
  void ExecuteSendReadReply(const SendReadReply& a);
  void FreePeerRead(uint64_t key);
  // A Data frame answering our ReadRequest: the data goes into the client's buffers.
  void DeliverReadReply(const peer::Data& head, std::span<uint8_t* const> chunks);
  void ExecuteWriteAl(const WriteAl& a);
  void ExecutePersistMd(const MdState& md);
  void ExecutePersistBitmap();
  void ExecuteDiskFailed(const DiskFailed& a);
  Status ChangeMd(const std::function<Status()>& change, const std::string& done_but_failed);
  // Writes the bitmap pages the core dirtied (synchronously) and marks them clean.
  Status WriteDirtyBitmap();
  void StartPart(ClientSlot& slot);
  void CompleteClient(RequestId id, int error);
  // The core keeps a request after answering it (protocols A and B wait for the peer's later
  // acks), so a slot's next request needs another id.
  // OnSendDone cookies: a client's RequestId (bits 0..61), or a resync token or a read for the
  // peer's key with one of these bits set.
  static constexpr uint64_t kResyncCookie = 1ULL << 63;
  static constexpr uint64_t kReadReplyCookie = 1ULL << 62;
  static RequestId IdOf(const ClientSlot& slot) {
    return (uint64_t{slot.generation} << 32) | slot.index;
  }
  ClientSlot& SlotOf(RequestId id);
  void AnswerFinished();
  AuxIo& TakeAux(AuxIo::Kind kind, uint64_t key);
  // A local read of [offset, offset+length) into `into` (OnAuxDone reports it as `kind`).
  void SubmitAuxRead(AuxIo::Kind kind, uint64_t key, iovec into, uint64_t offset_bytes,
                     uint64_t length_bytes);
  void ReleaseAux(AuxIo& aux);
  ResyncBuffer& TakeResyncBuffer(uint64_t token, uint64_t offset_bytes, uint64_t length_bytes);
  ResyncBuffer* FindResyncBuffer(uint64_t token);
  void StartTick();

  static void OnLocalDone(DiskIo* io, int error);
  static void OnAuxDone(DiskIo* io, int error);

  // PeerLinkHandler
  PeerState HandshakeState() override { return replica_->LocalState(); }
  void OnConnecting() override;
  void OnUp(const PeerState& peer, uint64_t features, const PeerState& sent) override;
  void OnDown(const std::string& reason) override;
  void OnData(const peer::Data& head, std::span<uint8_t* const> chunks) override;
  void OnRecvAck(uint64_t seq) override;
  void OnWriteAck(uint64_t seq, int error) override;
  void OnFlush(uint64_t seq) override;
  void OnFlushAck(uint64_t seq, int error) override;
  void OnState(const PeerState& peer) override;
  void OnOutOfSync(const peer::OutOfSync& message) override;
  void OnCsums(const peer::Csums& message) override;
  void OnCsumReply(const peer::CsumReply& message) override;
  void OnReadRequest(const peer::ReadRequest& message) override;
  void OnReadError(const peer::ReadError& message) override;
  void OnPromoteRequest(uint64_t token) override;
  void OnPromoteReply(const peer::PromoteReply& message) override;
  void OnSendDone(uint64_t cookie, bool sent) override;

  asio::io_context& io_;
  ResourceConfig config_;
  NodeConfig node_;
  DiskSink* store_;  // the disk, or released_ once a diskless Primary let go of it
  Options options_;
  uint64_t data_bytes_ = 0;
  std::unique_ptr<MetadataStore> md_;
  bool released_ = false;  // ReleaseDisk: store_ and md_ are one ReleasedDisk
  Superblock superblock_;  // as on disk
  bool degraded_at_start_ = false;
  std::function<void()> on_state_change_;
  std::function<void(const std::string&)> on_detach_needed_;
  std::optional<DiskErrorRecord> disk_error_;  // from the core's DiskFailed, stamped here
  std::optional<Replica::StateKey> state_key_;
  std::unique_ptr<Replica> replica_;
  std::unique_ptr<BufferPool> receive_pool_;
  std::unique_ptr<PeerPort> link_;
  asio::steady_timer tick_;
  uint32_t slices_ = 0;  // RateSlice calls since the last Tick

  std::vector<ClientSlot> slots_;
  std::vector<uint32_t> free_slots_;
  std::unordered_map<uint64_t, Received> received_;   // key -> frame not yet applied
  std::vector<OutOfSyncRun> out_of_sync_runs_;        // OnOutOfSync's, kept to reuse its buffer
  ResyncProgress progress_;                           // sampled by the tick
  std::unordered_map<uint64_t, CsumWork> csum_work_;  // key -> the peer's digests
  std::unordered_map<uint64_t, PeerReadBuffer> peer_reads_;  // key -> read for the peer
  uint64_t next_key_ = 1;
  std::deque<AuxIo> aux_;  // stable addresses; grows to the peak in flight
  std::vector<AuxIo*> free_aux_;
  // The Csums digests the connection agreed on (peer::kFeatureCrc64Digests).
  BlockDigestKind digest_kind_ = BlockDigestKind::kSha256;
  std::vector<IoMemory> resync_memory_;  // before the buffers that point into it
  std::deque<ResyncBuffer> resync_buffers_;
  uint64_t resync_block_bytes_ = 1 << 20;
  uint64_t part_bytes_max_ = 0;  // half the activity log (Load)
  // Internal metadata: AL transactions go through the disk ring (FUA) instead of blocking the
  // loop; the core has one transaction in flight at most, so one buffer serves.
  uint8_t* al_buffer_ = nullptr;
  // The internal layout's transaction waiting for its data flush (one at a time: the core plans
  // one transaction at a time).
  std::optional<AlTransaction> al_pending_;
  std::vector<uint32_t> finished_;  // slots whose reply can go now
  bool draining_ = false;
  std::vector<Action> drained_;  // the actions being executed (kept: no allocation per drain)
  bool in_submit_ = false;
  bool answer_posted_ = false;
  bool stopped_ = false;
  bool link_stopped_ = false;
  bool md_failed_ = false;  // a metadata write failed: never write a clean superblock again
  // A promotion waiting for the peer's answer (one at a time: the core refuses a second).
  static constexpr std::chrono::seconds kPromotionAnswerTimeout{10};
  asio::steady_timer* promotion_wait_ = nullptr;
  std::optional<PromotionDone> promotion_done_;
};

}  // namespace repld
