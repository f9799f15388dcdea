// Faults of the simulator beyond crashes and link cuts (issue #17): disk errors on the
// Secondary (applies, flushes for the peer, resync writes, metadata writes, reads for checksums)
// under both on_io_error policies, and on the Primary (its client's writes, reads and flushes,
// its metadata writes under detach, its reads as a sync source; pass_on: its clients get the
// errors, and a failed activity log needs a restart; detach: it goes Diskless, serves through its
// peer, then takes its disk again while Primary); the detach and a later attach of the same disk; the refusal to promote a
// node that failed a write before a resync repaired it; half-open links; an online verify of a
// healed pair.
#include <cerrno>

#include "sim_world.h"

namespace repld::sim {

// While the node's disk is faulty, about a third of its I/O fails with the fault's errno.
int World::InjectedError(Node& n, uint64_t& counter) {
  if (n.fault_error == 0 || !Chance(0.3)) return 0;
  ++counter;
  ++n.io_failures;
  log_.push_back(std::to_string(now_) + " node" + std::to_string(n.index) +
                 ": injected disk error " + std::to_string(n.fault_error));
  return n.fault_error;
}

// The device reported a disk failure: its state says the disk failed (pass_on, or detach
// before the detach), or it asked its owner to detach (on_io_error = detach, as
// Resource::DetachFailedDisk carries out). The failure must be real, and the node never
// promoted with that disk.
void World::NoteDiskFailed(int node, bool detach) {
  Node& n = NodeAt(node);
  const std::string who = "node" + std::to_string(node);
  if (!n.up || !n.device) return;
  if (n.device->diskless_primary()) {
    // A Primary under detach: Diskless, serving through its peer (replica_diskless.cc); its
    // owner lets go of the disk and gives it one back later (AttachToDisklessPrimary).
    if (n.io_failures == 0) return Fail(who + ", Primary, went Diskless with no failed I/O");
    if (!n.failure_noted) {
      n.failure_noted = true;
      ++counts_.diskless_primaries;
    }
    return;
  }
  if (detach && n.on_io_error != OnIoError::kDetach && n.metadata_failures == 0) {
    return Fail(who + " asked to detach its disk under on_io_error = pass_on, with no failed "
                      "metadata write");
  }
  const std::optional<DiskFailure> failure = n.core().Report().disk_failure;
  if (!n.failure_noted && failure) {
    n.failure_noted = true;
    if (n.io_failures == 0) {
      return Fail(who + " reported a disk failure (" + failure->what +
                  "), but no simulated I/O failed");
    }
    if (n.core().role() == Role::kPrimary) {
      return Fail(who + ", Primary, reported a disk failure: its failed writes go to its clients");
    }
    // The node is never promoted with this disk: without --force, nor (under detach) with it.
    // The refusal names the failure.
    const bool detaches = n.on_io_error == OnIoError::kDetach || n.metadata_failures != 0;
    for (const bool force : {false, true}) {
      if (force && !detaches) break;  // pass_on: --force makes its data count, as documented
      const Status st = n.device->BeginPromote(force);
      if (st.ok()) {
        return Fail(who + " failed a write and was promoted (force " + std::to_string(force) + ")");
      }
      if (st.message().find("disk failed") == std::string::npos) {
        return Fail(who + " failed a write; its promotion was refused for another reason: " +
                    st.message());
      }
      ++counts_.refusals_checked;
    }
    if (n.on_io_error == OnIoError::kPassOn) ++counts_.pass_on_failures;
  }
  if (detach && !n.detaching && !n.detached) DetachDisk(node);
}

// Resource::Detach: the peer link drops (the peer hears why), the disk's I/O finishes, the disk
// is synced, the bitmap and a clean superblock written (ReplicatedDevice::Shutdown), and the
// disk closed.
void World::DetachDisk(int index) {
  Node& n = NodeAt(index);
  if (!n.up || n.detaching || n.detached) return;
  n.detaching = true;
  n.device->DisconnectFor("node" + std::to_string(index) + "'s disk failed: it detaches");
  After(500, index, [this, index] { FinishDetach(index); });
}

void World::FinishDetach(int index) {
  Node& n = NodeAt(index);
  n.device->StopLink();
  if (!n.device->Idle()) {  // Resource::StopDevice waits for the I/O in flight
    After(500, index, [this, index] { FinishDetach(index); });
    return;
  }
  n.detached_failed = n.core().Report().disk_failure.has_value();
  if (n.sink->SyncNow().ok()) n.device->Shutdown();
  Drain(index);
  n.device.reset();
  n.port = nullptr;
  n.io = std::make_unique<asio::io_context>();
  n.up = false;
  ++n.incarnation;
  n.detaching = false;
  n.detached = true;
  ++counts_.detaches;
  log_.push_back(std::to_string(now_) + " node" + std::to_string(index) +
                 " detached its failed disk: Diskless");
}

// replctl attach of the same disk, repaired: the metadata is read as at start (it records the
// failure), and the link starts again.
void World::AttachDisk(int index) {
  Node& n = NodeAt(index);
  if (!n.detached) return;
  n.detached = false;
  log_.push_back(std::to_string(now_) + " node" + std::to_string(index) + " attaches its disk");
  RestartNode(index);
}

// The disk back under a running Primary, as Resource::AttachToPrimary does it (the client's
// requests wait meanwhile; here the client is drained): the diskless device goes once idle, a
// device on the same disk opens it as one that failed (Inconsistent, resynced whole), connects,
// and is promoted as a resync target with its UpToDate peer serving the blocks not yet synced.
void World::AttachToDisklessPrimary(int index) {
  Node& n = NodeAt(index);
  RunUntil(now_ + 20'000, [&] { return n.device->Idle(); });
  if (!failure_.empty()) return;
  if (!n.device->Idle()) return Fail("the diskless Primary's device did not go idle");
  n.detaching = true;   // the link stops on purpose
  FinishDetach(index);  // StopLink, the device gone
  n.detached_failed = true;
  AttachDisk(index);
  ++counts_.primary_attaches;
  if (!connected_ && !connect_pending_) TryConnect();
  auto ready = [&] {
    const ReplicaStatus r = n.core().Report();
    return r.conn == ConnState::kConnected && r.peer && r.peer->disk == DiskState::kUpToDate &&
           (r.repl == ReplState::kSyncTarget || r.repl == ReplState::kEstablished);
  };
  RunUntil(now_ + 2'000'000, ready);
  if (!failure_.empty() || !ready()) return;  // a cut link: promoted by a later phase, or not
  const Status st = n.device->BeginPromote(false);
  if (!st.ok()) {
    return Fail("node" + std::to_string(index) +
                ", its disk attached again as a resync target of its UpToDate peer, was not "
                "promoted: " +
                st.message());
  }
  log_.push_back(std::to_string(now_) + " node" + std::to_string(index) +
                 " attached its disk as Primary: promoting as a resync target");
}

void World::StartTicks() {
  ticking_ = true;
  if (tick_scheduled_) return;
  tick_scheduled_ = true;
  After(kTickUs, -1, [this] {
    tick_scheduled_ = false;
    if (!ticking_) return;
    for (auto& n : nodes_) {
      if (n->up && n->device) n->device->Tick();
    }
    StartTicks();
  });
}

// With the client drained and every frame confirmed, node 1 lacks a block of node 0's only if
// a failed write (or a resync not yet done) left it behind: then it must refuse a promotion.
void World::CheckFailedNodeRefused(const std::string& when) {
  Node& p = *nodes_[0];
  Node& s = *nodes_[1];
  if (!s.up) return;  // Diskless: the daemon refuses it without asking the core
  uint64_t differing = 0;
  for (uint64_t b = 0; b < blocks_; ++b) differing += p.disk.cache[b] != s.disk.cache[b] ? 1 : 0;
  CrashNode(0);
  client_inflight_ = 0;  // the requests in flight died with the Primary
  flushes_.clear();
  if (differing != 0) {
    Status st = PromoteNow(1, false);
    if (!failure_.empty()) return;
    if (st.ok()) {
      return Fail("node1 lacks " + std::to_string(differing) + " blocks of the Primary's " +
                  "after its disk failed (" + when + "), and was promoted when the Primary died");
    }
    ++counts_.refusals_checked;
    ++counts_.refusals_primary_dead;
    log_.push_back(std::to_string(now_) + " node1 refused (" + when + "): " + st.message());
  }
  // Back to node 0 as Primary, which resyncs node 1 (or fails it again, if it was promoted).
  if (s.core().role() == Role::kPrimary && !Demote(1)) return;
  RestartNode(0);
  if (Status st = nodes_[0]->device->BeginPromote(false); !st.ok()) {
    return Fail("promoting node 0 after its crash failed: " + st.message());
  }
}

// Phase 2a: the client writes while one disk fails some of its I/O for a while: node 1's (the
// Secondary's), or node 0's own writes when node 0 is pass_on. Then the fault is cleared, a
// detached disk attached again, and the pair must heal to equal disks. Half the time the
// Primary dies first, while node 1 may still lack what its disk failed: it must be refused.
void World::DiskFaults() {
  Node& p = *nodes_[0];
  Node& s = *nodes_[1];
  const bool on_primary = Chance(p.on_io_error == OnIoError::kPassOn ? 0.3 : 0.15);
  Node& target = on_primary ? p : s;
  target.io_failures = 0;
  target.fault_error = Chance(0.7) ? EIO : ENOSPC;
  log_.push_back(std::to_string(now_) + " disk faults on node" + std::to_string(target.index) +
                 " (error " + std::to_string(target.fault_error) + ", on_io_error " +
                 (target.on_io_error == OnIoError::kDetach ? "detach" : "pass_on") + ")");
  StartTicks();
  // The client reads too, checked against what it wrote (the disks are equal here).
  known_max_ = p.disk.cache;
  failed_max_.assign(blocks_, 0);
  reads_on_ = true;
  client_on_ = true;
  ClientIssue();
  RunUntil(now_ + Rand(5'000, 40'000));
  if (on_primary && Chance(0.5)) {
    // Only reads fail for a while longer: through the resync of the Primary's failed writes
    // (below), where it is the sync source, which retries the blocks it failed to read.
    target.fault_reads_only = true;
    log_.push_back(std::to_string(now_) + " node" + std::to_string(target.index) +
                   ": only reads fail from now");
    ClearFaultsAt(target.index, now_ + Rand(2'000, 20'000));
  } else {
    target.fault_error = 0;  // repaired
  }
  client_on_ = false;
  RunUntil(now_ + 20'000, [&] { return client_inflight_ == 0; });
  reads_on_ = false;
  if (!failure_.empty()) return;
  if (client_inflight_ != 0) return Fail("the client's requests did not complete after disk faults");
  RunUntil(now_ + 10'000, [&] { return !s.detaching; });
  const bool failed = target.io_failures != 0 || s.detached;
  const bool was_detached = s.detached;
  if (was_detached) {
    RunUntil(now_ + Rand(0, 5'000));
    AttachDisk(1);
    // Not connected yet: the metadata's record of the failure is what refuses it.
    const Status st = s.device->BeginPromote(false);
    if (st.ok()) return Fail("node1 was promoted right after it attached the disk that failed");
    if (st.message().find("disk failed") == std::string::npos) {
      return Fail("node1, just attached after its disk failed, was refused for another reason: " +
                  st.message());
    }
    ++counts_.refusals_checked;
  }
  if (failed && !on_primary && Chance(0.5)) {
    // Every frame of the Primary confirmed (written or failed): what node 1 lacks, it lost.
    RunUntil(now_ + 20'000, [&] { return !p.up || p.core().Report().unacked == 0; });
    if (!failure_.empty()) return;
    CheckFailedNodeRefused(was_detached ? "detached and attached again" : "after the fault");
    if (!failure_.empty()) return;
  }
  if (on_primary && p.up && p.device->diskless_primary()) {
    AttachToDisklessPrimary(0);
    return;
  }
  if (on_primary && p.up && p.device->metadata_failed()) {
    // A pass_on Primary whose activity log or metadata failed refuses metadata changes (a
    // promotion among them) until its daemon restarts, as its log says: the operator restarts
    // it, here the harsher way (a crash, which resyncs its activity log).
    log_.push_back(std::to_string(now_) + " node0 restarts after a failed metadata write");
    CrashNode(0);
    client_inflight_ = 0;
    flushes_.clear();
    RestartNode(0);
    if (Status st = p.device->BeginPromote(false); !st.ok()) {
      return Fail("promoting node 0 after its restart failed: " + st.message());
    }
  }
  if (on_primary && connected_) Disconnect("reconnect: resync the Primary's failed writes");
  if (!connected_ && !connect_pending_) TryConnect();
}

void World::FaultWindow(int index, Clock when, Clock for_us, bool reads_only) {
  At(when, -1, [this, index, reads_only] {
    Node& n = NodeAt(index);
    if (reads_only && n.fault_error != 0) return;  // a window of all I/O already open
    n.fault_error = reads_only || Chance(0.7) ? EIO : ENOSPC;
    n.fault_reads_only = reads_only;
    log_.push_back(std::to_string(now_) + (reads_only ? " read faults" : " disk faults") +
                   " on node" + std::to_string(index) + " (error " +
                   std::to_string(n.fault_error) + ")");
    StartTicks();
  });
  ClearFaultsAt(index, when + for_us);
}

void World::ClearFaultsAt(int index, Clock when) {
  At(when, -1, [this, index] {
    NodeAt(index).fault_error = 0;
    NodeAt(index).fault_reads_only = false;
  });
}

// A half-open link: from `when`, one node's frames vanish while the other's still arrive, until
// the keepalive notices (the ping timeout) `for_us` later and the connection drops.
void World::HalfOpen(Clock when, Clock for_us) {
  const int from = static_cast<int>(Rand(0, 1));
  At(when, -1, [this, from, for_us] {
    if (!connected_) return;
    muted_from_ = from;
    mute_epoch_ = conn_epoch_;
    ++counts_.half_open;
    log_.push_back(std::to_string(now_) + " half-open link: node" + std::to_string(from) +
                   "'s frames are lost");
    After(for_us, -1, [this, epoch = conn_epoch_] {
      if (mute_epoch_ == epoch) muted_from_ = -1;
      if (connected_ && conn_epoch_ == epoch) Disconnect("ping timeout: the peer went silent");
    });
  });
}

// An online verify of a healed pair (client paused, disks equal) finds no differing byte.
void World::VerifyHealed() {
  Node& p = NodeAt(0);
  if (Status st = p.device->StartVerify(); !st.ok()) {
    return Fail("online verify of the healed pair refused: " + st.message());
  }
  auto done = [&] {
    const std::optional<VerifyStatus> v = p.core().Report().verify;
    return v && !v->running;
  };
  RunUntil(now_ + 5'000'000, done);
  if (!failure_.empty()) return;
  if (!done()) return Fail("the online verify of the healed pair did not end within 5 s");
  const VerifyStatus v = *p.core().Report().verify;
  if (v.differing_bytes != 0 || v.done_bytes != v.total_bytes) {
    return Fail("the online verify of the healed pair found " + std::to_string(v.differing_bytes) +
                " differing bytes (" + std::to_string(v.done_bytes) + " of " +
                std::to_string(v.total_bytes) + " compared)");
  }
  ++counts_.verifies;
}

}  // namespace repld::sim
