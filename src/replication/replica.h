// The replication core: one resource's state machine on one node. Events go in through the
// methods below; what must happen (disk I/O, frames to the peer, replies to clients, metadata
// writes) comes out as Actions, which the caller drains with TakeActions() and carries out. It
// does no I/O, reads no clock and draws no randomness of its own, so the daemon (src/daemon)
// and the simulator (tests/sim) drive the very same code. See docs/replication.md.
//
// Identifiers: RequestId names a client request (chosen by the caller, unique while in flight);
// `seq` numbers the frames this node sends to its peer (data, flushes), and names the peer's
// frames in the acknowledgements; `token` names local flushes and resync reads.
#pragma once

#include <cerrno>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/status.h"
#include "replication/activity_log.h"
#include "replication/bitmap.h"
#include "replication/resync_controller.h"
#include "replication/states.h"
#include "replication/sync_decision.h"

namespace repld {

using RequestId = uint64_t;

enum class WriteKind : uint8_t { kData, kZeroes, kTrim };

// The generation identifiers and flags that the metadata superblock keeps.
struct MdState {
  GenerationIds ids;
  DiskState disk = DiskState::kInconsistent;
  bool primary = false;  // was Primary and not cleanly demoted: a crash leaves it set
  bool peer_outdated = false;
  // The bitmap id was taken when this node, as Primary, lost the peer (not at a later
  // promotion). Meaningful only while ids.bitmap != 0.
  bool primary_at_split = false;
  // The disk failed a write or a flush ([disk] on_io_error): its data is not a consistent image
  // until a resync from the peer makes it UpToDate, and it is not promoted without --force.
  bool io_error = false;
};

// What the local disk failed, for status and for the refusal of a promotion.
struct DiskFailure {
  std::string what;  // "writing the peer's block at 4194304 (+65536)"
  int error = 0;     // errno value
};

// What the peer says about itself, at connect and whenever it changes.
struct PeerState {
  Role role = Role::kSecondary;
  DiskState disk = DiskState::kInconsistent;
  GenerationIds ids;
  uint64_t data_bytes = 0;
  uint64_t out_of_sync_bytes = 0;
  bool resync_done = false;       // sent by a SyncSource when the last block is confirmed
  bool discard_my_data = false;   // the operator's 'connect --discard-my-data' (split brain)
  bool primary_at_split = false;  // see MdState
};

// A run of out-of-sync data, in bytes (whole 4 KiB blocks, but the data's last one).
struct OutOfSyncRun {
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  bool operator==(const OutOfSyncRun&) const = default;
};

// --- Actions ---
struct SubmitWrite {  // write the client's data (or zeroes/trim) to the local disk
  RequestId id;
};
struct SubmitRead {  // read from the local disk for the client
  RequestId id;
};
struct SubmitFlush {  // make every completed local write durable
  uint64_t token;
};
struct SendData {  // send the client's write to the peer as frame `seq`
  uint64_t seq;
  RequestId id;
};
struct SendFlush {  // a barrier: the peer makes every earlier write durable, then acks
  uint64_t seq;
};
struct ApplyPeerWrite {  // write the peer's frame received as `key` to the local disk
  uint64_t key;
};
enum class AckKind : uint8_t { kReceived, kWritten, kFlushed };
struct SendAck {
  AckKind kind;
  uint64_t seq;
  int error;  // 0 or an errno value
};
struct ResyncRead {  // read [offset, offset+length) locally for a resync frame
  uint64_t token;
  uint64_t offset_bytes;
  uint64_t length_bytes;
  bool digests = false;  // compute the block's digests (one per 4 KiB) for SendCsums
};
// Send the digests of the block read by `token` as frame `seq`: the peer compares them with its
// own data and answers with the 4 KiB blocks that differ (checksum resync, or online verify).
struct SendCsums {
  uint64_t seq;
  uint64_t token;
  bool verify;
};
// Peer side: read the range of the peer's digest frame received as `key`, compare, and call
// CsumsCompared with the 4 KiB blocks that differ.
struct CompareCsums {
  uint64_t key;
};
struct SendCsumReply {
  uint64_t seq;
  std::vector<OutOfSyncRun> differing;
  int error;
};
struct SendResync {  // send the block read by `token` to the peer as frame `seq`
  uint64_t seq;
  uint64_t token;
};
// Fast failback: ask the peer for client read `id`'s range as frame `seq`. PeerReadReply(seq)
// answers, after the caller has put the data (RemoteRead(seq) names the request) in place.
struct SendReadRequest {
  uint64_t seq;
  RequestId id;
  uint64_t offset_bytes;
  uint64_t length_bytes;
};
// The peer's read request kept as `key`: read the range locally, then call ReadForPeerDone (and
// ReadReplySent once the answer has left, or will not).
struct ReadForPeer {
  uint64_t key;
  uint64_t offset_bytes;
  uint64_t length_bytes;
};
// Answer the peer's read request `key` (its frame `seq`) with the data read, or with `error`.
// `send` false: the connection it came on is gone; only free what `key` holds.
struct SendReadReply {
  uint64_t seq;
  uint64_t key;
  int error;
  bool send;
};
struct Complete {  // answer the client
  RequestId id;
  int error;
};
// Persist the transaction (dirty bitmap pages first), then call AlWritten. Every data write
// completed before it must be durable before it is (its evicted extents may hold them).
struct WriteAl {
  AlTransactionPlan plan;
};
// Write the superblock now, synchronously and durably. When it clears `primary` (the flag that
// makes a crash resync the activity log), every completed data write must be durable first.
struct PersistMd {
  MdState md;
};
struct PersistBitmap {};  // write every dirty bitmap page, synchronously and durably
// Make every completed write of the local disk durable now, synchronously (fdatasync); if that
// fails, the caller calls DiskSyncFailed(what, errno).
struct SyncDisk {
  std::string what;
};
struct SendState {        // tell the peer our state
  PeerState state;
};
// The sync target's bitmap, for the source to add to its own before it starts (one action per
// frame's worth of runs; `last` on the final one, which may have no runs).
struct SendOutOfSync {
  std::vector<OutOfSyncRun> runs;
  bool last = false;
};
struct DropPeer {  // close the peer connection; `reconnect`: try again after the backoff
  std::string reason;
  bool reconnect;
};
// Promotion agreed with the peer (docs/replication.md, "Promotion while connected").
struct SendPromoteRequest {  // ask the connected peer whether this node may become Primary
  uint64_t token;
};
struct SendPromoteReply {  // answer the peer's request `token`
  uint64_t token;
  bool granted;
  std::string reason;  // why refused
};
// The promotion that Promote() left pending ended: error 0 (this node is Primary) or an errno
// value with the reason for the operator.
struct PromotionDone {
  int error;
  std::string message;
};
// The local disk failed an I/O (failure.what): the caller records it, and when, for status.
// With `detach` ([disk] on_io_error = "detach"; the disk is Failed), the caller detaches the disk
// as 'replctl detach' does: it drops the peer (which hears why), lets the I/O in flight finish,
// writes the bitmap and superblock where it still can, and closes the disk: Diskless, StandAlone.
// With `primary` (a Primary's disk failed under detach), the replica has gone Diskless itself
// and keeps serving through its peer: the caller keeps the peer link and the replica, lets the
// disk's I/O in flight finish, and closes the disk; the replica asks for no local I/O and no
// metadata write until it is attached again (docs/replication.md, "When the disk fails").
struct DiskFailed {
  DiskFailure failure;
  bool detach = false;
  bool primary = false;
};
struct Log {  // a line for the log
  int level;  // 0 info, 1 warning, 2 error
  std::string text;
};
using Action =
    std::variant<SubmitWrite, SubmitRead, SubmitFlush, SendData, SendFlush, ApplyPeerWrite, SendAck,
                 ResyncRead, SendResync, SendCsums, CompareCsums, SendCsumReply, SendReadRequest,
                 ReadForPeer, SendReadReply, Complete, WriteAl, PersistMd, PersistBitmap, SyncDisk,
                 SendState,
                 SendOutOfSync, DropPeer, SendPromoteRequest, SendPromoteReply, PromotionDone,
                 DiskFailed, Log>;

struct ReplicaOptions {
  std::string node_name;
  std::string peer_name;  // for messages
  uint64_t data_bytes = 0;
  Protocol protocol = Protocol::kC;
  uint32_t max_buffers = 2048;  // frames sent to the peer and not yet confirmed
  uint32_t resync_window = 32;  // resync blocks in flight (32 MiB of 1 MiB blocks)
  uint64_t resync_block_bytes = 1 << 20;
  uint64_t resync_rate_bytes = 0;  // per second (refilled by Tick); 0: unlimited
  // The rate's budget comes in this many slices per Tick (Tick brings the last; RateSlice the
  // others), so that no second starts with a burst of the whole second's worth.
  uint32_t rate_slices_per_tick = 1;
  uint64_t seed = 1;              // for new generation identifiers
  SplitBrainPolicy split_brain;   // [net] after_sb_0pri / 1pri / 2pri
  bool resync_checksums = false;  // [resync] checksums: only differing blocks travel
  // Digest frames (checksum resync, verify) in flight at most: the peer keeps at most twice
  // this many waiting for its disk (peer::kCsumsInFlightMax), whatever the resync window.
  uint32_t csums_window = 16;
  ResyncController controller;
  size_t out_of_sync_runs_max = 4096;  // runs per SendOutOfSync (the frame's limit)
  // Fast failback: client reads sent to the peer at most (more wait here), and the peer's read
  // requests kept at most (more drop the peer): peer::kReadsInFlightMax and twice that.
  uint32_t remote_reads_window = 32;
  uint32_t peer_reads_max = 64;
  uint64_t peer_read_bytes_max = 64ULL << 20;  // of the peer's reads read here, until sent
  OnIoError on_io_error = OnIoError::kDetach;  // [disk] on_io_error
  // [resource] quorum = "majority" (docs/quorum.md): completions wait for quorum (SetQuorum),
  // and a write the peer did not confirm waits until the peer is fenced (PeerFenced).
  bool quorum = false;
  OnNoQuorum on_no_quorum = OnNoQuorum::kSuspendIo;
};

struct ReplicaCounters {
  uint64_t sent_bytes = 0, received_bytes = 0, written_bytes = 0, read_bytes = 0;
  uint64_t al_writes = 0, bitmap_writes = 0, resync_bytes = 0;
  uint64_t resync_equal_bytes = 0;  // checksum resync: blocks found equal, not sent
  uint64_t peer_read_bytes = 0;     // fast failback: client reads served from the peer's disk
};

// Online verify (replctl verify), on the node that runs it.
struct VerifyStatus {
  bool running = false;
  uint64_t total_bytes = 0;
  uint64_t done_bytes = 0;
  uint64_t differing_bytes = 0;  // found out of sync, and marked so on both nodes
};

struct ReplicaStatus {
  Role role;
  DiskState disk;
  ConnState conn;
  ReplState repl;
  std::optional<PeerState> peer;
  Protocol protocol;
  ReplicaCounters counters;
  uint64_t pending = 0;  // client requests not yet answered
  uint64_t unacked = 0;  // frames sent to the peer, not yet confirmed
  uint64_t out_of_sync_bytes = 0;
  uint64_t resync_total_bytes = 0;  // of the resync in progress (the source's count)
  uint64_t resync_done_bytes = 0;   // of which done: confirmed (source) or written (target)
  GenerationIds ids;
  std::string sync_decision;  // the rule that decided at the last connect ("" before one)
  bool resync_paused = false;
  // The peer failed to write this much of the last resync pass; the next pass starts in
  // resync_retry_seconds (0: none waiting).
  uint64_t resync_failed_bytes = 0;
  uint32_t resync_retry_seconds = 0;
  // Why this node, as sync source, stopped the last resync (local read errors pass after pass;
  // the peer stays Inconsistent); "" if it did not. Cleared when a resync starts.
  std::string resync_stopped_reason;
  std::optional<VerifyStatus> verify;  // since the last 'replctl verify' (none before one)
  // The first I/O the local disk failed since it was attached, until a resync repairs the disk
  // (none: no failure waits for one). A disk whose metadata recorded a failure at start says
  // so, with error 0.
  std::optional<DiskFailure> disk_failure;
  // With quorum = "majority": whether this node has quorum, whether its lost peer is fenced,
  // and the requests held (done, their completion waiting for quorum) or waiting for the fence.
  std::optional<bool> quorum;
  bool peer_fenced = false;
  uint64_t held_completions = 0;
  uint64_t waiting_for_fence = 0;
};

class Replica {
 public:
  // `md`, `al` and `bitmap` come from the metadata read at start. A node whose metadata says it
  // was Primary and did not demote cleanly crashed: every extent of its activity log is marked
  // out of sync, since the peer may lack those writes.
  Replica(ReplicaOptions options, MdState md, ActivityLog al, Bitmap bitmap);

  std::vector<Action> TakeActions();
  // The same into `out` (cleared first), trading buffers: a caller that keeps `out` between
  // calls drains without allocating once both buffers have grown.
  void TakeActions(std::vector<Action>& out);
  ReplicaStatus Report() const;
  // The states `replctl events` reports: cheap to take and compare after every batch of work.
  struct StateKey {
    Role role;
    DiskState disk;
    ConnState conn;
    ReplState repl;
    std::optional<Role> peer_role;
    std::optional<DiskState> peer_disk;
    bool resync_paused;
    bool operator==(const StateKey&) const = default;
  };
  StateKey state_key() const {
    return {role_,
            md_.disk,
            conn_,
            repl_,
            peer_ ? std::optional(peer_->role) : std::nullopt,
            peer_ ? std::optional(peer_->disk) : std::nullopt,
            resync_paused_};
  }
  // What we tell the peer about ourselves (in the handshake and on changes).
  PeerState LocalState() const;
  Role role() const { return role_; }
  DiskState disk() const { return md_.disk; }
  ConnState conn() const { return conn_; }
  const MdState& md() const { return md_; }
  // The metadata said, when this replica was opened, that it was Primary and had not stepped
  // down (a crash, or a kill).
  bool crashed_primary() const { return crashed_primary_; }
  const Bitmap& bitmap() const { return bitmap_; }
  Bitmap& bitmap() { return bitmap_; }
  const ActivityLog& al() const { return al_; }

  // --- Client requests (Primary only) ---
  void ClientWrite(RequestId id, uint64_t offset_bytes, uint64_t length_bytes, WriteKind kind,
                   bool fua);
  void ClientRead(RequestId id, uint64_t offset_bytes, uint64_t length_bytes);
  void ClientFlush(RequestId id);

  // --- Local disk completions ---
  void LocalWriteDone(RequestId id, int error);
  void LocalReadDone(RequestId id, int error);
  void LocalFlushDone(uint64_t token, int error);
  void AlWritten(uint64_t seq, int error);
  void ApplyDone(uint64_t key, int error);
  void ResyncReadDone(uint64_t token, int error);
  // The local read for the peer's request `key` (ReadForPeer) finished.
  void ReadForPeerDone(uint64_t key, int error);
  // The answer to the peer's read request `key` left (or never will): its buffer is free. The
  // requests and bytes the peer may have here count it until then.
  void ReadReplySent(uint64_t key);
  // The caller failed to write the superblock, the bitmap or (outside AlWritten) the activity
  // log, or to flush the disk before it marked it clean: a Secondary detaches under either
  // on_io_error (as DRBD: pass_on passes data errors on, and there is no one to pass a metadata
  // error to); a Primary goes Diskless under detach (replica_diskless.cc) and keeps its disk
  // under pass_on, refusing further metadata changes.
  void MetadataWriteFailed(const std::string& what, int error);
  // The caller failed a SyncDisk: the disk failed a flush, as for a client's or the peer's.
  void DiskSyncFailed(const std::string& what, int error);
  // A diskless Primary (its disk failed under detach, replica_diskless.cc): no local disk, every
  // read and write goes to the peer. False for a Secondary, which the caller detaches instead.
  bool diskless_primary() const { return role_ == Role::kPrimary && !HasDisk(); }

  // --- Peer link ---
  void PeerConnecting();
  // The handshake succeeded (authenticated, same resource and sizes): decides who syncs.
  // `sent`: the state this node sent in the handshake, which the peer decides from; both sides
  // decide from the states exchanged, and a node whose role, disk or generation changed since
  // it sent them reconnects instead (none: the state now, for a handshake that is atomic).
  // `promote_requests`: the peer agrees to promotions (peer::kFeaturePromoteRequests); a peer
  // without it is told by a State after the fact, as before.
  struct Handshake {
    PeerState peer;
    std::optional<PeerState> sent;
    bool promote_requests = true;
  };
  void PeerUp(const Handshake& handshake);
  void PeerUp(const PeerState& peer) { PeerUp(Handshake{peer, std::nullopt, true}); }
  void PeerDown(const std::string& reason);
  void PeerSent(uint64_t seq);  // frame `seq` was handed to the socket
  void PeerAck(AckKind kind, uint64_t seq, int error);
  // The peer's frame `seq`, received and kept by the caller under `key` (unique while in
  // flight, whatever the connection).
  // Returns false when the frame is refused or dropped (the caller frees its payload).
  bool PeerData(uint64_t key, uint64_t seq, uint64_t offset_bytes, uint64_t length_bytes,
                WriteKind kind, bool resync);
  void PeerFlush(uint64_t seq);
  void PeerStateChanged(const PeerState& peer);
  // Runs of the sync target's bitmap (SendOutOfSync on the peer). The SyncSource adds them to
  // its bitmap and starts sending on the `last` one; anyone else ignores them.
  void PeerOutOfSync(const std::vector<OutOfSyncRun>& runs, bool last);
  // The peer's digests of [offset, offset+length), received and kept by the caller under `key`:
  // returns false when refused (the caller forgets them). Else CompareCsums{key} follows.
  bool PeerCsums(uint64_t key, uint64_t seq, uint64_t offset_bytes, uint64_t length_bytes,
                 bool verify);
  // The local data compared with the digests kept under `key`: `differing` 4 KiB blocks.
  void CsumsCompared(uint64_t key, const std::vector<OutOfSyncRun>& differing, int error);
  // The peer's answer to our SendCsums `seq`.
  void PeerCsumReply(uint64_t seq, const std::vector<OutOfSyncRun>& differing, int error);
  // Fast failback, the UpToDate side: the peer asks for [offset, offset+length), kept by the
  // caller as `key`. Returns false when refused (the caller forgets it); else ReadForPeer{key}
  // follows, once every earlier write of the peer to that range has landed.
  bool PeerReadRequest(uint64_t key, uint64_t seq, uint64_t offset_bytes, uint64_t length_bytes);
  // Fast failback, the Primary: which client read frame `seq` asked for (none: not outstanding,
  // and the reply is to be dropped); then PeerReadReply with the outcome.
  std::optional<RequestId> RemoteRead(uint64_t seq) const;
  void PeerReadReply(uint64_t seq, int error);

  // Periodic (the daemon: every second): sends a flush barrier when the peer holds writes that
  // it has confirmed but not yet made durable, so that their record stays short (during a
  // resync every kResyncBarrierTicks, or at kResyncUnflushedBytesMax).
  void Tick();
  // Between Ticks (the daemon: every 100 ms, rate_slices_per_tick - 1 times per Tick): the next
  // slice of the resync rate's budget.
  void RateSlice();

  // Promotion agreed with the peer. The peer asks (its request `token`): answered at once.
  void PeerPromoteRequest(uint64_t token);
  // The peer's answer to our SendPromoteRequest.
  void PeerPromoteReply(uint64_t token, bool granted, const std::string& reason);
  // The caller gave up waiting (no answer in time): the promotion fails, and the peer hears
  // that this node is still Secondary.
  void AbandonPromotion(const std::string& why);
  // Promote() returned Ok but the peer must agree first: PromotionDone says how it ended.
  bool promotion_pending() const { return promotion_.has_value(); }

  // --- Quorum (options.quorum; docs/quorum.md) ---
  // The quorum logic (quorum.h) says whether this node has quorum. Without it, a Primary
  // completes no request successfully: under suspend-io it holds the completions until quorum
  // returns, under io-error it fails them. Error completions always pass.
  void SetQuorum(bool has_quorum);
  // The peer this Primary lost (since the last PeerDown or PeerUp) is fenced: it can win no
  // vote, so writes it did not confirm may complete.
  void PeerFenced();

  // --- Operator ---
  // Promotion while connected is a cluster-wide change: the peer agrees first (Promote returns
  // Ok with promotion_pending(), and PromotionDone follows), so that two connected nodes are
  // never Primary at once; requests that cross resolve in favour of the node whose name sorts
  // first. A disconnected node promotes on its own (the operator's call: a split brain is found
  // at the next connect).
  // A SyncTarget connected to an UpToDate Secondary peer may be promoted (without --force): fast
  // failback. It serves at once; reads of blocks not yet synced go to the peer, and its writes
  // complete only once the peer has written them (its own disk does not count yet).
  Status Promote(bool force);
  Status Demote(uint32_t open_clients);
  // The operator's connect / disconnect. Connect() leaves StandAlone (false if the node was not
  // StandAlone: nothing to do) and the caller starts the link again. With `discard_my_data`
  // (a Secondary only), a split brain found at that connect is resolved by dropping this
  // node's changes: it becomes the sync target of the blocks either side changed. Disconnect()
  // drops the peer and stays StandAlone (a Primary keeps serving and marks what the peer misses).
  Result<bool> Connect(bool discard_my_data = false);
  void Disconnect(const std::string& why);
  // replctl invalidate: this Secondary's data stops counting; a full sync from the (connected,
  // UpToDate) peer replaces it. invalidate-remote: the same for the peer's data, from here.
  Status Invalidate();
  Status InvalidateRemote();
  // replctl pause-sync / resume-sync: a paused node sends no resync block (any resync it is or
  // becomes the source of); application writes still replicate. Not kept across a restart.
  Status PauseResync(bool pause);
  // replctl verify: compares every block's digest with the peer's (connected, both UpToDate, no
  // resync running); blocks that differ are marked out of sync on both nodes. A disconnect and
  // connect then resyncs them from the Primary (docs/replication.md, "Online verify").
  Status StartVerify();
  bool resync_paused() const { return resync_paused_; }
  // The [net] after_sb_* policies, for the next connect.
  void SetSplitBrainPolicy(const SplitBrainPolicy& policy) { options_.split_brain = policy; }
  // replctl adjust: the resync's fixed rate and dynamic controller apply from the next rate
  // slice; `checksums` from the next resync or verify.
  void SetResyncTunables(uint64_t rate_bytes, const ResyncController& controller, bool checksums);
  // replctl adjust: [disk] on_io_error, for the next failure.
  void SetOnIoError(OnIoError on_io_error) { options_.on_io_error = on_io_error; }
  // Clean shutdown: persists the bitmap and clears the crash flag. Only with nothing in flight.
  void Shutdown();

  // The bookkeeping's own consistency (replica_invariants.cc): "" or the first broken rule.
  // The simulator calls it after every event; it is cheap enough for tests, not for I/O paths.
  std::string CheckInvariants() const;

 private:
  struct Request {
    enum class Type : uint8_t { kWrite, kFlush, kRead } type = Type::kWrite;
    uint64_t offset = 0;
    uint64_t length = 0;
    WriteKind kind = WriteKind::kData;
    bool fua = false;
    uint64_t started = 0;  // local write submitted: its key in local_writes_ (from 1)
    bool local_done = false;
    int local_error = 0;
    bool sent = false;  // a frame went to the peer
    uint64_t seq = 0;
    bool handed = false;       // the frame reached the socket
    bool received = false;     // peer: RecvAck
    bool written = false;      // peer: WriteAck (or FlushAck for a flush)
    bool peer_gone = false;    // the peer left before confirming
    bool peer_failed = false;  // the peer confirmed with an error
    bool remote = false;       // a read sent to the peer (fast failback)
    bool completed = false;
    uint64_t token = 0;  // flush: local flush token
  };
  struct Apply {  // a peer frame on the Secondary
    uint64_t seq = 0;
    uint64_t epoch = 0;  // the connection it came on
    uint64_t order = 0;  // arrival order
    uint64_t offset = 0;
    uint64_t length = 0;
    WriteKind kind = WriteKind::kData;
    bool resync = false;
    bool started = false;
    bool diskless = false;  // a diskless Primary's write: marked (NewGenerationForDisklessPeer)
  };
  struct ResyncBlock {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool read_done = false;
    bool csums = false;  // digests go first (checksum resync or verify), not the data
    bool verify = false;
    // Marked out of sync since its read started (MarkOutOfSync): what it read may be older than
    // the peer's copy, so its reply must not clear the range (the next pass sends it again).
    bool dirtied = false;
  };
  struct PeerRead {  // a peer's read request on this node
    uint64_t seq = 0;
    uint64_t epoch = 0;
    uint64_t after = 0;  // apply_counter_ at arrival: the peer's writes sent before it
    uint64_t offset = 0;
    uint64_t length = 0;
    bool started = false;
    bool answered = false;  // SendReadReply went out; ReadReplySent frees it
  };
  struct CsumCheck {  // a peer's digest frame on this node
    uint64_t seq = 0;
    uint64_t epoch = 0;
    bool verify = false;
  };

  void Emit(Action a) {
    if (options_.quorum && !quorum_) {
      if (auto* c = std::get_if<Complete>(&a); c != nullptr && c->error == 0) {
        if (options_.on_no_quorum == OnNoQuorum::kIoError) {
          c->error = EIO;
        } else {
          held_.push_back(c->id);  // at most the client's requests in flight
          return;
        }
      }
    }
    // A diskless node has no metadata to write (its last state went with DiskFailed).
    if (md_.disk == DiskState::kDiskless &&
        (std::holds_alternative<PersistBitmap>(a) || std::holds_alternative<PersistMd>(a) ||
         std::holds_alternative<SyncDisk>(a))) {
      return;
    }
    if (std::holds_alternative<PersistBitmap>(a) || std::holds_alternative<WriteAl>(a)) {
      ++counters_.bitmap_writes;  // both write the dirty bitmap pages
    }
    actions_.push_back(std::move(a));
  }
  void Info(std::string text) { Emit(Log{0, std::move(text)}); }
  void Warn(std::string text) { Emit(Log{1, std::move(text)}); }
  bool Connected() const { return conn_ == ConnState::kConnected; }
  // A local disk to read, write and flush (not Failed, not Diskless).
  bool HasDisk() const {
    return md_.disk != DiskState::kDiskless && md_.disk != DiskState::kFailed;
  }
  // Promotion (replica_promote.cc): what refuses it now, and the change itself.
  Status CheckPromote(bool force) const;
  void DoPromote(bool force);
  void FinishPromotion(int error, const std::string& message);
  int PromotionTie(uint64_t their_token) const;
  bool Overlaps(uint64_t offset, uint64_t length, uint64_t o2, uint64_t l2) const {
    return offset < o2 + l2 && o2 < offset + length;
  }
  bool LocalConflict(uint64_t offset, uint64_t length) const;
  // Fast failback: a Primary whose disk is not UpToDate serves through its connected, UpToDate
  // Secondary peer, while there is one. RangeInSync: no block of the range is marked out of
  // sync here.
  bool PeerCanServe() const;
  bool RangeInSync(uint64_t offset, uint64_t length) const;
  void StartRemoteRead(RequestId id);
  void PumpRemoteReads();
  void FailRemoteReads();
  void PumpPeerReads();
  // A resync frame that lands on a fast-failback Primary over a write of its own that the peer
  // has not confirmed was read before that write reached the peer: it is stale.
  bool StaleResyncFrame(uint64_t offset, uint64_t length) const;
  void PumpWrites();
  void SendBarrier();
  void PeerFlushed(uint64_t seq);
  // The writes the peer confirmed before `before_seq` leave peer_unflushed_: `durable` (a peer
  // flush covered them), or not (a failed flush, a lost peer: marked, and the bitmap persisted).
  // Returns whether it persisted the bitmap.
  bool SettleUnflushed(uint64_t before_seq, bool durable);
  // A finished write's AL references: handed to its peer_unflushed_ entry, or released.
  void KeepOrReleaseAl(const Request& r);
  bool PeerWindowFull() const {
    return unconfirmed_.size() + resync_frames_.size() + csum_frames_.size() +
               peer_unflushed_.size() / 4 >=
           options_.max_buffers;
  }
  bool TryStart(RequestId id, Request& r);
  void StartWrite(RequestId id, Request& r);
  void MaybeComplete(RequestId id);
  void Forget(RequestId id);
  void PumpApplies();
  void PumpPeerFlushes();
  void PumpResync();
  // Marks the range out of sync (every mark on the Primary or sync source goes through here),
  // and dirties the resync blocks in flight over it.
  void MarkOutOfSync(uint64_t offset, uint64_t length);
  void RefillResyncBudget();
  // Bytes per second the resync may send now (0: no limit): the fixed rate, or the dynamic
  // controller's.
  uint64_t ResyncRate() const;
  int64_t RateSliceBytes() const;  // one slice of ResyncRate (0: no limit)
  void StepController();
  bool ResyncWindowFull() const;
  bool EndResyncPass();
  void ResyncReadFailed(const ResyncBlock& b, int error);
  void StopResync();
  bool CsumsWindowFull() const;
  bool ResyncReadMustWait(uint64_t offset, uint64_t length) const;
  void StartResyncRead(uint64_t offset, uint64_t length, bool csums, bool verify);
  void SendResyncBlock(uint64_t token, int error);
  void PumpVerify();
  void FinishVerify();
  void FinishResync();
  void StartResyncAsSource(bool full);
  void SendOurBitmap();
  void NewCurrentId();
  void SetDisk(DiskState d);
  // The local disk failed `what` (a Secondary's apply of the peer's write, resync write or
  // flush for the peer): [disk] on_io_error says whether it detaches or passes the error on;
  // a failed metadata write detaches whatever the policy.
  void LocalDiskFailed(const std::string& what, int error, bool metadata = false);
  // Tick: the reconnect LocalDiskFailed asked for under pass_on, once its error acks had time
  // to leave.
  void PassOnReconnect();
  // A Primary's disk failed `what` under on_io_error = detach (replica_diskless.cc): Failed,
  // recorded where the disk still takes a write, then Diskless, serving through the peer.
  // Returns whether the peer serves (else the failed request gets the error).
  bool PrimaryDiskFailed(const std::string& what, int error);
  bool PrimaryDetaches() const {
    return role_ == Role::kPrimary && options_.on_io_error == OnIoError::kDetach;
  }
  // The connected peer is a Primary without a disk (replica_diskless.cc): it writes through
  // this node, whose disk holds the only copy of its data.
  bool PeerIsDisklessPrimary() const;
  // This node, UpToDate and Secondary, serves a diskless Primary: before the first of its
  // writes lands, the data moves to a new generation (bitmap id, new current id, persisted), so
  // that the Primary's old disk, which may come back claiming the old current id, is never
  // taken for current. Returns whether it started one (the peer is to hear of it); nothing when
  // that happened already.
  bool NewGenerationForDisklessPeer();
  // The diskless Primary's write of [offset, offset+length) arrived: marked, and the mark
  // persisted, before it is applied.
  void MarkForDisklessPeer(uint64_t offset, uint64_t length);
  // A diskless Primary takes the generation identifiers of the UpToDate peer it serves from.
  void FollowPeerGeneration(const PeerState& peer);
  void PersistMdNow() { Emit(PersistMd{md_}); }
  std::vector<uint32_t> ExtentsOf(uint64_t offset, uint64_t length) const;
  uint64_t NextRandom();

  ReplicaOptions options_;
  MdState md_;
  bool crashed_primary_ = false;  // see crashed_primary()
  ActivityLog al_;
  Bitmap bitmap_;
  Role role_ = Role::kSecondary;
  ConnState conn_ = ConnState::kStandAlone;
  ReplState repl_ = ReplState::kOff;
  std::optional<PeerState> peer_;
  std::optional<DiskFailure> disk_failure_;  // see ReplicaStatus::disk_failure
  std::vector<Action> actions_;
  ReplicaCounters counters_;
  uint64_t rng_;

  // Primary side.
  std::unordered_map<RequestId, Request> requests_;
  std::deque<RequestId> waiting_;               // writes not started yet, in arrival order
  std::map<uint64_t, RequestId> local_writes_;  // started, not locally done: id by start order
  std::map<uint64_t, RequestId> unconfirmed_;   // seq -> request, frames not yet confirmed
  std::map<uint64_t, uint64_t> resync_frames_;  // seq -> resync token, not yet confirmed
  // Written on the peer but not yet covered by a peer flush: if the peer crashes, its disk cache
  // may lose them, so a lost peer marks them out of sync again. Barriers keep the list short.
  // A client write's entry holds its extents' AL references once its request is done
  // (`holds_al`): the extents stay hot until a peer flush covers the write, or until the bitmap
  // marks it and has been persisted (SettleUnflushed).
  struct Unflushed {
    uint64_t seq, offset, length;
    bool holds_al = false;
  };
  std::deque<Unflushed> peer_unflushed_;
  std::optional<uint64_t> barrier_seq_;  // an internal flush barrier in flight
  // While a resync runs, Tick sends a barrier every kResyncBarrierTicks, or when this many bytes
  // are unflushed on the peer; otherwise every Tick.
  static constexpr uint32_t kResyncBarrierTicks = 8;
  static constexpr uint32_t kResyncRetryTicksMax = 60;
  static constexpr uint64_t kResyncUnflushedBytesMax = 1ULL << 30;
  uint32_t ticks_since_barrier_ = 0;
  uint64_t UnflushedBytes() const {
    uint64_t bytes = 0;
    for (const Unflushed& u : peer_unflushed_) bytes += u.length;
    return bytes;
  }
  uint64_t start_counter_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t next_token_ = 1;
  std::unordered_map<uint64_t, RequestId> flush_tokens_;  // token -> client flush
  bool al_writing_ = false;
  std::optional<AlTransactionPlan> al_plan_;

  // Resync, source side.
  std::map<uint64_t, ResyncBlock> resync_blocks_;  // token -> block being read or sent
  uint64_t resync_cursor_bit_ = 0;
  uint64_t resync_total_bytes_ = 0;
  // A pass over the bitmap in which the peer failed blocks (its disk full or failing) ends the
  // pass; the next starts after resync_retry_ticks_ (1, 2, 4 ... kResyncRetryTicksMax Ticks),
  // not at once: the blocks would fail again in a loop that floods the link and both logs.
  uint64_t resync_pass_failed_bytes_ = 0;  // in the pass running
  int resync_pass_error_ = 0;              // the last of them
  uint64_t resync_failed_bytes_ = 0;       // in the last pass that ended with failures
  // Blocks this node failed to read for the resync (its own disk): they stay marked and the pass
  // ends like one with peer failures; after kResyncReadFailedPassesMax such passes in a row the
  // resync stops (StopResync), with resync_stopped_reason_ in the status.
  static constexpr uint32_t kResyncReadFailedPassesMax = 5;
  uint64_t resync_pass_read_failed_bytes_ = 0;  // in the pass running
  std::string resync_pass_read_error_;          // its first: range and errno
  uint32_t resync_read_failed_passes_ = 0;      // in a row
  std::string resync_stopped_reason_;
  uint32_t resync_backoff_ticks_ = 0;
  uint32_t resync_retry_ticks_ = 0;  // until the next pass; 0: not waiting
  uint64_t last_resync_seq_ = 0;
  uint64_t resync_applied_bytes_ = 0;
  std::map<uint64_t, uint64_t> csum_frames_;  // seq -> resync token: digests awaiting a reply
  // Checksum resync: blocks the peer said differ, so their data goes without digests first.
  std::optional<Bitmap> differs_;
  uint64_t verify_cursor_ = 0;
  std::optional<VerifyStatus> verify_;
  std::unordered_map<uint64_t, CsumCheck> csum_checks_;  // peer side: key -> digest frame

  // Fast failback, the Primary: client reads sent to the peer, and waiting for a place.
  std::map<uint64_t, RequestId> remote_reads_;  // seq -> request
  std::deque<RequestId> remote_waiting_;
  // The UpToDate side: the peer's read requests.
  std::unordered_map<uint64_t, PeerRead> peer_reads_;  // key -> request
  // A sync target's bitmap names every block it lacks only once the source's merged bitmap has
  // come back on this connection; until then its reads all go to the peer.
  bool bitmap_complete_ = false;
  uint64_t peer_read_bytes_ = 0;  // of those read or being read, until their answer left

  // Secondary side.
  std::map<uint64_t, uint64_t> apply_order_;     // arrival order -> key
  std::unordered_map<uint64_t, Apply> applies_;  // key -> frame not yet written locally
  uint64_t apply_counter_ = 0;
  uint64_t epoch_ = 0;
  // Of applies_, those of connection applies_epoch_ (the current one once it sent a frame):
  // max_buffers bounds these, not the applies an earlier connection left on a slow disk.
  uint64_t applies_epoch_ = 0;
  uint32_t epoch_applies_ = 0;
  SyncDecision last_decision_;  // at the last connect
  // StandAlone on purpose (a refused connect, or Disconnect()): the link is not retrying, and
  // only Connect() (or a restart) changes that.
  bool standalone_ = false;
  bool resync_paused_ = false;
  bool discard_my_data_ = false;  // until the next connect succeeds (or refuses)
  // Promotion agreed with the peer: our request waiting for its answer.
  struct PendingPromotion {
    uint64_t token = 0;
    bool force = false;
  };
  std::optional<PendingPromotion> promotion_;
  // Quorum (options_.quorum): the last SetQuorum, the fence of the lost peer, and the
  // completions held without quorum (suspend-io), in the order they were due.
  bool quorum_ = false;
  bool peer_fenced_ = false;
  std::deque<RequestId> held_;
  // A write or flush done but for the peer, which did not confirm it: it waits for the fence.
  bool WaitsForFence(const Request& r) const {
    return options_.quorum && !peer_fenced_ && (r.peer_gone || !r.sent);
  }
  bool peer_promote_requests_ = false;  // this connection agrees promotions first
  // SyncSource waiting for the target's bitmap (PeerOutOfSync with `last`): full or bitmap.
  std::optional<bool> awaiting_bitmap_full_;
  uint64_t app_bytes_since_tick_ = 0;  // client reads and writes, for the controller
  uint32_t quiet_ticks_ = 0;           // Ticks in a row without application I/O
  uint64_t dynamic_rate_ = 0;          // the controller's rate (0: no limit)
  int64_t resync_budget_ = 0;          // bytes the resync may still send this slice (rate limited)
  std::deque<uint64_t> peer_flushes_;  // peer flush seqs waiting for earlier applies
  std::unordered_map<uint64_t, std::pair<uint64_t, uint64_t>>
      peer_flush_tokens_;  // token -> seq, epoch
  bool peer_flush_running_ = false;
  // The current id this node drew for a diskless Primary (0: none), so that the same Primary,
  // back on that id (it follows ours), does not start yet another one. Forgotten when the peer
  // shows a disk again: a disk that took that id (resynced from here) may fail in turn.
  uint64_t diskless_peer_current_ = 0;
  uint64_t pass_on_drop_epoch_ = 0;  // the connection on_io_error = pass_on last dropped
  std::optional<std::string> pass_on_drop_reason_;  // that drop, for the next Tick
};

}  // namespace repld
