// Quorum in the replica (ReplicaOptions::quorum; docs/quorum.md): without quorum no request
// completes successfully (suspend-io holds, io-error fails), and a write the lost peer did not
// confirm waits until the peer is fenced. Each test checks "not yet" right before the event
// that must release the request.
#include <gtest/gtest.h>

#include <cerrno>
#include <optional>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// A Primary with quorum connected to an in-sync Secondary, under protocol C.
Replica Connected(OnNoQuorum on_no_quorum = OnNoQuorum::kSuspendIo) {
  ReplicaOptions o;
  o.node_name = "alpha";
  o.data_bytes = 64 * kMiB;
  o.quorum = true;
  o.on_no_quorum = on_no_quorum;
  Replica r = MakeReplica(o, GenerationIds{0x1000, 0, {0, 0}}, {});
  r.SetQuorum(true);
  EXPECT_TRUE(r.Promote(/*force=*/false).ok());
  PeerState peer = r.LocalState();
  peer.role = Role::kSecondary;
  r.PeerUp(peer);
  r.TakeActions();
  return r;
}

// The completion's error, if one came (activity log writes answered at once); the seq of the
// data frame sent, if one was.
struct Seen {
  std::optional<int> completed;
  std::optional<uint64_t> data_seq;
};
Seen Take(Replica& r) {
  Seen s;
  for (std::vector<Action> actions = r.TakeActions(); !actions.empty(); actions = r.TakeActions()) {
    for (Action& a : actions) {
      if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
      if (auto* d = std::get_if<SendData>(&a)) s.data_seq = d->seq;
      if (auto* c = std::get_if<Complete>(&a)) s.completed = c->error;
    }
  }
  return s;
}

// Write 1 (4 KiB), written locally and by the peer: complete but for quorum.
void WriteConfirmedByThePeer(Replica& r) {
  r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  const uint64_t seq = Take(r).data_seq.value_or(0);
  r.LocalWriteDone(1, 0);
  r.PeerSent(seq);
  r.PeerAck(AckKind::kWritten, seq, 0);
}

TEST(ReplicaQuorum, WithQuorumAWriteCompletesAsUsual) {
  Replica r = Connected();
  WriteConfirmedByThePeer(r);
  EXPECT_EQ(Take(r).completed, 0);
}

TEST(ReplicaQuorum, SuspendIoHoldsCompletionsUntilQuorumReturns) {
  Replica r = Connected();
  r.SetQuorum(false);
  WriteConfirmedByThePeer(r);
  EXPECT_FALSE(Take(r).completed) << "no quorum: held";
  EXPECT_EQ(r.Report().held_completions, 1u);
  EXPECT_EQ(r.Report().quorum, false);
  r.SetQuorum(true);
  EXPECT_EQ(Take(r).completed, 0);
  EXPECT_EQ(r.Report().held_completions, 0u);
}

TEST(ReplicaQuorum, IoErrorFailsWhatWouldCompleteWithoutQuorum) {
  Replica r = Connected(OnNoQuorum::kIoError);
  r.SetQuorum(false);
  WriteConfirmedByThePeer(r);
  EXPECT_EQ(Take(r).completed, EIO);
}

TEST(ReplicaQuorum, ADemotionFailsTheHeldCompletions) {
  Replica r = Connected();
  r.SetQuorum(false);
  WriteConfirmedByThePeer(r);
  ASSERT_FALSE(Take(r).completed);
  ASSERT_TRUE(r.Demote(0).ok());
  EXPECT_EQ(Take(r).completed, EIO);
}

// The peer leaves before it confirms: the write waits for the fence, even with quorum.
TEST(ReplicaQuorum, AWriteThePeerDidNotConfirmWaitsForTheFence) {
  Replica r = Connected();
  r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  const uint64_t seq = Take(r).data_seq.value_or(0);
  r.PeerSent(seq);
  r.LocalWriteDone(1, 0);
  r.PeerDown("link cut");
  EXPECT_FALSE(Take(r).completed) << "the peer may lack it and is not fenced";
  EXPECT_EQ(r.Report().waiting_for_fence, 1u);
  r.PeerFenced();
  EXPECT_EQ(Take(r).completed, 0);
  // Writes after the loss were never sent: they wait for the fence too, which holds until the
  // next connection.
  r.ClientWrite(2, 8192, 4096, WriteKind::kData, false);
  Take(r);
  r.LocalWriteDone(2, 0);
  EXPECT_EQ(Take(r).completed, 0) << "fenced already";
}

TEST(ReplicaQuorum, EachLossIsFencedAnew) {
  Replica r = Connected();
  r.PeerDown("first loss");
  r.PeerFenced();
  PeerState peer = r.LocalState();
  peer.role = Role::kSecondary;
  r.PeerUp(peer);
  Take(r);
  r.PeerDown("second loss");
  r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  Take(r);
  r.LocalWriteDone(1, 0);
  EXPECT_FALSE(Take(r).completed) << "the first fence does not cover the second loss";
  r.PeerFenced();
  EXPECT_EQ(Take(r).completed, 0);
}

// Without quorum = "majority" nothing changes: a lost peer's writes complete at once.
TEST(ReplicaQuorum, OffByDefault) {
  ReplicaOptions o;
  o.node_name = "alpha";
  o.data_bytes = 64 * kMiB;
  Replica r = MakeReplica(o, GenerationIds{0x1000, 0, {0, 0}}, {});
  ASSERT_TRUE(r.Promote(false).ok());
  Take(r);
  r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  Take(r);
  r.LocalWriteDone(1, 0);
  EXPECT_EQ(Take(r).completed, 0);
  EXPECT_FALSE(r.Report().quorum.has_value());
}

}  // namespace
}  // namespace repld
