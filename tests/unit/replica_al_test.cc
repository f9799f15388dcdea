// The activity log in the write path: writes whose cold extents do not all fit in one
// transaction still complete (found by review: three large trims at once hung for ever).
#include <gtest/gtest.h>

#include <set>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Runs the replica's actions until it has none, answering disk I/O and AL writes at once, and
// handing every frame for the peer to the "socket" (the peer itself answers nothing).
std::set<RequestId> RunToQuiet(Replica& r) {
  std::set<RequestId> completed;
  for (int round = 0; round < 10000; ++round) {
    std::vector<Action> actions = r.TakeActions();
    if (actions.empty()) break;
    for (Action& a : actions) {
      if (auto* w = std::get_if<SubmitWrite>(&a)) r.LocalWriteDone(w->id, 0);
      if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
      if (auto* d = std::get_if<SendData>(&a)) r.PeerSent(d->seq);
      if (auto* c = std::get_if<Complete>(&a)) {
        EXPECT_EQ(c->error, 0);
        completed.insert(c->id);
      }
    }
  }
  return completed;
}

TEST(ReplicaActivityLog, WritesNeedingMoreExtentsThanOneTransactionHoldsAllComplete) {
  const uint32_t slots = 8;
  ReplicaOptions o;
  o.node_name = "alpha";
  o.data_bytes = 256 * kMiB;
  Replica r(o, MdState{}, ActivityLog(std::vector<uint32_t>(slots, kAlEmpty), 0),
            Bitmap(o.data_bytes));
  ASSERT_TRUE(r.Promote(/*force=*/true).ok());
  RunToQuiet(r);
  // Three trims of 6 extents each: 18 cold extents, 8 slots.
  for (RequestId id = 1; id <= 3; ++id) {
    r.ClientWrite(id, (id - 1) * 64 * kMiB, 24 * kMiB, WriteKind::kTrim, false);
  }
  const std::set<RequestId> done = RunToQuiet(r);
  EXPECT_EQ(done, (std::set<RequestId>{1, 2, 3}));
  EXPECT_EQ(r.Report().pending, 0u);
}

// A Primary connected to an in-sync Secondary, with an activity log of `slots` slots.
Replica ConnectedPrimary(Protocol protocol, uint32_t slots) {
  ReplicaOptions o;
  o.node_name = "alpha";
  o.data_bytes = 256 * kMiB;
  o.protocol = protocol;
  Replica r(o, MdState{}, ActivityLog(std::vector<uint32_t>(slots, kAlEmpty), 0),
            Bitmap(o.data_bytes));
  EXPECT_TRUE(r.Promote(/*force=*/true).ok());
  RunToQuiet(r);
  PeerState peer = r.LocalState();  // the same data, Secondary
  peer.role = Role::kSecondary;
  r.PeerUp(peer);
  RunToQuiet(r);
  EXPECT_EQ(r.Report().repl, ReplState::kEstablished);
  return r;
}

// A 4 KiB write at `offset`, started and done locally: returns its frame's seq.
uint64_t StartedWrite(Replica& r, RequestId id, uint64_t offset) {
  r.ClientWrite(id, offset, 4096, WriteKind::kData, false);
  uint64_t seq = 0;
  for (Action& a : r.TakeActions()) {
    if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
  }
  for (Action& a : r.TakeActions()) {
    if (auto* w = std::get_if<SubmitWrite>(&a)) r.LocalWriteDone(w->id, 0);
    if (auto* d = std::get_if<SendData>(&a)) seq = d->seq;
  }
  EXPECT_NE(seq, 0u);
  return seq;
}

bool InLog(const Replica& r, uint32_t extent) {
  for (uint32_t e : r.al().table()) {
    if (e == extent) return true;
  }
  return false;
}

// An extent leaves the log only once the peer has flushed every write to it: a WriteAck says
// the write is in the peer's disk cache, which a power loss may take, and after a crash of this
// node only the log's extents (and the bitmap) are resynced. Protocol A completes the write
// before the peer confirms; writes waiting for a slot make the Primary send a barrier at once.
TEST(ReplicaActivityLog, AnExtentStaysHotUntilThePeerFlushedItsWrite) {
  Replica r = ConnectedPrimary(Protocol::kA, 2);
  const uint64_t seq = StartedWrite(r, 1, 0);
  r.PeerSent(seq);
  EXPECT_EQ(RunToQuiet(r), (std::set<RequestId>{1})) << "protocol A: done once handed over";
  // Two writes to two other extents: with two slots, extent 0 would have to leave the log.
  r.ClientWrite(2, 64 * kMiB, 4096, WriteKind::kData, false);
  r.ClientWrite(3, 128 * kMiB, 4096, WriteKind::kData, false);
  std::set<RequestId> done = RunToQuiet(r);
  EXPECT_EQ(done.size(), 1u) << "one of them waits: extent 0 is still hot";
  r.PeerAck(AckKind::kWritten, seq, 0);
  std::vector<Action> actions = r.TakeActions();
  const std::vector<SendFlush> barriers = All<SendFlush>(actions);
  ASSERT_EQ(barriers.size(), 1u) << "a write waits for a slot held for a peer flush: a barrier";
  EXPECT_TRUE(All<WriteAl>(actions).empty()) << "written is not flushed: extent 0 stays";
  EXPECT_TRUE(InLog(r, 0));
  EXPECT_EQ(RunToQuiet(r).size(), 0u);
  r.PeerAck(AckKind::kFlushed, barriers[0].seq, 0);
  done = RunToQuiet(r);
  EXPECT_EQ(done.size(), 1u) << "the peer flushed: extent 0 may leave, the last write goes";
  EXPECT_FALSE(InLog(r, 0));
}

// Protocol C: the write completes on the peer's WriteAck, then the peer is lost before a flush
// covered it. Its extent must stay in the log until the bitmap marking the block is on disk:
// the peer's cache may have lost the write, and a crash here must still resync the block.
TEST(ReplicaActivityLog,
     AWriteAckedUnderCThenThePeerLostLeavesTheLogOnlyAfterTheBitmapIsPersisted) {
  Replica r = ConnectedPrimary(Protocol::kC, 2);
  for (RequestId id : {RequestId{1}, RequestId{2}}) {
    const uint64_t seq = StartedWrite(r, id, (id - 1) * 64 * kMiB);
    r.PeerSent(seq);
    r.PeerAck(AckKind::kWritten, seq, 0);
    EXPECT_EQ(RunToQuiet(r), (std::set<RequestId>{id})) << "protocol C: done once written";
  }
  r.ClientWrite(3, 128 * kMiB, 4096, WriteKind::kData, false);
  std::vector<Action> actions = r.TakeActions();
  EXPECT_TRUE(All<WriteAl>(actions).empty()) << "both extents wait for the peer's flush";
  EXPECT_EQ(All<SendFlush>(actions).size(), 1u) << "so a barrier goes at once";
  EXPECT_TRUE(InLog(r, 0));
  EXPECT_FALSE(r.bitmap().Test(0));
  r.PeerDown("test: link cut");
  actions = r.TakeActions();
  EXPECT_TRUE(r.bitmap().Test(0)) << "the peer may have lost the unflushed write";
  size_t persisted_at = actions.size(), al_at = actions.size();
  for (size_t i = 0; i < actions.size(); ++i) {
    if (std::holds_alternative<PersistBitmap>(actions[i]) && persisted_at == actions.size()) {
      persisted_at = i;
    }
    if (std::holds_alternative<WriteAl>(actions[i]) && al_at == actions.size()) al_at = i;
  }
  ASSERT_LT(persisted_at, actions.size()) << "the marks are persisted on peer loss";
  ASSERT_LT(al_at, actions.size()) << "then the waiting write may evict an extent";
  EXPECT_LT(persisted_at, al_at) << "the bitmap reaches the disk before the extent leaves";
  for (Action& a : actions) {
    if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
  }
  EXPECT_EQ(RunToQuiet(r), (std::set<RequestId>{3}));
}

// A write over a hot idle extent and a cold one: the plan that makes the cold one hot must not
// evict the hot one (found by the simulator: with the other slots held, two plans evicted each
// other's extent for ever and the write never started).
TEST(ReplicaActivityLog, APlanKeepsTheHotExtentsOfTheWriteThatWantsIt) {
  ActivityLog al(std::vector<uint32_t>{5, 6}, 0);
  al.Ref(6);
  const std::vector<uint32_t> wanted{5, 7};
  EXPECT_FALSE(al.Plan(wanted)) << "extent 5's slot is idle, but the write needs extent 5";
  al.Unref(6);
  const std::optional<AlTransactionPlan> plan = al.Plan(wanted);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->added, std::vector<uint32_t>{7});
  EXPECT_EQ(plan->evicted, std::vector<uint32_t>{6});
}

// A Primary demoted while the peer has not yet flushed its last writes keeps its metadata's
// Primary flag until a barrier covers them: a power loss of both nodes meanwhile must still
// resync the activity log's extents (the peer's cache may have lost those writes).
TEST(ReplicaActivityLog, ADemotedPrimaryStaysMarkedPrimaryOnDiskUntilThePeerFlushed) {
  Replica r = ConnectedPrimary(Protocol::kC, 4);
  const uint64_t seq = StartedWrite(r, 1, 0);
  r.PeerSent(seq);
  r.PeerAck(AckKind::kWritten, seq, 0);
  EXPECT_EQ(RunToQuiet(r), (std::set<RequestId>{1}));
  ASSERT_TRUE(r.Demote(0).ok());
  EXPECT_EQ(r.role(), Role::kSecondary);
  std::vector<Action> actions = r.TakeActions();
  const std::vector<SendFlush> barriers = All<SendFlush>(actions);
  ASSERT_EQ(barriers.size(), 1u) << "the demotion asks the peer to flush at once";
  for (const PersistMd& md : All<PersistMd>(actions)) EXPECT_TRUE(md.md.primary);
  EXPECT_TRUE(r.md().primary) << "a crash now must still resync the log's extents";
  r.PeerAck(AckKind::kFlushed, barriers[0].seq, 0);
  actions = r.TakeActions();
  EXPECT_FALSE(r.md().primary);
  const std::vector<PersistMd> persisted = All<PersistMd>(actions);
  ASSERT_EQ(persisted.size(), 1u);
  EXPECT_FALSE(persisted[0].md.primary);
}

// Nothing unflushed on the peer: the flag goes at once.
TEST(ReplicaActivityLog, ADemotedPrimaryWithEverythingFlushedClearsItsFlagAtOnce) {
  Replica r = ConnectedPrimary(Protocol::kC, 4);
  ASSERT_TRUE(r.Demote(0).ok());
  EXPECT_FALSE(r.md().primary);
  EXPECT_TRUE(All<SendFlush>(r.TakeActions()).empty());
}

}  // namespace
}  // namespace repld
