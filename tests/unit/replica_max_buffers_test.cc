// The Secondary bounds the peer's frames in flight by max_buffers, counting only the current
// connection's: applies an earlier connection left on a slow disk finish on their own, and
// counting them dropped every new connection at once (a loop of drops and reconnects).
#include <gtest/gtest.h>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint32_t kMaxBuffers = 4;

struct Secondary {
  Secondary() : r(MakeReplica(Options(), GenerationIds{0x1000, 0, {0, 0}}, {})) { Connect(); }
  static ReplicaOptions Options() {
    ReplicaOptions o;
    o.node_name = "beta";
    o.data_bytes = 64 * kMiB;
    o.max_buffers = kMaxBuffers;
    return o;
  }
  void Connect() {
    PeerState primary = r.LocalState();
    primary.role = Role::kPrimary;
    r.PeerUp(primary);
    r.TakeActions();
    ASSERT_EQ(r.conn(), ConnState::kConnected);
  }
  // The peer's next frame, a 4 KiB write to its own block: kept (and being applied) or not.
  bool Receive() {
    ++seq;
    return r.PeerData(seq, seq, seq * 4096, 4096, WriteKind::kData, false);
  }
  bool Dropped() { return !All<DropPeer>(r.TakeActions()).empty(); }
  Replica r;
  uint64_t seq = 0;  // also the frame's key
};

TEST(ReplicaMaxBuffers, MoreThanMaxBuffersFramesInFlightDropThePeer) {
  Secondary s;
  for (uint32_t i = 0; i < kMaxBuffers; ++i) EXPECT_TRUE(s.Receive());
  EXPECT_FALSE(s.Dropped());
  EXPECT_FALSE(s.Receive());
  EXPECT_TRUE(s.Dropped());
}

TEST(ReplicaMaxBuffers, AppliesOfAnEarlierConnectionDoNotCount) {
  Secondary s;
  for (uint32_t i = 0; i < kMaxBuffers; ++i) EXPECT_TRUE(s.Receive());
  s.r.PeerDown("link cut");  // the old frames are still on their way to the (slow) disk
  s.r.TakeActions();
  s.Connect();
  for (uint32_t i = 0; i < kMaxBuffers; ++i) EXPECT_TRUE(s.Receive()) << "frame " << i;
  EXPECT_FALSE(s.Dropped()) << "the new connection is within its max_buffers";
  // An old apply finishing frees no place of the new connection's.
  s.r.ApplyDone(1, 0);
  s.r.TakeActions();
  EXPECT_FALSE(s.Receive());
  EXPECT_TRUE(s.Dropped());
}

TEST(ReplicaMaxBuffers, AFinishedApplyOfThisConnectionFreesAPlace) {
  Secondary s;
  for (uint32_t i = 0; i < kMaxBuffers; ++i) EXPECT_TRUE(s.Receive());
  s.r.ApplyDone(1, 0);
  s.r.TakeActions();
  EXPECT_TRUE(s.Receive());
  EXPECT_FALSE(s.Dropped());
}

}  // namespace
}  // namespace repld
