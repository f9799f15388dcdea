// The sync target's bitmap travels to the source at connect (SendOutOfSync / PeerOutOfSync):
// the source resyncs the union of both bitmaps, and starts only once it has the whole of it.
#include <gtest/gtest.h>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 64 * kMiB;
constexpr uint64_t kX = 0x1000, kY = 0x2000, kOld = 0x4000;

ReplicaOptions Options(const char* me, size_t runs_max = 4096) {
  ReplicaOptions o;
  o.node_name = me;
  o.data_bytes = kData;
  o.resync_block_bytes = kMiB;
  o.out_of_sync_runs_max = runs_max;
  return o;
}

// The node that stayed at generation X while the peer moved on (rule 40: it is the target).
const GenerationIds kStayed{kX, 0, {kOld, 0}};
const GenerationIds kMovedOn{kY, kX, {kX, kOld}};

PeerState StateOf(Replica& r) { return r.LocalState(); }

TEST(ReplicaBitmapExchange, TheTargetSendsItsBitmapInFramesEndingWithLast) {
  Replica target = MakeReplica(Options("beta", /*runs_max=*/2), kStayed,
                               {{0, 4096}, {kMiB, 8192}, {8 * kMiB, 4096}, {kData - 4096, 4096}});
  Replica source = MakeReplica(Options("alpha"), kMovedOn, {});
  target.PeerUp(StateOf(source));
  const auto frames = All<SendOutOfSync>(target.TakeActions());
  ASSERT_EQ(frames.size(), 3u) << "4 runs at 2 per frame, then an empty last one";
  EXPECT_EQ(frames[0].runs, (std::vector<OutOfSyncRun>{{0, 4096}, {kMiB, 8192}}));
  EXPECT_FALSE(frames[0].last);
  EXPECT_EQ(frames[1].runs, (std::vector<OutOfSyncRun>{{8 * kMiB, 4096}, {kData - 4096, 4096}}));
  EXPECT_FALSE(frames[1].last);
  EXPECT_TRUE(frames[2].runs.empty());
  EXPECT_TRUE(frames[2].last);
  EXPECT_EQ(target.Report().repl, ReplState::kSyncTarget);
}

TEST(ReplicaBitmapExchange, TheSourceWaitsForTheLastFrameThenResyncsTheUnion) {
  Replica target =
      MakeReplica(Options("beta"), kStayed, {{4 * kMiB, kMiB}});  // e.g. its crashed AL
  Replica source = MakeReplica(Options("alpha"), kMovedOn, {{0, 2 * kMiB}});
  ASSERT_TRUE(source.Promote(false).ok());
  source.TakeActions();
  source.PeerUp(StateOf(target));
  EXPECT_EQ(source.Report().repl, ReplState::kWFBitMapS);
  EXPECT_TRUE(All<ResyncRead>(source.TakeActions()).empty()) << "nothing before the bitmap";
  source.PeerOutOfSync({{4 * kMiB, kMiB}}, /*last=*/false);
  EXPECT_TRUE(All<ResyncRead>(source.TakeActions()).empty()) << "nothing before the last frame";
  source.PeerOutOfSync({}, /*last=*/true);
  EXPECT_EQ(source.Report().repl, ReplState::kSyncSource);
  EXPECT_EQ(source.Report().resync_total_bytes, 3 * kMiB);
  uint64_t read_bytes = 0;
  bool target_block = false;
  for (const ResyncRead& read : All<ResyncRead>(source.TakeActions())) {
    read_bytes += read.length_bytes;
    target_block = target_block || read.offset_bytes == 4 * kMiB;
  }
  EXPECT_EQ(read_bytes, 3 * kMiB);
  EXPECT_TRUE(target_block) << "the block only the target had marked is resynced too";
}

TEST(ReplicaBitmapExchange, ARunBeyondTheDataDropsThePeer) {
  Replica target = MakeReplica(Options("beta"), kStayed, {});
  Replica source = MakeReplica(Options("alpha"), kMovedOn, {});
  source.PeerUp(StateOf(target));
  source.TakeActions();
  source.PeerOutOfSync({{kData - 4096, 8192}}, /*last=*/true);
  const auto drops = All<DropPeer>(source.TakeActions());
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_NE(drops[0].reason.find("beyond the data"), std::string::npos) << drops[0].reason;
  EXPECT_EQ(source.Report().repl, ReplState::kWFBitMapS) << "no resync from a bad bitmap";
}

TEST(ReplicaBitmapExchange, OutOfSyncFramesOutsideTheWaitAreIgnored) {
  Replica r = MakeReplica(Options("alpha"), kStayed, {});
  r.PeerOutOfSync({{0, 4096}}, true);  // not connected
  EXPECT_EQ(r.bitmap().CountSet(), 0u);
  EXPECT_TRUE(r.TakeActions().empty());
}

// A Secondary promoted while the old Primary's last write is still landing on its disk: a new
// write to the same blocks waits for it, or the older data would overwrite the newer.
TEST(ReplicaPromotion, ANewWriteWaitsForTheOldPrimarysWriteStillLanding) {
  Replica secondary = MakeReplica(Options("beta"), kStayed, {});
  PeerState primary = secondary.LocalState();  // same data, but Primary
  primary.role = Role::kPrimary;
  secondary.PeerUp(primary);
  ASSERT_EQ(secondary.Report().repl, ReplState::kEstablished);
  secondary.TakeActions();
  ASSERT_TRUE(secondary.PeerData(/*key=*/7, /*seq=*/1, 0, 8192, WriteKind::kData, false));
  ASSERT_EQ(All<ApplyPeerWrite>(secondary.TakeActions()).size(), 1u);
  secondary.PeerDown("the Primary died");
  ASSERT_TRUE(secondary.Promote(false).ok());
  secondary.TakeActions();
  secondary.ClientWrite(/*id=*/1, 4096, 4096, WriteKind::kData, false);
  secondary.ClientWrite(/*id=*/2, kMiB, 4096, WriteKind::kData, false);  // elsewhere: goes
  std::vector<SubmitWrite> started;
  for (int round = 0; round < 10; ++round) {
    for (Action& a : secondary.TakeActions()) {
      if (auto* al = std::get_if<WriteAl>(&a)) secondary.AlWritten(al->plan.seq, 0);
      if (auto* w = std::get_if<SubmitWrite>(&a)) started.push_back(*w);
    }
  }
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].id, 2u);
  secondary.ApplyDone(7, 0);
  bool first_started = false;
  for (int round = 0; round < 10; ++round) {
    for (Action& a : secondary.TakeActions()) {
      if (auto* al = std::get_if<WriteAl>(&a)) secondary.AlWritten(al->plan.seq, 0);
      if (auto* w = std::get_if<SubmitWrite>(&a)) first_started = first_started || w->id == 1;
    }
  }
  EXPECT_TRUE(first_started) << "the write goes once the old one has landed";
}

}  // namespace
}  // namespace repld
