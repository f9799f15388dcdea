// The Primary's write path, roles and the basics of the state machine. The Secondary's side
// and the connection decision are in replica_peer.cc, resync in replica_resync.cc.
#include "replication/replica.h"

#include <cerrno>
#include <utility>

#include "common/check.h"
#include "common/status.h"

namespace repld {

Replica::Replica(ReplicaOptions options, MdState md, ActivityLog al, Bitmap bitmap)
    : options_(std::move(options)),
      md_(md),
      al_(std::move(al)),
      bitmap_(std::move(bitmap)),
      rng_(options_.seed ^ 0x9E3779B97F4A7C15ULL),
      dynamic_rate_(options_.controller.max_rate_bytes),
      resync_budget_(RateSliceBytes()) {
  if (md_.io_error) {
    disk_failure_ = DiskFailure{"an I/O, before this start (the metadata records it)", 0};
    if (md_.disk == DiskState::kUpToDate || md_.disk == DiskState::kFailed) {
      md_.disk = DiskState::kInconsistent;  // never trusted until a resync
    }
    // A whole resync from the peer: writes this disk missed while it was failed (a diskless
    // Primary's, served by the peer alone) are recorded nowhere else.
    bitmap_.SetRange(0, options_.data_bytes);
  }
  if (md_.primary) {
    // It was Primary and did not demote cleanly: the peer may lack any write of a hot extent.
    uint64_t marked = 0;
    for (uint32_t extent : al_.table()) {
      if (extent == kAlEmpty) continue;
      const uint64_t offset = uint64_t{extent} * kAlExtentBytes;
      if (offset >= options_.data_bytes) continue;
      const uint64_t length = std::min(kAlExtentBytes, options_.data_bytes - offset);
      bitmap_.SetRange(offset, length);
      ++marked;
    }
    Warn("this node was Primary and stopped without demoting (a crash): " + std::to_string(marked) +
         " activity log extent(s) marked out of sync");
    md_.primary = false;
    crashed_primary_ = true;
    Emit(PersistBitmap{});
    PersistMdNow();
  }
}

std::vector<Action> Replica::TakeActions() {
  std::vector<Action> out;
  out.swap(actions_);
  return out;
}

void Replica::TakeActions(std::vector<Action>& out) {
  out.clear();
  out.swap(actions_);
}

uint64_t Replica::NextRandom() {
  // splitmix64: deterministic from the seed, which the daemon draws from the system RNG.
  uint64_t z = (rng_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void Replica::NewCurrentId() {
  md_.ids.history[1] = md_.ids.history[0];
  md_.ids.history[0] = md_.ids.current;
  uint64_t id = 0;
  while (id == 0) id = NextRandom() & ~uint64_t{1};
  md_.ids.current = id;
}

void Replica::SetDisk(DiskState d) {
  if (md_.disk == d) return;
  Info(std::string("disk ") + DiskStateName(md_.disk) + " -> " + DiskStateName(d));
  md_.disk = d;
  if (d == DiskState::kUpToDate) {  // a resync repaired it (or the operator forced it)
    md_.io_error = false;
    disk_failure_.reset();
  }
  PersistMdNow();
}

PeerState Replica::LocalState() const {
  PeerState s;
  s.role = role_;
  s.disk = md_.disk;
  s.ids = md_.ids;
  s.data_bytes = options_.data_bytes;
  s.out_of_sync_bytes = bitmap_.OutOfSyncBytes();
  s.discard_my_data = discard_my_data_;
  s.primary_at_split = md_.primary_at_split && md_.ids.bitmap != 0;
  return s;
}

ReplicaStatus Replica::Report() const {
  ReplicaStatus s;
  s.role = role_;
  s.disk = md_.disk;
  s.conn = conn_;
  s.repl = repl_;
  s.peer = peer_;
  s.protocol = options_.protocol;
  s.counters = counters_;
  if (options_.quorum) {
    s.quorum = quorum_;
    s.peer_fenced = peer_fenced_;
    s.held_completions = held_.size();
    for (const auto& [id, r] : requests_) {
      s.waiting_for_fence += !r.completed && r.type != Request::Type::kRead && WaitsForFence(r);
    }
  }
  s.counters.al_writes = al_.transactions();
  uint64_t pending = 0;
  for (const auto& [id, r] : requests_) pending += r.completed ? 0 : 1;
  s.pending = pending;
  s.unacked = unconfirmed_.size() + resync_frames_.size();
  s.out_of_sync_bytes = bitmap_.OutOfSyncBytes();
  s.resync_total_bytes = resync_total_bytes_;
  if (repl_ == ReplState::kSyncSource) {
    s.resync_done_bytes = resync_total_bytes_ - std::min(s.out_of_sync_bytes, resync_total_bytes_);
  } else if (repl_ == ReplState::kSyncTarget) {
    s.resync_done_bytes = std::min(resync_applied_bytes_, resync_total_bytes_);
  }
  s.ids = md_.ids;
  s.sync_decision = last_decision_.text;
  s.resync_paused = resync_paused_;
  if (repl_ == ReplState::kSyncSource) {
    s.resync_failed_bytes = resync_failed_bytes_;
    s.resync_retry_seconds = resync_retry_ticks_;
  }
  s.resync_stopped_reason = resync_stopped_reason_;
  s.verify = verify_;
  s.disk_failure = disk_failure_;
  return s;
}

std::vector<uint32_t> Replica::ExtentsOf(uint64_t offset, uint64_t length) const {
  std::vector<uint32_t> out;
  if (length == 0) return out;
  for (uint64_t e = offset / kAlExtentBytes; e <= (offset + length - 1) / kAlExtentBytes; ++e) {
    out.push_back(static_cast<uint32_t>(e));
  }
  return out;
}

// --- Client requests ---

void Replica::ClientWrite(RequestId id, uint64_t offset, uint64_t length, WriteKind kind,
                          bool fua) {
  REPLD_CHECK(offset + length <= options_.data_bytes);
  app_bytes_since_tick_ += length;
  if (role_ != Role::kPrimary || (md_.disk != DiskState::kUpToDate && !PeerCanServe())) {
    Emit(Complete{id, role_ != Role::kPrimary ? EROFS : EIO});
    return;
  }
  Request r;
  r.offset = offset;
  r.length = length;
  r.kind = kind;
  r.fua = fua;
  requests_.emplace(id, r);
  waiting_.push_back(id);
  PumpWrites();
}

bool Replica::LocalConflict(uint64_t offset, uint64_t length) const {
  for (const auto& [order, other] : local_writes_) {
    const Request& o = requests_.at(other);
    if (Overlaps(offset, length, o.offset, o.length)) return true;
  }
  for (const auto& [token, b] : resync_blocks_) {
    if (!b.read_done && Overlaps(offset, length, b.offset, b.length)) return true;
  }
  // A Secondary promoted while the old Primary's last writes were still being applied: they
  // are older than any write of ours, so ours must land after them.
  for (const auto& [key, a] : applies_) {
    if (Overlaps(offset, length, a.offset, a.length)) return true;
  }
  return false;
}

void Replica::PumpWrites() {
  std::vector<uint32_t> wanted;
  size_t first_wanted = 0;  // how many of `wanted` the first cold write needs
  // Writes start in arrival order, except that a write may pass an earlier one it does not
  // overlap. A write that overlaps an earlier waiting one waits behind it.
  for (size_t i = 0; i < waiting_.size();) {
    const RequestId id = waiting_[i];
    Request& r = requests_.at(id);
    bool blocked = LocalConflict(r.offset, r.length);
    for (size_t j = 0; j < i && !blocked; ++j) {
      const Request& earlier = requests_.at(waiting_[j]);
      blocked = Overlaps(r.offset, r.length, earlier.offset, earlier.length);
    }
    if (!blocked && Connected() && PeerWindowFull()) {
      SendBarrier();
      break;  // backpressure: the peer must confirm before more writes start
    }
    if (!blocked) {
      const std::vector<uint32_t> extents = ExtentsOf(r.offset, r.length);
      bool hot = true;  // a diskless Primary has no activity log to keep
      for (uint32_t e : extents) hot = hot && (!HasDisk() || al_.IsHot(e));
      // A cold write wants its hot extents too: the plan must not evict one to make room for
      // another (two writes' plans would then evict each other's extents for ever).
      if (!hot) wanted.insert(wanted.end(), extents.begin(), extents.end());
      if (!hot && first_wanted == 0) first_wanted = wanted.size();
      if (hot) {
        waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
        StartWrite(id, r);
        continue;
      }
    }
    ++i;
  }
  if (!wanted.empty() && !al_writing_) {
    al_plan_ = al_.Plan(wanted);
    // All the cold extents at once may not fit in the idle slots: then the first cold write's
    // alone, so that writes keep moving (the rest follow as transactions complete).
    if (!al_plan_ && first_wanted < wanted.size()) {
      al_plan_ = al_.Plan(std::span<const uint32_t>(wanted.data(), first_wanted));
    }
    if (al_plan_) {
      al_writing_ = true;
      Emit(WriteAl{*al_plan_});
    } else {
      // Every slot is held, some maybe by writes waiting for a peer flush: ask for one now
      // rather than at the next Tick (its ack calls PumpWrites again).
      SendBarrier();
    }
  }
}

void Replica::AlWritten(uint64_t seq, int error) {
  REPLD_CHECK(al_writing_ && al_plan_ && al_plan_->seq == seq);
  al_writing_ = false;
  if (error != 0 && PrimaryDetaches() && PrimaryDiskFailed("writing the activity log", error)) {
    al_.Abandon();  // the writes that waited for it go to the peer alone (PrimaryDiskFailed)
    al_plan_.reset();
    PumpWrites();
    return;
  }
  if (error != 0) {
    al_.Abandon();
    al_plan_.reset();
    // Without the activity log entry a crash could lose track of these writes: fail them.
    Warn("activity log write failed (error " + std::to_string(error) +
         "): failing the writes that needed it");
    for (size_t i = 0; i < waiting_.size();) {
      const RequestId id = waiting_[i];
      const Request& r = requests_.at(id);
      bool cold = false;
      for (uint32_t e : ExtentsOf(r.offset, r.length)) cold = cold || !al_.IsHot(e);
      if (cold) {
        waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
        requests_.erase(id);
        Emit(Complete{id, EIO});
        continue;
      }
      ++i;
    }
  } else {
    al_.Commit(*al_plan_);
    al_plan_.reset();
  }
  PumpWrites();
}

void Replica::StartWrite(RequestId id, Request& r) {
  if (HasDisk()) {
    for (uint32_t e : ExtentsOf(r.offset, r.length)) al_.Ref(e);
    r.started = ++start_counter_;
    local_writes_.emplace(r.started, id);
    Emit(SubmitWrite{id});
  } else {
    r.local_done = true;  // a diskless Primary: the peer's write is the only one
  }
  if (!HasDisk() && !Connected()) {
    // Nothing will answer it (no local write, no peer): it fails now (MaybeComplete, EIO).
    r.peer_gone = true;
    MaybeComplete(id);
    return;
  }
  if (Connected()) {
    r.sent = true;
    r.seq = next_seq_++;
    unconfirmed_.emplace(r.seq, id);
    Emit(SendData{r.seq, id});
    if (r.kind == WriteKind::kData) counters_.sent_bytes += r.length;
  } else {
    r.peer_gone = true;
    MarkOutOfSync(r.offset, r.length);
  }
}

void Replica::LocalWriteDone(RequestId id, int error) {
  auto it = requests_.find(id);
  REPLD_CHECK(it != requests_.end() && it->second.started && !it->second.local_done);
  Request& r = it->second;
  r.local_done = true;
  r.local_error = error;
  local_writes_.erase(r.started);
  if (error != 0 && PrimaryDetaches()) {
    PrimaryDiskFailed("writing the client's block at " + std::to_string(r.offset) + " (+" +
                          std::to_string(r.length) + ")",
                      error);
  }
  if (error != 0 && !HasDisk() && r.sent && !r.peer_gone && PeerCanServe()) {
    r.local_error = 0;  // the peer's write decides (MaybeComplete): it is the data now
  }
  if (error != 0) {
    // The local disk failed this write; the peer may have it. The block differs: mark it.
    MarkOutOfSync(r.offset, r.length);
    Warn("local write at " + std::to_string(r.offset) + " failed: error " + std::to_string(error));
  } else {
    counters_.written_bytes += r.length;
  }
  MaybeComplete(id);
  PumpWrites();
  PumpResync();
  if (!applies_.empty()) PumpApplies();  // a fast-failback Primary's resync block may wait for it
}

void Replica::MaybeComplete(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  Request& r = it->second;
  // A fast-failback Primary's own disk does not count yet: its writes and flushes are done when
  // the peer's are, whatever the protocol, and fail if the peer leaves first.
  const bool peer_counts = md_.disk != DiskState::kUpToDate;
  if (!r.completed) {
    bool done = false;
    if (r.type == Request::Type::kWrite) {
      const bool peer_ok =
          !r.sent || r.peer_gone || (options_.protocol == Protocol::kA && r.handed) ||
          (options_.protocol == Protocol::kB && (r.received || r.written)) || r.written;
      done = r.local_done && (peer_counts ? r.written || r.peer_gone : peer_ok);
    } else if (r.type == Request::Type::kFlush) {
      // Under C a flush also waits for the peer's flush; under A and B the peer flushes on
      // its own time. A peer flush that failed still completes it with the local result, as
      // DRBD does: the writes it covered are marked out of sync (PeerAck) and resynced, and the
      // data is durable here.
      const bool peer_ok = !r.sent || r.peer_gone || options_.protocol != Protocol::kC || r.written;
      done = r.local_done && (peer_counts ? r.written || r.peer_gone || !r.sent : peer_ok);
    }
    int error = r.local_error;
    if (error == 0 && peer_counts && (r.peer_gone || r.peer_failed || !r.sent)) error = EIO;
    if (done && error == 0 && WaitsForFence(r)) done = false;  // PeerFenced() comes back here
    if (done) {
      r.completed = true;
      Emit(Complete{id, error});
    }
  }
  const bool peer_settled = !r.sent || r.peer_gone || r.written;
  if (!r.completed || !peer_settled) return;
  if (r.type == Request::Type::kWrite && r.kind != WriteKind::kTrim &&
      repl_ == ReplState::kSyncTarget && r.written && !r.peer_failed && r.local_error == 0) {
    // Fast failback: the blocks this write covered whole now hold the same data on both nodes
    // (a trim's blocks read as whatever each disk makes of it: they stay marked).
    bitmap_.ClearRange(r.offset, r.length);
  }
  if (r.type == Request::Type::kWrite && r.started != 0) KeepOrReleaseAl(r);
  Forget(id);
}

// The extents stay hot until the peer has the write on its disk, not only in its cache (a peer
// flush covered it), or the bitmap marks the write: a crash of this node (or of both) before
// that may leave the block different on the two disks, and only the log's extents and the
// bitmap are resynced after it. A marked write's extents may go at once: WriteAl writes the
// dirty bitmap pages before a transaction that evicts them.
void Replica::KeepOrReleaseAl(const Request& r) {
  if (r.written && !r.peer_failed) {
    // Its entry is near the back (acks come roughly in order); none: flushed or marked since.
    for (auto u = peer_unflushed_.rbegin(); u != peer_unflushed_.rend(); ++u) {
      if (u->seq == r.seq) {
        u->holds_al = true;
        return;
      }
    }
  }
  for (uint32_t e : ExtentsOf(r.offset, r.length)) al_.Unref(e);
}

void Replica::Forget(RequestId id) { requests_.erase(id); }

void Replica::ClientFlush(RequestId id) {
  if (role_ == Role::kPrimary && md_.disk != DiskState::kUpToDate && !PeerCanServe()) {
    Emit(Complete{id, EIO});  // the completed writes are on the peer, which is gone
    return;
  }
  Request r;
  r.type = Request::Type::kFlush;
  r.local_done = !HasDisk();  // a diskless Primary: the peer's flush is the only one
  if (!r.local_done) {
    r.token = next_token_++;
    flush_tokens_.emplace(r.token, id);
  }
  if (Connected()) {
    r.sent = true;
    r.seq = next_seq_++;
    unconfirmed_.emplace(r.seq, id);
    Emit(SendFlush{r.seq});
  }
  requests_.emplace(id, r);
  if (!r.local_done) Emit(SubmitFlush{r.token});
}

void Replica::LocalFlushDone(uint64_t token, int error) {
  if (auto pf = peer_flush_tokens_.find(token); pf != peer_flush_tokens_.end()) {
    const auto [seq, epoch] = pf->second;
    peer_flush_tokens_.erase(pf);
    peer_flush_running_ = false;
    if (Connected() && epoch == epoch_) Emit(SendAck{AckKind::kFlushed, seq, error});
    // The writes the flush was to make durable may be lost: this disk is not UpToDate.
    if (error != 0) LocalDiskFailed("flushing the peer's writes", error);
    PumpPeerFlushes();
    return;
  }
  auto ft = flush_tokens_.find(token);
  REPLD_CHECK(ft != flush_tokens_.end());
  const RequestId id = ft->second;
  flush_tokens_.erase(ft);
  Request& r = requests_.at(id);
  r.local_done = true;
  r.local_error = error;
  if (error != 0 && PrimaryDetaches() && PrimaryDiskFailed("flushing", error) && r.sent &&
      !r.peer_gone) {
    r.local_error = 0;  // the peer's flush decides: every write it covers is on the peer
  }
  MaybeComplete(id);
}

// --- Peer acknowledgements on the Primary ---

void Replica::PeerSent(uint64_t seq) {
  auto it = unconfirmed_.find(seq);
  if (it == unconfirmed_.end()) return;
  requests_.at(it->second).handed = true;
  MaybeComplete(it->second);
}

void Replica::SendBarrier() {
  if (barrier_seq_ || !Connected() || peer_unflushed_.empty()) return;
  ticks_since_barrier_ = 0;
  barrier_seq_ = next_seq_++;
  Emit(SendFlush{*barrier_seq_});
}

void Replica::Tick() {
  // A resync's blocks need no flush per second: a barrier in mid-stream costs the target a
  // journal commit while its writes wait. One every kResyncBarrierTicks, or once
  // kResyncUnflushedBytesMax are unflushed (what a target crash would send again), is enough.
  PassOnReconnect();
  ++ticks_since_barrier_;
  if (repl_ != ReplState::kSyncSource || ticks_since_barrier_ >= kResyncBarrierTicks ||
      UnflushedBytes() >= kResyncUnflushedBytesMax) {
    SendBarrier();
  }
  StepController();
  if (resync_retry_ticks_ > 0) --resync_retry_ticks_;  // PumpResync below starts the pass at 0
  RefillResyncBudget();
}

void Replica::PeerFlushed(uint64_t seq) { SettleUnflushed(seq, /*durable=*/true); }

bool Replica::SettleUnflushed(uint64_t before_seq, bool durable) {
  // Acks arrive in the order the peer's disk finished, not in seq order: filter them all.
  bool marked = false;
  if (!durable) {
    for (const Unflushed& u : peer_unflushed_) {
      if (u.seq >= before_seq) continue;
      MarkOutOfSync(u.offset, u.length);
      marked = true;
    }
    // On disk before any of their extents leaves the log (and whatever else happens next).
    if (marked) Emit(PersistBitmap{});
  }
  std::erase_if(peer_unflushed_, [&](const Unflushed& u) {
    if (u.seq >= before_seq) return false;
    if (u.holds_al) {
      for (uint32_t e : ExtentsOf(u.offset, u.length)) al_.Unref(e);
    }
    return true;
  });
  if (role_ != Role::kPrimary && md_.primary && peer_unflushed_.empty()) {
    md_.primary = false;  // demoted, and the peer has (or the bitmap marks) every write of ours
    PersistMdNow();
  }
  return marked;
}

void Replica::PeerAck(AckKind kind, uint64_t seq, int error) {
  // A failed flush (a barrier or a client's) may have lost any write it covered on the peer:
  // those are marked (and the bitmap persisted) and leave the list unflushed, so that no later
  // flush counts them as durable there.
  if (kind == AckKind::kFlushed && error == 0) PeerFlushed(seq);
  if (kind == AckKind::kFlushed && error != 0) SettleUnflushed(seq, /*durable=*/false);
  if (barrier_seq_ && *barrier_seq_ == seq) {
    if (kind == AckKind::kReceived) return;
    barrier_seq_.reset();
    if (error != 0) Warn("the peer's flush failed: error " + std::to_string(error));
    PumpWrites();
    PumpResync();
    return;
  }
  if (auto rs = resync_frames_.find(seq); rs != resync_frames_.end()) {
    const uint64_t token = rs->second;
    if (kind == AckKind::kReceived) return;
    resync_frames_.erase(rs);
    auto block = resync_blocks_.find(token);
    REPLD_CHECK(block != resync_blocks_.end());
    if (error == 0) {
      if (!block->second.dirtied) bitmap_.ClearRange(block->second.offset, block->second.length);
      counters_.resync_bytes += block->second.length;
      peer_unflushed_.push_back({seq, block->second.offset, block->second.length});
    } else if (error != EAGAIN) {
      // (EAGAIN: stale on a fast-failback Primary, and sent again.) A failed write is logged
      // for the pass's first failure; EndResyncPass sums up the rest.
      if (resync_pass_failed_bytes_ == 0) {
        Warn("the peer failed resync block at " + std::to_string(block->second.offset) +
             ": error " + std::to_string(error) + " (" + ErrnoText(error) +
             "); it stays out of sync");
      }
      resync_pass_failed_bytes_ += block->second.length;
      resync_pass_error_ = error;
    }
    resync_blocks_.erase(block);
    PumpResync();
    PumpWrites();
    return;
  }
  auto it = unconfirmed_.find(seq);
  if (it == unconfirmed_.end()) {
    Warn("peer acknowledged frame " + std::to_string(seq) + ", which is not outstanding");
    return;
  }
  const RequestId id = it->second;
  Request& r = requests_.at(id);
  if (kind == AckKind::kReceived) {
    r.received = true;
  } else {
    r.written = true;
    r.peer_failed = error != 0;
    unconfirmed_.erase(it);
    if (error == 0 && r.type == Request::Type::kWrite) {
      peer_unflushed_.push_back({seq, r.offset, r.length});
    }
    if (error != 0) {
      if (r.type == Request::Type::kWrite) MarkOutOfSync(r.offset, r.length);
      Warn("peer failed frame " + std::to_string(seq) + ": error " + std::to_string(error) +
           "; marked out of sync");
    }
  }
  MaybeComplete(id);
  PumpWrites();
}

// --- Roles ---

Status Replica::Demote(uint32_t open_clients) {
  if (role_ == Role::kSecondary) return Status::Ok();
  if (open_clients > 0) {
    return Status::Invalid(std::to_string(open_clients) +
                           " client(s) have the device open; unmount / disconnect them first");
  }
  if (!requests_.empty() || !waiting_.empty()) {
    return Status::Invalid("requests are still in flight; try again");
  }
  role_ = Role::kSecondary;
  // Completions held for quorum: demoted without it, they fail (the data may not survive).
  for (const RequestId id : std::exchange(held_, {})) Emit(Complete{id, EIO});
  // The metadata's "Primary" flag makes a crash resync the log's extents. While the peer's cache
  // may still lose writes of ours (no flush covered them yet), a power loss of both nodes must
  // still do so: the flag stays until a barrier covers them or the bitmap marks them.
  if (Connected() && !peer_unflushed_.empty()) {
    SendBarrier();
  } else {
    md_.primary = false;
  }
  Emit(PersistBitmap{});
  PersistMdNow();
  Info("role Primary -> Secondary");
  if (Connected()) Emit(SendState{LocalState()});
  return Status::Ok();
}

void Replica::Shutdown() {
  Emit(PersistBitmap{});
  md_.primary = false;
  PersistMdNow();
}

}  // namespace repld
