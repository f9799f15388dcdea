// The activity log in the write path: writes whose cold extents do not all fit in one
// transaction still complete (found by review: three large trims at once hung for ever).
#include <gtest/gtest.h>

#include <set>

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

// An extent leaves the log only once the peer has confirmed every write to it: until then a
// crash of this node could leave the block different on the two disks, and only the log's
// extents are resynced after a crash. Protocol A completes the write before the peer confirms.
TEST(ReplicaActivityLog, AnExtentStaysHotUntilThePeerConfirmsItsWrite) {
  ReplicaOptions o;
  o.node_name = "alpha";
  o.data_bytes = 256 * kMiB;
  o.protocol = Protocol::kA;
  Replica r(o, MdState{}, ActivityLog(std::vector<uint32_t>(2, kAlEmpty), 0), Bitmap(o.data_bytes));
  ASSERT_TRUE(r.Promote(/*force=*/true).ok());
  RunToQuiet(r);
  PeerState peer = r.LocalState();  // the same data, Secondary
  peer.role = Role::kSecondary;
  r.PeerUp(peer);
  RunToQuiet(r);
  ASSERT_EQ(r.Report().repl, ReplState::kEstablished);
  r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  uint64_t seq = 0;
  for (Action& a : r.TakeActions()) {
    if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
  }
  for (Action& a : r.TakeActions()) {
    if (auto* w = std::get_if<SubmitWrite>(&a)) r.LocalWriteDone(w->id, 0);
    if (auto* d = std::get_if<SendData>(&a)) seq = d->seq;
  }
  ASSERT_NE(seq, 0u);
  r.PeerSent(seq);
  EXPECT_EQ(RunToQuiet(r), (std::set<RequestId>{1})) << "protocol A: done once handed over";
  // Two writes to two other extents: with two slots, extent 0 would have to leave the log.
  r.ClientWrite(2, 64 * kMiB, 4096, WriteKind::kData, false);
  r.ClientWrite(3, 128 * kMiB, 4096, WriteKind::kData, false);
  std::set<RequestId> done = RunToQuiet(r);
  EXPECT_EQ(done.size(), 1u) << "one of them waits: extent 0 is still hot";
  EXPECT_TRUE(r.al().table()[0] == 0 || r.al().table()[1] == 0) << "extent 0 is in the log";
  r.PeerAck(AckKind::kWritten, seq, 0);
  done = RunToQuiet(r);
  EXPECT_EQ(done.size(), 1u) << "the peer confirmed: extent 0 may leave, the last write goes";
}

}  // namespace
}  // namespace repld
