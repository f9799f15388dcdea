// The connection's side of the state machine: who syncs from whom at connect, what a lost peer
// means for the writes in flight, and the Secondary applying the Primary's writes in order.
#include <cerrno>

#include "common/check.h"
#include "common/units.h"
#include "replication/replica.h"

namespace repld {

void Replica::PeerConnecting() {
  // StandAlone after a refused connect stays so: the link does not retry (DropPeer without
  // reconnect) and the status must not claim it does.
  if (conn_ == ConnState::kConnected || standalone_) return;
  conn_ = ConnState::kConnecting;
}

Result<bool> Replica::Connect(bool discard_my_data) {
  if (discard_my_data && role_ == Role::kPrimary) {
    return Status::Invalid(
        "--discard-my-data on a Primary: this node serves its data; demote it first "
        "('replctl secondary'), then connect with --discard-my-data");
  }
  if (!standalone_) {
    if (discard_my_data) {
      return Status::Invalid("--discard-my-data needs a StandAlone node (this one is " +
                             std::string(ConnStateName(conn_)) +
                             "); run 'replctl disconnect' first");
    }
    return false;
  }
  standalone_ = false;
  discard_my_data_ = discard_my_data;
  conn_ = ConnState::kConnecting;
  Info(discard_my_data ? "connecting to the peer again (operator), discarding this node's "
                         "changes if there is a split brain"
                       : "connecting to the peer again (operator)");
  return true;
}

void Replica::Disconnect(const std::string& why) {
  if (standalone_) return;
  Info("disconnecting from the peer: " + why);
  Emit(DropPeer{why, false});
  standalone_ = true;
  if (!Connected()) conn_ = ConnState::kStandAlone;  // else PeerDown, when the link reports it
}

// The handshake's state changed in a way that could make the two sides decide differently.
static std::string HandshakeStateMoved(const PeerState& sent, const PeerState& now) {
  if (sent.role != now.role) {
    return std::string("role ") + RoleName(sent.role) + " -> " + RoleName(now.role);
  }
  if (sent.disk != now.disk) {
    return std::string("disk ") + DiskStateName(sent.disk) + " -> " + DiskStateName(now.disk);
  }
  if (sent.ids != now.ids) {
    return "generation identifiers changed";
  }
  if (sent.primary_at_split != now.primary_at_split ||
      sent.discard_my_data != now.discard_my_data) {
    return "split-brain flags changed";
  }
  return "";
}

void Replica::PeerUp(const Handshake& handshake) {
  REPLD_CHECK(conn_ != ConnState::kConnected);
  peer_fenced_ = false;  // a later loss is fenced again
  const PeerState& peer = handshake.peer;
  if (standalone_) {  // a handshake that finished as the operator disconnected
    Emit(DropPeer{"this node is StandAlone ('replctl connect' connects it)", false});
    return;
  }
  // Both sides decide from the states they exchanged; if ours moved since (a promotion while
  // Connecting), the peer decided from a state that is no longer true: connect again.
  if (handshake.sent) {
    if (const std::string moved = HandshakeStateMoved(*handshake.sent, LocalState());
        !moved.empty()) {
      Emit(DropPeer{
          "this node's state changed during the handshake (" + moved + "): connecting again",
          true});
      return;
    }
  }
  peer_promote_requests_ = handshake.promote_requests;
  const GenerationIds& mine = md_.ids;
  const GenerationIds& theirs = peer.ids;
  auto refuse = [&](const std::string& why) {
    Emit(DropPeer{why, false});
    conn_ = ConnState::kStandAlone;
    standalone_ = true;
  };
  if (peer.data_bytes != options_.data_bytes) {
    refuse("the peer's data size is " + std::to_string(peer.data_bytes) + " bytes, ours " +
           std::to_string(options_.data_bytes) + ": the disks must be the same size");
    return;
  }
  // Decide the direction of the data (sync_decision.h; docs/replication.md has the table).
  // The counts of what changed may have moved since the handshake (a disconnected Primary
  // writing): the peer saw the ones sent, so both decide on those.
  const PeerState me = handshake.sent ? *handshake.sent : LocalState();
  const SyncSide my_side{
      mine, md_.disk, role_, me.out_of_sync_bytes, me.discard_my_data, me.primary_at_split};
  const SyncSide peer_side{theirs,
                           peer.disk,
                           peer.role,
                           peer.out_of_sync_bytes,
                           peer.discard_my_data,
                           peer.primary_at_split};
  last_decision_ = DecideSync(my_side, peer_side, options_.split_brain);
  discard_my_data_ = false;  // one connect's worth: the operator asks again if this one fails
  const SyncPlan plan = last_decision_.plan;
  if (plan == SyncPlan::kSplitBrain) {
    // One message, the same on both nodes but for the order of the names.
    const std::string me = "'" + options_.node_name + "'";
    const std::string them =
        options_.peer_name.empty() ? "the peer" : "'" + options_.peer_name + "'";
    refuse("split brain: " + me + " and " + them +
           " both changed the data while they were apart (" + me + " changed " +
           FormatSizeBytes(my_side.out_of_sync_bytes) + ", " + them + " changed " +
           FormatSizeBytes(peer_side.out_of_sync_bytes) +
           "); no data moved and both nodes stay StandAlone. To keep one node's changes: on "
           "the other node stop repld, run 'replctl create-md --force' and start it again; "
           "then run 'replctl connect' on the node whose changes are kept, and the other "
           "receives a full sync (" +
           last_decision_.text + ")");
    return;
  }
  if (role_ == Role::kPrimary && peer.role == Role::kPrimary && plan != SyncPlan::kUnrelated) {
    refuse(
        "both nodes are Primary; demote one ('replctl secondary'), then run 'replctl "
        "connect' on both (" +
        last_decision_.text + ")");
    return;
  }
  if (plan == SyncPlan::kUnrelated || plan == SyncPlan::kRefuse) {
    refuse(last_decision_.text + "; no data moved");
    return;
  }
  if (!HasDisk() && plan != SyncPlan::kNone) {
    // A diskless Primary (replica_diskless.cc) has nothing to send and nowhere to write.
    refuse("this node has no disk (Diskless, its disk failed) and the connect wants a resync (" +
           last_decision_.text + "); attach a disk first");
    return;
  }
  const std::string& rule = last_decision_.text;
  conn_ = ConnState::kConnected;
  ++epoch_;
  peer_ = peer;
  repl_ = ReplState::kEstablished;
  Info("connected to the peer (" + std::string(RoleName(peer.role)) + ", " +
       DiskStateName(peer.disk) + "): " + rule);
  if (last_decision_.rule == 61 || last_decision_.rule == 63) {
    const bool mine_lost = plan == SyncPlan::kTarget;
    Warn(std::string("split brain resolved: ") +
         (mine_lost ? "this node's " + FormatSizeBytes(my_side.out_of_sync_bytes)
                    : "the peer's " + FormatSizeBytes(peer_side.out_of_sync_bytes)) +
         " of changes are discarded (" + last_decision_.text + ")");
  }
  switch (plan) {
    case SyncPlan::kNone:
      if (mine.current != 0 && mine.current == theirs.current &&
          peer.disk == DiskState::kUpToDate && md_.disk != DiskState::kUpToDate &&
          md_.disk != DiskState::kDiskless) {
        SetDisk(DiskState::kUpToDate);
      }
      // (Not for a peer without a disk: nothing caught up, and our bitmap id names the
      // generation its old disk may come back with.)
      if (md_.ids.bitmap != 0 && bitmap_.CountSet() == 0 && !PeerIsDisklessPrimary()) {
        md_.ids.bitmap = 0;
        PersistMdNow();
      }
      break;
    case SyncPlan::kBitmapSource:
    case SyncPlan::kFullSource:
      // The target's bitmap comes first: blocks it changed on its own (a split brain's victim,
      // a crashed Primary's activity log) differ too.
      repl_ = ReplState::kWFBitMapS;
      awaiting_bitmap_full_ = plan == SyncPlan::kFullSource;
      break;
    case SyncPlan::kTarget:
      repl_ = ReplState::kSyncTarget;
      bitmap_complete_ = false;  // until the source's merged bitmap is back
      resync_total_bytes_ = 0;   // the source's State after it has our bitmap says how much
      resync_applied_bytes_ = 0;
      SetDisk(DiskState::kInconsistent);
      break;
    case SyncPlan::kSplitBrain:
    case SyncPlan::kUnrelated:
    case SyncPlan::kRefuse:
      break;
  }
  NewGenerationForDisklessPeer();  // the State below tells the peer
  // Every node but a source sends its bitmap, whatever it decided: the two decide on their own,
  // and a source must never wait for a bitmap that does not come (the counts each decided on can
  // differ when writes land between the handshake and this). A node that is not in WFBitMapS
  // ignores it.
  if (plan != SyncPlan::kBitmapSource && plan != SyncPlan::kFullSource) SendOurBitmap();
  Emit(SendState{LocalState()});
}

void Replica::SendOurBitmap() {
  SendOutOfSync out;
  const uint64_t bits = bitmap_.bit_count();
  for (uint64_t first = bitmap_.FindNextSet(0); first < bits;) {
    const uint64_t end = bitmap_.FindNextClear(first);
    const uint64_t offset = first * kBitmapGrainBytes;
    out.runs.push_back({offset, std::min(end * kBitmapGrainBytes, options_.data_bytes) - offset});
    if (out.runs.size() == options_.out_of_sync_runs_max) {
      Emit(std::move(out));
      out = SendOutOfSync{};
    }
    first = end < bits ? bitmap_.FindNextSet(end) : bits;
  }
  out.last = true;
  Emit(std::move(out));
}

void Replica::PeerOutOfSync(const std::vector<OutOfSyncRun>& runs, bool last) {
  // The source sends its merged bitmap back: the target then knows every block it still lacks
  // (fast failback reads those from the source) and clears them as they land.
  const bool from_source = repl_ == ReplState::kSyncTarget;
  if (!Connected() || (repl_ != ReplState::kWFBitMapS && !from_source)) return;
  for (const OutOfSyncRun& run : runs) {
    if (run.length_bytes == 0 || run.offset_bytes >= options_.data_bytes ||
        run.length_bytes > options_.data_bytes - run.offset_bytes) {
      Emit(DropPeer{"the peer sent an out-of-sync run [" + std::to_string(run.offset_bytes) +
                        ", +" + std::to_string(run.length_bytes) + ") beyond the data (" +
                        std::to_string(options_.data_bytes) + " bytes)",
                    true});
      return;
    }
    bitmap_.SetRange(run.offset_bytes, run.length_bytes);
  }
  if (from_source) {
    bitmap_complete_ = bitmap_complete_ || last;
    return;
  }
  if (!last) return;
  const bool full = *awaiting_bitmap_full_;
  awaiting_bitmap_full_.reset();
  StartResyncAsSource(full);
}

void Replica::PeerDown(const std::string& reason) {
  const bool was_connected = Connected();
  peer_fenced_ = false;  // before the writes it did not confirm are settled below
  awaiting_bitmap_full_.reset();
  conn_ = standalone_ ? ConnState::kStandAlone : ConnState::kConnecting;
  const ReplState was = repl_;
  repl_ = ReplState::kOff;
  peer_.reset();
  if (!was_connected) return;
  Warn("lost the peer: " + reason);
  FinishPromotion(ENOTCONN,
                  "the connection to the peer was lost before it answered; a disconnected node "
                  "is promoted on its own: run 'replctl primary' again");
  // Every write the peer did not confirm may be missing there.
  bool marked = false;
  for (auto& [seq, id] : unconfirmed_) {
    Request& r = requests_.at(id);
    r.peer_gone = true;
    if (r.type == Request::Type::kWrite) MarkOutOfSync(r.offset, r.length);
    marked = marked || r.type == Request::Type::kWrite;
  }
  // The peer's disk cache may have lost what it confirmed since its last flush. The marks reach
  // the disk before those writes release their extents: a crash of this node (or a power loss
  // of both) then still resyncs them, from the bitmap once they have left the log.
  const bool persisted = SettleUnflushed(UINT64_MAX, /*durable=*/false);
  if (marked && !persisted) Emit(PersistBitmap{});
  barrier_seq_.reset();
  std::vector<RequestId> ids;
  for (auto& [seq, id] : unconfirmed_) ids.push_back(id);
  unconfirmed_.clear();
  for (RequestId id : ids) MaybeComplete(id);
  // Resync frames in flight stay out of sync (their bits were never cleared).
  resync_frames_.clear();
  csum_frames_.clear();
  differs_.reset();
  if (was == ReplState::kVerifyS && verify_) {
    verify_->running = false;
    Warn("online verify interrupted by the lost peer after " +
         FormatSizeBytes(verify_->done_bytes) + "; 'replctl verify' starts it again");
    Emit(PersistBitmap{});
  }
  for (auto it = resync_blocks_.begin(); it != resync_blocks_.end();) {
    it = it->second.read_done ? resync_blocks_.erase(it) : std::next(it);
  }
  FailRemoteReads();
  std::erase_if(peer_reads_, [](const auto& entry) { return !entry.second.started; });
  if (role_ == Role::kPrimary && !HasDisk()) PumpWrites();  // diskless: its waiting writes fail
  if (role_ == Role::kPrimary && md_.disk != DiskState::kUpToDate) {
    // A fast-failback Primary: its writes fail until the peer is back, so its data does not
    // move ahead of the peer's (no new generation).
    Warn(
        "the peer that serves this Primary's blocks not yet synced is gone: writes, flushes "
        "and reads of those blocks fail until it is back");
  } else if (role_ == Role::kPrimary && md_.ids.bitmap == 0 && md_.ids.current != 0) {
    // From here on this node's data moves ahead of the peer's: remember where the peer stood.
    md_.ids.bitmap = md_.ids.current;
    md_.primary_at_split = true;
    NewCurrentId();
    PersistMdNow();
  }
  if (was == ReplState::kSyncTarget) Warn("resync interrupted; this disk stays Inconsistent");
  // A Secondary's applies in flight finish locally; their acks have nowhere to go.
  peer_flushes_.clear();
  PumpWrites();
}

void Replica::PeerStateChanged(const PeerState& peer) {
  if (!Connected()) return;
  const bool resync_done = peer.resync_done && repl_ == ReplState::kSyncTarget;
  peer_ = peer;
  if (promotion_ && peer.role == Role::kPrimary) {
    FinishPromotion(EBUSY, "the peer became Primary before it answered");
  }
  if (repl_ == ReplState::kSyncSource && peer.disk == DiskState::kDiskless) {
    // The target's disk failed (a Primary goes on diskless, replica_diskless.cc): nothing to
    // sync to until it attaches one; the marks stay.
    Warn("the peer's disk failed: the resync to it stops; its blocks stay marked out of sync");
    repl_ = ReplState::kEstablished;
    differs_.reset();
    resync_pass_failed_bytes_ = resync_pass_read_failed_bytes_ = resync_failed_bytes_ = 0;
    resync_backoff_ticks_ = resync_retry_ticks_ = 0;
  }
  if (repl_ == ReplState::kSyncTarget) {
    // The largest the source reported: its State once it added our bitmap (an earlier one, sent
    // while it waited for it, is smaller; later ones shrink as the resync goes).
    resync_total_bytes_ = std::max(resync_total_bytes_, peer.out_of_sync_bytes);
  }
  if (resync_done) {
    // The source confirmed every block: our data is now its data.
    repl_ = ReplState::kEstablished;
    md_.ids.current = peer.ids.current;
    md_.ids.bitmap = 0;
    bitmap_.ClearRange(0, options_.data_bytes);
    Emit(PersistBitmap{});
    SetDisk(DiskState::kUpToDate);
    PersistMdNow();
    Info("resync finished: UpToDate");
    Emit(SendState{LocalState()});
  } else if (role_ == Role::kPrimary && !HasDisk()) {
    // A diskless Primary: the peer's data is the data, and a new generation of it too.
    FollowPeerGeneration(peer);
  } else if (peer.disk == DiskState::kUpToDate && peer.ids.current == md_.ids.current &&
             md_.ids.bitmap != 0 && repl_ == ReplState::kEstablished && bitmap_.CountSet() == 0) {
    // The peer caught up with us: forget where it stood.
    md_.ids.bitmap = 0;
    PersistMdNow();
  } else if (peer.role == Role::kPrimary && peer.disk == DiskState::kUpToDate &&
             role_ == Role::kSecondary && md_.disk == DiskState::kUpToDate &&
             peer.ids.current != md_.ids.current) {
    // The peer promoted while we were connected: follow its current id.
    md_.ids.current = peer.ids.current;
    PersistMdNow();
  }
  // The Primary's disk failed and it goes on through us.
  if (NewGenerationForDisklessPeer()) Emit(SendState{LocalState()});
}

// --- Secondary: the peer's writes ---

bool Replica::PeerData(uint64_t key, uint64_t seq, uint64_t offset, uint64_t length, WriteKind kind,
                       bool resync) {
  if (!Connected()) return false;
  if (applies_epoch_ != epoch_) {
    applies_epoch_ = epoch_;
    epoch_applies_ = 0;
  }
  if (epoch_applies_ >= options_.max_buffers) {
    // The peer sends at most max_buffers frames before they are confirmed. Only this
    // connection's count: an earlier one's applies still on a slow disk would otherwise drop
    // every new connection at once, in a loop of drops and reconnects.
    Emit(DropPeer{"the peer has more than max_buffers = " + std::to_string(options_.max_buffers) +
                      " writes in flight to this node; is its max_buffers larger?",
                  true});
    return false;
  }
  if (!HasDisk()) {
    // No disk to write to (failed, or a demoted diskless Primary): the sender marks the block.
    Emit(SendAck{AckKind::kWritten, seq, EIO});
    return false;
  }
  // A fast-failback Primary takes the resync's blocks, and only those.
  const bool writable = role_ != Role::kPrimary || (resync && repl_ == ReplState::kSyncTarget);
  if (!writable || offset + length > options_.data_bytes) {
    Emit(SendAck{AckKind::kWritten, seq, !writable ? EROFS : EINVAL});
    return false;
  }
  if (resync && role_ == Role::kPrimary && StaleResyncFrame(offset, length)) {
    // Older than a write of ours the peer has not confirmed: the source sends it again.
    Emit(SendAck{AckKind::kWritten, seq, EAGAIN});
    return false;
  }
  // A diskless Primary's write: this disk alone will have it.
  const bool diskless = !resync && PeerIsDisklessPrimary();
  if (diskless) MarkForDisklessPeer(offset, length);
  if (options_.protocol == Protocol::kB && !resync) Emit(SendAck{AckKind::kReceived, seq, 0});
  Apply a;
  a.seq = seq;
  a.epoch = epoch_;
  a.order = ++apply_counter_;
  a.offset = offset;
  a.length = length;
  a.kind = kind;
  a.resync = resync;
  a.diskless = diskless;
  REPLD_CHECK(applies_.emplace(key, a).second);
  apply_order_.emplace(a.order, key);
  ++epoch_applies_;
  if (kind == WriteKind::kData) counters_.received_bytes += length;
  PumpApplies();
  return true;
}

void Replica::PumpApplies() {
  // Frames are applied in parallel, except that a frame waits for every earlier frame it
  // overlaps: overlapping writes land in the order the Primary sent them.
  for (auto it = apply_order_.begin(); it != apply_order_.end(); ++it) {
    Apply& a = applies_.at(it->second);
    if (a.started) continue;
    bool blocked = false;
    for (auto e = apply_order_.begin(); e != it && !blocked; ++e) {
      const Apply& earlier = applies_.at(e->second);
      blocked = Overlaps(a.offset, a.length, earlier.offset, earlier.length);
    }
    // A sync source reading the range for the resync reads it whole before the write lands (the
    // target then knows a block read before its write as stale); a fast-failback Primary's own
    // write in flight lands first.
    for (const auto& [token, b] : resync_blocks_) {
      blocked = blocked || (!b.read_done && Overlaps(a.offset, a.length, b.offset, b.length));
    }
    for (const auto& [order, id] : local_writes_) {
      const Request& w = requests_.at(id);
      blocked = blocked || Overlaps(a.offset, a.length, w.offset, w.length);
    }
    if (blocked) continue;
    a.started = true;
    Emit(ApplyPeerWrite{it->second});
  }
}

void Replica::ApplyDone(uint64_t key, int error) {
  auto it = applies_.find(key);
  REPLD_CHECK(it != applies_.end() && it->second.started);
  const Apply a = it->second;
  applies_.erase(it);
  apply_order_.erase(a.order);
  if (a.epoch == applies_epoch_) --epoch_applies_;
  const uint64_t seq = a.seq;
  if (error == 0) {
    counters_.written_bytes += a.length;
    if (a.resync && repl_ == ReplState::kSyncTarget && a.epoch == epoch_) {
      // In sync here now (a block of an earlier connection may be older than what this one's
      // merged bitmap marked).
      resync_applied_bytes_ += a.length;
      bitmap_.ClearRange(a.offset, a.length);
    } else if (!a.resync && repl_ == ReplState::kSyncSource && a.epoch == epoch_ &&
               a.kind != WriteKind::kTrim) {
      // A fast-failback Primary's write: the blocks it covered whole now hold the same data
      // here and there, and need no resync (a block that keeps being written converges).
      bitmap_.ClearRange(a.offset, a.length);
    }
  } else {
    Warn("writing the peer's block at " + std::to_string(a.offset) + " failed: error " +
         std::to_string(error));
    // This block differs from the peer's: marked, so that a resync from the peer repairs it.
    // Not on a sync source (serving a fast-failback Primary): its mark would send its stale
    // block over the Primary's newer one. The Primary marks it, from the error ack.
    if (repl_ != ReplState::kSyncSource) bitmap_.SetRange(a.offset, a.length);
  }
  if (Connected() && a.epoch == epoch_) Emit(SendAck{AckKind::kWritten, seq, error});
  // A resync write that fails on a full disk, or under pass_on, leaves its block marked, and
  // the source tries it again in its next pass; anything else lost the peer's data here.
  const bool full = error == ENOSPC || error == EDQUOT;
  if (error != 0 && !(a.resync && (full || options_.on_io_error == OnIoError::kPassOn))) {
    LocalDiskFailed(std::string(a.resync ? "a resync write" : "a write of the peer's") +
                        " at byte " + std::to_string(a.offset) + " (" + std::to_string(a.length) +
                        " bytes)",
                    error);
  }
  PumpApplies();
  PumpPeerFlushes();
  if (!peer_reads_.empty()) PumpPeerReads();          // the peer's reads wait for its writes
  if (!waiting_.empty()) PumpWrites();                // promoted: writes may wait for this one
  if (repl_ == ReplState::kSyncSource) PumpResync();  // a resync read may wait for it
  if (repl_ == ReplState::kVerifyS) PumpVerify();     // a verify run may wait for it too
}

void Replica::PeerFlush(uint64_t seq) {
  if (!Connected()) return;
  peer_flushes_.push_back(seq);
  PumpPeerFlushes();
}

void Replica::PumpPeerFlushes() {
  if (peer_flush_running_ || peer_flushes_.empty()) return;
  const uint64_t seq = peer_flushes_.front();
  // Every frame before the barrier must have reached the disk.
  for (const auto& [key, a] : applies_) {
    if (a.epoch == epoch_ && a.seq < seq) return;
  }
  peer_flushes_.pop_front();
  peer_flush_running_ = true;
  const uint64_t token = next_token_++;
  peer_flush_tokens_.emplace(token, std::pair{seq, epoch_});
  Emit(SubmitFlush{token});
}

}  // namespace repld
