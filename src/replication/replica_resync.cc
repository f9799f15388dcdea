// Resync, SyncSource side: the blocks marked in the bitmap are read locally and sent to the peer
// in order, a bounded window at a time; a block's bits clear when the peer confirms its write.
// Application writes that overlap a block being read wait for it (and the other way round), so
// the peer receives them in the order they hit this disk.
#include <algorithm>

#include "common/check.h"
#include "common/status.h"
#include "common/units.h"
#include "replication/replica.h"

namespace repld {

void Replica::StartResyncAsSource(bool full) {
  if (full) bitmap_.SetRange(0, options_.data_bytes);
  if (options_.resync_checksums) differs_.emplace(options_.data_bytes);
  repl_ = ReplState::kSyncSource;
  resync_cursor_bit_ = 0;
  resync_pass_failed_bytes_ = resync_failed_bytes_ = resync_pass_read_failed_bytes_ = 0;
  resync_read_failed_passes_ = 0;
  resync_stopped_reason_.clear();
  resync_backoff_ticks_ = resync_retry_ticks_ = 0;
  resync_total_bytes_ = bitmap_.OutOfSyncBytes();
  // What this disk sends must be durable here before the target's confirmations clear its
  // marks: blocks still in this disk's cache, written through it for a peer that kept no record
  // of them (a diskless Primary's writes, once its device is gone), would otherwise be lost by a
  // crash of this node with nothing left to say the two disks differ.
  Emit(SyncDisk{"flushing before a resync from this disk"});
  Emit(PersistBitmap{});
  SendOurBitmap();  // the merged bitmap: the target learns every block it lacks
  Info(std::string(full ? "full" : "bitmap") +
       " resync to the peer: " + std::to_string(resync_total_bytes_) + " bytes");
  Emit(SendState{LocalState()});  // the target learns the total from our out-of-sync bytes
  PumpResync();
}

void Replica::PumpResync() {
  if (repl_ == ReplState::kVerifyS) return PumpVerify();
  if (repl_ != ReplState::kSyncSource || !Connected() || resync_paused_) return;
  if (resync_retry_ticks_ > 0) return;  // Tick counts it down
  const bool limited = ResyncRate() > 0;
  const uint64_t grain = kBitmapGrainBytes;
  const uint64_t bits = bitmap_.bit_count();
  const uint64_t max_bits = options_.resync_block_bytes / grain;
  while (!ResyncWindowFull() && !PeerWindowFull()) {
    if (limited && resync_budget_ <= 0) break;  // Tick gives more
    const uint64_t first = bitmap_.FindNextSet(resync_cursor_bit_);
    if (first >= bits) break;
    // With checksums, a run is either blocks not compared yet (digests go first) or blocks the
    // peer said differ (their data goes).
    const bool csums = differs_ && !differs_->Test(first);
    if (csums && CsumsWindowFull()) break;  // a digest reply frees a place
    auto same_kind = [&](uint64_t bit) { return !differs_ || differs_->Test(bit) != csums; };
    uint64_t last = first;
    while (last + 1 < bits && last + 1 - first < max_bits && bitmap_.Test(last + 1) &&
           same_kind(last + 1)) {
      ++last;
    }
    const uint64_t offset = first * grain;
    const uint64_t length = std::min((last + 1) * grain, options_.data_bytes) - offset;
    if (ResyncReadMustWait(offset, length)) break;  // retried when that write completes
    resync_cursor_bit_ = last + 1;
    StartResyncRead(offset, length, csums, /*verify=*/false);
  }
  if (PeerWindowFull())
    SendBarrier();  // confirmed blocks wait for a peer flush to leave the window
  if (resync_blocks_.empty() && bitmap_.FindNextSet(resync_cursor_bit_) >= bits) {
    if (bitmap_.CountSet() > 0) {
      // Blocks failed or were marked again behind the cursor: another pass, at once, or later
      // if the peer failed some of this one's.
      resync_cursor_bit_ = 0;
      if (EndResyncPass()) return;
      if (bitmap_.FindNextSet(0) < bits) {
        PumpResync();
        return;
      }
    }
    FinishResync();
  }
}

void Replica::MarkOutOfSync(uint64_t offset, uint64_t length) {
  bitmap_.SetRange(offset, length);
  // A block read before this mark (a write that failed or was lost after the read) must not
  // clear it when the peer confirms the block or finds it equal.
  for (auto& [token, b] : resync_blocks_) {
    if (Overlaps(offset, length, b.offset, b.length)) b.dirtied = true;
  }
}

// At the end of a pass with blocks left: true if the peer failed some of this pass's, or this
// node failed to read some, and the next pass then waits for Tick (1, 2, 4 ...
// kResyncRetryTicksMax seconds, reset by a pass without failures); true too when read errors
// stopped the resync.
bool Replica::EndResyncPass() {
  const bool read_failed = resync_pass_read_failed_bytes_ > 0;
  resync_read_failed_passes_ = read_failed ? resync_read_failed_passes_ + 1 : 0;
  if (resync_pass_failed_bytes_ == 0 && !read_failed) {
    resync_backoff_ticks_ = 0;
    resync_failed_bytes_ = 0;
    return false;
  }
  if (resync_read_failed_passes_ >= kResyncReadFailedPassesMax) {
    StopResync();
    return true;
  }
  resync_backoff_ticks_ =
      std::min(resync_backoff_ticks_ == 0 ? 1 : resync_backoff_ticks_ * 2, kResyncRetryTicksMax);
  resync_retry_ticks_ = resync_backoff_ticks_;
  resync_failed_bytes_ = resync_pass_failed_bytes_;
  const std::string next = "the next pass starts in " + std::to_string(resync_retry_ticks_) + " s";
  if (resync_pass_failed_bytes_ > 0) {
    Warn("the peer failed to write " + FormatSizeBytes(resync_pass_failed_bytes_) +
         " of resync blocks in this pass (error " + std::to_string(resync_pass_error_) + ": " +
         ErrnoText(resync_pass_error_) + "); they stay out of sync, and " + next);
  }
  if (read_failed) {
    Warn("reading " + FormatSizeBytes(resync_pass_read_failed_bytes_) +
         " of resync blocks failed on this node in this pass (first: " + resync_pass_read_error_ +
         "); " + next + " (failed pass " + std::to_string(resync_read_failed_passes_) + " of " +
         std::to_string(kResyncReadFailedPassesMax) + " before the resync stops)");
  }
  resync_pass_failed_bytes_ = resync_pass_read_failed_bytes_ = 0;
  return true;
}

// A local read error on the sync source: the block stays marked and the pass goes on (the other
// blocks may read fine); EndResyncPass counts the pass as failed.
void Replica::ResyncReadFailed(const ResyncBlock& b, int error) {
  if (resync_pass_read_failed_bytes_ == 0) {
    resync_pass_read_error_ = "[" + std::to_string(b.offset) + ", +" + std::to_string(b.length) +
                              "): error " + std::to_string(error) + " (" + ErrnoText(error) + ")";
    Warn("reading block " + resync_pass_read_error_ +
         " for the resync failed; it stays out of sync and the pass goes on");
  }
  resync_pass_read_failed_bytes_ += b.length;
}

// Read errors pass after pass: retrying for ever would only fill the log. The peer stays
// Inconsistent (it never gets resync_done); the operator repairs or replaces this disk, then a
// disconnect and connect starts the resync again.
void Replica::StopResync() {
  resync_stopped_reason_ =
      "reading this node's disk failed in " + std::to_string(resync_read_failed_passes_) +
      " resync passes in a row (the last pass's first failure: " + resync_pass_read_error_ + ")";
  Emit(Log{2, "resync stopped: " + resync_stopped_reason_ +
                  "; the peer stays Inconsistent. Check this disk, then 'replctl disconnect' and "
                  "'replctl connect' start the resync again"});
  repl_ = ReplState::kEstablished;
  differs_.reset();
  resync_pass_failed_bytes_ = resync_pass_read_failed_bytes_ = resync_failed_bytes_ = 0;
  resync_backoff_ticks_ = resync_retry_ticks_ = 0;
}

void Replica::SetResyncTunables(uint64_t rate_bytes, const ResyncController& controller,
                                bool checksums) {
  options_.resync_rate_bytes = rate_bytes;
  options_.resync_checksums = checksums;
  if (!(controller == options_.controller)) {
    options_.controller = controller;
    dynamic_rate_ = controller.max_rate_bytes;  // as at start: the controller learns again
    quiet_ticks_ = 0;
  }
  // A lower rate starts from an empty slice; a higher one (or none) at the next slice.
  resync_budget_ = std::min<int64_t>(resync_budget_, RateSliceBytes());
  PumpResync();  // no limit any more: at once
}

// A slice's worth of budget; an overdraft (the last block of a slice may overshoot) is paid
// back first, so the average stays at the rate. Unused budget does not pile up.
void Replica::RefillResyncBudget() {
  const int64_t slice = RateSliceBytes();
  if (slice == 0) {
    resync_budget_ = 0;
    PumpResync();  // the controller may just have lifted the limit
    return;
  }
  resync_budget_ = std::min(resync_budget_ + slice, slice);
  PumpResync();
}

void Replica::RateSlice() { RefillResyncBudget(); }

int64_t Replica::RateSliceBytes() const {
  const uint64_t rate = ResyncRate();
  if (rate == 0) return 0;
  const uint64_t slices = std::max<uint32_t>(options_.rate_slices_per_tick, 1);
  return static_cast<int64_t>(std::max<uint64_t>(rate / slices, 1));
}

uint64_t Replica::ResyncRate() const {
  return options_.controller.plan_ahead_ticks == 0 ? options_.resync_rate_bytes : dynamic_rate_;
}

void Replica::StepController() {
  const ResyncController& c = options_.controller;
  const bool app_active = app_bytes_since_tick_ > 0;
  app_bytes_since_tick_ = 0;
  if (c.plan_ahead_ticks == 0) return;
  if (app_active) {
    quiet_ticks_ = 0;
    dynamic_rate_ = c.min_rate_bytes;
    resync_budget_ = std::min<int64_t>(resync_budget_, 0);  // no burst left from a quiet second
    return;
  }
  ++quiet_ticks_;
  if (quiet_ticks_ >= c.plan_ahead_ticks || dynamic_rate_ == 0) {
    dynamic_rate_ = c.max_rate_bytes;
  } else {
    dynamic_rate_ = std::max(dynamic_rate_ * 2, c.min_rate_bytes);
    if (c.max_rate_bytes > 0) dynamic_rate_ = std::min(dynamic_rate_, c.max_rate_bytes);
  }
}

// A resync or verify read waits for overlapping writes in flight or queued: the peer must
// receive both in the order they hit this disk.
bool Replica::ResyncReadMustWait(uint64_t offset, uint64_t length) const {
  if (LocalConflict(offset, length)) return true;
  for (RequestId id : waiting_) {
    const Request& r = requests_.at(id);
    if (Overlaps(offset, length, r.offset, r.length)) return true;
  }
  return false;
}

void Replica::StartResyncRead(uint64_t offset, uint64_t length, bool csums, bool verify) {
  const uint64_t token = next_token_++;
  resync_blocks_.emplace(token, ResyncBlock{offset, length, false, csums, verify});
  if (ResyncRate() > 0) resync_budget_ -= static_cast<int64_t>(length);
  Emit(ResyncRead{token, offset, length, csums});
}

bool Replica::CsumsWindowFull() const {
  uint32_t in_flight = 0;
  for (const auto& [token, b] : resync_blocks_) in_flight += b.csums ? 1 : 0;
  return in_flight >= options_.csums_window;
}

// resync_window blocks in flight, or, with c_fill_target, that many bytes instead.
bool Replica::ResyncWindowFull() const {
  if (options_.controller.fill_target_bytes == 0) {
    return resync_blocks_.size() >= options_.resync_window;
  }
  uint64_t in_flight = 0;
  for (const auto& [token, b] : resync_blocks_) in_flight += b.length;
  return in_flight >= options_.controller.fill_target_bytes;
}

Status Replica::PauseResync(bool pause) {
  if (pause == resync_paused_) return Status::Ok();
  if (pause && repl_ == ReplState::kSyncTarget) {
    return Status::Invalid(
        "this node is the sync target; pause the resync on the sync source (the peer)");
  }
  resync_paused_ = pause;
  Info(pause ? "resync paused by the operator" : "resync resumed by the operator");
  if (!pause) PumpResync();
  return Status::Ok();
}

void Replica::ResyncReadDone(uint64_t token, int error) {
  SendResyncBlock(token, error);
  // The peer's writes to the range wait for the read (a fast-failback Primary's): they land
  // after the block went out, so the peer can tell the block is older than them.
  if (!applies_.empty()) PumpApplies();
}

void Replica::SendResyncBlock(uint64_t token, int error) {
  auto it = resync_blocks_.find(token);
  REPLD_CHECK(it != resync_blocks_.end());
  if (error != 0 || !Connected()) {
    const bool resync = error != 0 && !it->second.verify && repl_ == ReplState::kSyncSource;
    if (error != 0 && it->second.verify) {
      Warn("reading block at " + std::to_string(it->second.offset) +
           " for the verify failed: error " + std::to_string(error) + "; the verify stops");
      if (verify_) verify_->running = false;
      repl_ = ReplState::kEstablished;
    } else if (resync) {
      ResyncReadFailed(it->second, error);
    }
    resync_blocks_.erase(it);
    PumpWrites();
    if (resync) PumpResync();  // the next blocks, or the end of the pass
    return;
  }
  it->second.read_done = true;
  const uint64_t seq = next_seq_++;
  if (it->second.csums) {
    csum_frames_.emplace(seq, token);
    Emit(SendCsums{seq, token, it->second.verify});
    PumpWrites();
    return;
  }
  resync_frames_.emplace(seq, token);
  last_resync_seq_ = seq;
  Emit(SendResync{seq, token});
  counters_.sent_bytes += it->second.length;
  PumpWrites();
}

void Replica::FinishResync() {
  // The target becomes UpToDate on our word: its copy must be durable first.
  for (const Unflushed& u : peer_unflushed_) {
    if (u.seq <= last_resync_seq_) {
      SendBarrier();
      return;
    }
  }
  repl_ = ReplState::kEstablished;
  differs_.reset();
  // The bitmap id stays until the peer says it is UpToDate with our current id: if the
  // connection breaks before that, the next handshake must still see where the peer stands.
  Emit(PersistBitmap{});
  Info("resync finished: the peer is UpToDate");
  PeerState s = LocalState();
  s.resync_done = true;
  Emit(SendState{s});
}

}  // namespace repld
