// Phase 7 of a world: fast failback. After the split brain is resolved, the victim falls behind
// (the survivor writes while they are apart, or the victim is invalidated), the survivor steps
// down, and the victim is promoted the moment it becomes the sync target. Its client then reads
// and writes while the resync runs, through link cuts: every read must return what was last
// acknowledged (the blocks it lacks come from the peer), and when the pair is in sync again both
// disks must hold every acknowledged write.
#include <algorithm>

#include "sim_world.h"

namespace repld::sim {

void World::FastFailback() {
  const int t = victim_, u = 1 - victim_;
  const Node& tn = NodeAt(t);
  std::string how;
  if (!MakeTarget(t, how)) return;
  auto ready = [&] {
    const ReplicaStatus s = tn.core().Report();
    return connected_ && s.repl == ReplState::kSyncTarget && s.peer &&
           s.peer->role == Role::kSecondary && s.peer->disk == DiskState::kUpToDate;
  };
  RunUntil(now_ + 5'000'000, ready);
  if (!failure_.empty()) return;
  if (!ready()) return Fail("node" + std::to_string(t) + " did not become the sync target");
  if (Status st = PromoteNow(t, false); !st.ok()) {
    return Fail("fast failback: promoting the sync target failed: " + st.message());
  }
  // The survivor's disk is the truth from here; the client writes and reads on the victim.
  known_max_ = NodeAt(u).disk.cache;
  failed_max_.assign(blocks_, 0);
  reads_on_ = true;
  client_node_ = t;
  client_on_ = true;
  ClientIssue();
  const Clock end = now_ + Rand(20'000, 80'000);
  if (Chance(0.5)) {
    CutLink(now_ + Rand(1'000, 15'000), Rand(1'000, 20'000), "link cut during fast failback");
  }
  RunUntil(end);
  client_on_ = false;
  RunUntil(now_ + 100'000, [&] { return client_inflight_ == 0; });
  if (!failure_.empty()) return;
  if (client_inflight_ != 0) return Fail("fast failback: the client's requests did not finish");
  link_up_ = true;
  if (!connected_ && !connect_pending_) TryConnect();
  CheckFailbackData(t, how);
}

// The victim (a connected Secondary) falls behind the survivor, which ends up Secondary too.
bool World::MakeTarget(int target, std::string& how) {
  const int u = 1 - target;
  if (Chance(0.5)) {
    how = "a bitmap resync";
    if (NodeAt(u).core().role() != Role::kPrimary) {
      if (Status st = PromoteNow(u, false); !st.ok()) {
        Fail("promoting the survivor failed: " + st.message());
        return false;
      }
    }
    link_up_ = false;
    Disconnect("partition before the failback");
    for (int k = 0, n = static_cast<int>(Rand(1, 30)); k < n; ++k) {
      const uint64_t blocks = Rand(1, 8);
      WriteOn(u, Rand(0, blocks_ - blocks), blocks);
    }
    RunUntil(now_ + 100'000, [&] { return client_inflight_ == 0; });
    if (client_inflight_ != 0) {
      Fail("the survivor's writes while apart did not complete");
      return false;
    }
    link_up_ = true;
  } else {
    how = "a full sync after invalidate";
    if (Status st = NodeAt(target).device->Invalidate(false); !st.ok()) {
      Fail("invalidate on the victim failed: " + st.message());
      return false;
    }
    Drain(target);
  }
  if (!Demote(u)) return false;
  if (!connected_ && !connect_pending_) TryConnect();
  return true;
}

void World::IssueRead(Node& n) {
  const uint64_t blocks = Rand(1, 8);
  const uint64_t first = Rand(0, (Chance(0.5) ? 64 : blocks_) - blocks);
  ClientRequest& r = NewRequest(n, BlockOp::kRead, first * kBlock, blocks * kBlock);
  for (const auto& [id, w] : n.requests) {
    if (w.get() == &r || w->io.request.op == BlockOp::kRead || w->length == 0) continue;
    r.checkable = r.checkable && (r.offset >= w->offset + w->length || w->offset >= r.offset + r.length);
  }
  for (uint64_t b = first; b < first + blocks; ++b) {
    r.expected.push_back(known_max_[b] > failed_max_[b] ? known_max_[b] : kUnknown);
  }
  SubmitRequest(n, r);
}

// A write overlapping a read in flight: that read may see either.
void World::NoteWriteIssued(uint64_t offset, uint64_t length) {
  for (auto& [id, r] : NodeAt(client_node_).requests) {
    if (r->io.request.op != BlockOp::kRead) continue;
    if (offset < r->offset + r->length && r->offset < offset + length) r->checkable = false;
  }
}

void World::NoteWriteDone(const ClientRequest& w, bool ok) {
  for (uint64_t b = w.offset / kBlock; b < (w.offset + w.length) / kBlock; ++b) {
    uint64_t& slot = ok ? known_max_[b] : failed_max_[b];
    slot = std::max(slot, w.version);
  }
}

void World::CheckRead(const ClientRequest& r, int error) {
  if (error != 0) return;  // a failed read (the peer was gone, the disk failed) returns nothing
  const std::vector<uint64_t> result =
      DecodeBlocks(std::span<const iovec>(&r.iov, 1), r.length / kBlock);
  if (std::count(result.begin(), result.end(), kGarbageBlock) != 0) {
    return Fail("node" + std::to_string(r.node) + " returned a read at " +
                std::to_string(r.offset) + " as done, with what a failed disk read left");
  }
  if (!r.checkable) return;
  ++reads_checked_;
  for (size_t i = 0; i < r.expected.size(); ++i) {
    if (r.expected[i] == kUnknown || result[i] == r.expected[i]) continue;
    return Fail("node" + std::to_string(r.node) + " read block " +
                std::to_string(r.offset / kBlock + i) + " as version " +
                std::to_string(result[i]) + ", but version " + std::to_string(r.expected[i]) +
                " was the last acknowledged");
  }
}

void World::CheckFailbackData(int target, const std::string& how) {
  Node& tn = *nodes_[static_cast<size_t>(target)];
  Node& un = *nodes_[static_cast<size_t>(1 - target)];
  auto synced = [&] {
    const ReplicaStatus ts = tn.core().Report(), us = un.core().Report();
    return connected_ && ts.repl == ReplState::kEstablished && us.repl == ReplState::kEstablished &&
           ts.disk == DiskState::kUpToDate && us.out_of_sync_bytes == 0 && ts.unacked == 0 &&
           un.device->Idle() && tn.device->Idle();
  };
  RunUntil(now_ + 5'000'000, synced);
  if (!failure_.empty()) return;
  if (!synced()) return Fail("fast failback after " + how + ": the pair did not get in sync");
  for (uint64_t b = 0; b < blocks_; ++b) {
    if (tn.disk.cache[b] != un.disk.cache[b]) {
      return Fail("fast failback after " + how + ": block " + std::to_string(b) +
                  " differs: the promoted node has version " + std::to_string(tn.disk.cache[b]) +
                  ", the peer " + std::to_string(un.disk.cache[b]));
    }
    const uint64_t want = known_max_[b] > failed_max_[b] ? known_max_[b] : kUnknown;
    if (want != kUnknown && tn.disk.cache[b] != want) {
      return Fail("fast failback after " + how + ": block " + std::to_string(b) + " has version " +
                  std::to_string(tn.disk.cache[b]) + ", but version " + std::to_string(want) +
                  " was the last acknowledged");
    }
  }
  log_.push_back(std::to_string(now_) + " fast failback after " + how + ": " +
                 std::to_string(reads_checked_) + " reads checked, " +
                 std::to_string(remote_reads_) + " served by the peer");
}

}  // namespace repld::sim
