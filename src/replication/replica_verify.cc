// Digests instead of data: checksum resync (the source sends a block's digests; the target
// answers with the 4 KiB blocks that differ, and only those travel) and online verify (every
// block's digests; the blocks that differ are marked out of sync on both nodes). The digests
// themselves are the caller's (the daemon computes them where it reads); the core only decides.
#include <cerrno>

#include "common/check.h"
#include "common/units.h"
#include "replication/replica.h"

namespace repld {

Status Replica::StartVerify() {
  if (!Connected() || !peer_) {
    return Status::Invalid("not connected: verify compares this node's data with the peer's");
  }
  if (repl_ != ReplState::kEstablished) {
    return Status::Invalid(std::string("the pair is ") + ReplStateName(repl_) +
                           ": verify runs only between two in-sync nodes (wait for the resync)");
  }
  if (md_.disk != DiskState::kUpToDate || peer_->disk != DiskState::kUpToDate) {
    return Status::Invalid(std::string("verify needs both disks UpToDate; this one is ") +
                           DiskStateName(md_.disk) + ", the peer's " + DiskStateName(peer_->disk));
  }
  repl_ = ReplState::kVerifyS;
  verify_cursor_ = 0;
  verify_ = VerifyStatus{true, options_.data_bytes, 0, 0};
  Info("online verify started: comparing " + FormatSizeBytes(options_.data_bytes) +
       " with the peer");
  PumpVerify();
  return Status::Ok();
}

void Replica::PumpVerify() {
  if (repl_ != ReplState::kVerifyS || !Connected() || resync_paused_) return;
  const bool limited = ResyncRate() > 0;
  while (!ResyncWindowFull() && !CsumsWindowFull() && !PeerWindowFull() &&
         verify_cursor_ < options_.data_bytes) {
    if (limited && resync_budget_ <= 0) break;
    const uint64_t offset = verify_cursor_;
    const uint64_t length = std::min(options_.resync_block_bytes, options_.data_bytes - offset);
    if (ResyncReadMustWait(offset, length)) break;  // retried when that write completes
    verify_cursor_ += length;
    StartResyncRead(offset, length, /*csums=*/true, /*verify=*/true);
  }
  if (resync_blocks_.empty() && verify_cursor_ >= options_.data_bytes) FinishVerify();
}

void Replica::FinishVerify() {
  repl_ = ReplState::kEstablished;
  verify_->running = false;
  Emit(PersistBitmap{});
  if (verify_->differing_bytes == 0) {
    Info("online verify finished: " + FormatSizeBytes(verify_->done_bytes) +
         " compared, no difference");
  } else {
    Warn("online verify finished: " + FormatSizeBytes(verify_->differing_bytes) + " of " +
         FormatSizeBytes(verify_->done_bytes) +
         " differ and are marked out of sync on both nodes; 'replctl disconnect' then "
         "'replctl connect' resyncs them from the Primary");
  }
}

void Replica::PeerCsumReply(uint64_t seq, const std::vector<OutOfSyncRun>& differing, int error) {
  auto frame = csum_frames_.find(seq);
  if (frame == csum_frames_.end()) {
    Warn("peer answered digests " + std::to_string(seq) + ", which are not outstanding");
    return;
  }
  auto block = resync_blocks_.find(frame->second);
  REPLD_CHECK(block != resync_blocks_.end());
  const ResyncBlock b = block->second;
  csum_frames_.erase(frame);
  resync_blocks_.erase(block);
  for (const OutOfSyncRun& run : differing) {
    const uint64_t end = b.offset + b.length;
    if (run.offset_bytes < b.offset || run.offset_bytes >= end ||
        run.length_bytes > end - run.offset_bytes) {
      Emit(DropPeer{"the peer's digest answer names [" + std::to_string(run.offset_bytes) + ", +" +
                        std::to_string(run.length_bytes) + ") outside the block asked",
                    true});
      return;
    }
  }
  if (b.verify) {
    if (error != 0) {
      Warn("the peer could not verify the block at " + std::to_string(b.offset) + ": error " +
           std::to_string(error) + "; marked out of sync");
      bitmap_.SetRange(b.offset, b.length);
      verify_->differing_bytes += b.length;
    }
    for (const OutOfSyncRun& run : error == 0 ? differing : std::vector<OutOfSyncRun>{}) {
      bitmap_.SetRange(run.offset_bytes, run.length_bytes);
      verify_->differing_bytes += run.length_bytes;
    }
    verify_->done_bytes += b.length;
    PumpVerify();
    PumpWrites();
    return;
  }
  // Checksum resync: the equal blocks are in sync now; the others go as data.
  if (error != 0) {
    differs_->SetRange(b.offset, b.length);
  } else {
    uint64_t differing_bytes = 0;
    if (!b.dirtied) bitmap_.ClearRange(b.offset, b.length);  // else marked since the read
    for (const OutOfSyncRun& run : differing) {
      bitmap_.SetRange(run.offset_bytes, run.length_bytes);
      differs_->SetRange(run.offset_bytes, run.length_bytes);
      differing_bytes += run.length_bytes;
    }
    counters_.resync_equal_bytes += b.length - differing_bytes;
    // Equal in the peer's cache is not yet durable there: like a confirmed resync write, the
    // range is marked again if the peer is lost before a flush covers it.
    peer_unflushed_.push_back({seq, b.offset, b.length});
    last_resync_seq_ = std::max(last_resync_seq_, seq);
  }
  // The differing blocks are behind the cursor: PumpResync walks the bitmap again from the start
  // once it reaches the end.
  PumpResync();
  PumpWrites();
}

// --- The peer's side ---

bool Replica::PeerCsums(uint64_t key, uint64_t seq, uint64_t offset, uint64_t length, bool verify) {
  if (!Connected()) return false;
  if (length == 0 || offset >= options_.data_bytes || length > options_.data_bytes - offset) {
    Emit(SendCsumReply{seq, {}, EINVAL});
    return false;
  }
  csum_checks_.emplace(key, CsumCheck{seq, epoch_, verify});
  Emit(CompareCsums{key});
  return true;
}

void Replica::CsumsCompared(uint64_t key, const std::vector<OutOfSyncRun>& differing, int error) {
  auto it = csum_checks_.find(key);
  REPLD_CHECK(it != csum_checks_.end());
  const CsumCheck c = it->second;
  csum_checks_.erase(it);
  if (!Connected() || c.epoch != epoch_) return;
  if (c.verify && error == 0 && !differing.empty()) {
    for (const OutOfSyncRun& run : differing) bitmap_.SetRange(run.offset_bytes, run.length_bytes);
    Emit(PersistBitmap{});
  }
  Emit(SendCsumReply{c.seq, differing, error});
}

}  // namespace repld
