// Promotion while connected is agreed with the peer: two connected nodes are never Primary at
// once, whatever order the requests and answers travel in (docs/replication.md, "Promotion
// while connected").
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <deque>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;
constexpr GenerationIds kIds{0xA0, 0, {0, 0}};

// Two connected Secondaries with the same UpToDate data. Frames between them wait in a queue
// per direction, so a test chooses when each arrives.
struct Pair {
  Replica alpha = MakeReplica(Options("alpha", "beta", 1), kIds, {});
  Replica beta = MakeReplica(Options("beta", "alpha", 2), kIds, {});
  std::deque<Action> to_alpha, to_beta;  // frames in flight
  std::vector<PromotionDone> alpha_done, beta_done;

  static ReplicaOptions Options(const char* me, const char* peer, uint64_t seed = 1) {
    ReplicaOptions o;
    o.seed = seed;
    o.node_name = me;
    o.peer_name = peer;
    o.data_bytes = 64 * kMiB;
    return o;
  }
  Pair() {
    const PeerState a = alpha.LocalState(), b = beta.LocalState();
    alpha.PeerUp(Replica::Handshake{b, a, true});
    beta.PeerUp(Replica::Handshake{a, b, true});
    Collect();
    to_alpha.clear();  // the bitmaps and States of the connect: not what these tests look at
    to_beta.clear();
    EXPECT_EQ(alpha.conn(), ConnState::kConnected);
    EXPECT_EQ(beta.conn(), ConnState::kConnected);
  }
  // Moves what each node emitted into the other's queue; PromotionDone into the node's list.
  void Collect() {
    for (Action& a : alpha.TakeActions()) Route(std::move(a), to_beta, alpha_done);
    for (Action& a : beta.TakeActions()) Route(std::move(a), to_alpha, beta_done);
  }
  static void Route(Action a, std::deque<Action>& out, std::vector<PromotionDone>& done) {
    if (auto* d = std::get_if<PromotionDone>(&a)) {
      done.push_back(*d);
    } else if (std::holds_alternative<SendPromoteRequest>(a) ||
               std::holds_alternative<SendPromoteReply>(a) ||
               std::holds_alternative<SendState>(a)) {
      out.push_back(std::move(a));
    }
  }
  // The next frame in flight to `to` arrives there.
  void DeliverOne(Replica& to, std::deque<Action>& queue) {
    ASSERT_FALSE(queue.empty());
    Action a = std::move(queue.front());
    queue.pop_front();
    if (auto* q = std::get_if<SendPromoteRequest>(&a)) to.PeerPromoteRequest(q->token);
    if (auto* r = std::get_if<SendPromoteReply>(&a)) {
      to.PeerPromoteReply(r->token, r->granted, r->reason);
    }
    if (auto* s = std::get_if<SendState>(&a)) to.PeerStateChanged(s->state);
    Collect();
  }
  void DeliverAll() {
    while (!to_alpha.empty() || !to_beta.empty()) {
      if (!to_alpha.empty()) DeliverOne(alpha, to_alpha);
      if (!to_beta.empty()) DeliverOne(beta, to_beta);
    }
  }
  int Primaries() const {
    return (alpha.role() == Role::kPrimary ? 1 : 0) + (beta.role() == Role::kPrimary ? 1 : 0);
  }
};

TEST(ReplicaPromote, AConnectedNodeAsksFirstAndIsPrimaryOnlyOnceGranted) {
  Pair p;
  ASSERT_TRUE(p.alpha.Promote(false).ok());
  p.Collect();
  EXPECT_TRUE(p.alpha.promotion_pending());
  EXPECT_EQ(p.alpha.role(), Role::kSecondary) << "nothing changes before the peer agrees";
  ASSERT_EQ(p.to_beta.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<SendPromoteRequest>(p.to_beta.front()));
  EXPECT_THAT(p.alpha.Promote(false).message(), HasSubstr("already waiting"));

  p.DeliverOne(p.beta, p.to_beta);  // beta grants, and counts alpha as Primary from now on
  EXPECT_THAT(p.beta.Promote(false).message(), HasSubstr("the peer 'alpha' is Primary"));
  p.DeliverAll();
  EXPECT_EQ(p.alpha.role(), Role::kPrimary);
  ASSERT_EQ(p.alpha_done.size(), 1u);
  EXPECT_EQ(p.alpha_done[0].error, 0);
  EXPECT_FALSE(p.alpha.promotion_pending());
  EXPECT_EQ(p.alpha.Report().peer->role, Role::kSecondary);
  EXPECT_EQ(p.beta.Report().peer->role, Role::kPrimary) << "alpha's State reached beta";
}

TEST(ReplicaPromote, APrimaryRefusesAndTheAskerHearsWhy) {
  Pair p;
  ASSERT_TRUE(p.beta.Promote(false).ok());
  p.Collect();
  p.DeliverAll();
  ASSERT_EQ(p.beta.role(), Role::kPrimary);
  // alpha's view of beta is stale (the State has not come yet, in a race): alpha asks anyway.
  PeerState stale = p.beta.LocalState();
  stale.role = Role::kSecondary;
  p.alpha.PeerStateChanged(stale);
  ASSERT_TRUE(p.alpha.Promote(false).ok());
  p.Collect();
  p.DeliverAll();
  EXPECT_EQ(p.alpha.role(), Role::kSecondary);
  ASSERT_EQ(p.alpha_done.size(), 1u);
  EXPECT_EQ(p.alpha_done[0].error, EBUSY);
  EXPECT_THAT(p.alpha_done[0].message, HasSubstr("the peer refused: 'beta' is Primary"));
  EXPECT_EQ(p.Primaries(), 1);
}

// Both ask at the same moment: each request arrives while the receiver's own is pending. The
// node whose name sorts first (alpha) wins on both sides, in either delivery order.
TEST(ReplicaPromote, CrossedRequestsMakeExactlyOnePrimary) {
  for (int order = 0; order < 4; ++order) {
    SCOPED_TRACE("delivery order " + std::to_string(order));
    Pair p;
    ASSERT_TRUE(p.alpha.Promote(false).ok());
    ASSERT_TRUE(p.beta.Promote(false).ok());
    p.Collect();
    if (order & 1) {
      p.DeliverOne(p.beta, p.to_beta);
      p.DeliverOne(p.alpha, p.to_alpha);
    } else {
      p.DeliverOne(p.alpha, p.to_alpha);
      p.DeliverOne(p.beta, p.to_beta);
    }
    if (order & 2) {
      while (!p.to_beta.empty()) p.DeliverOne(p.beta, p.to_beta);
    }
    p.DeliverAll();
    EXPECT_EQ(p.Primaries(), 1);
    EXPECT_EQ(p.alpha.role(), Role::kPrimary);
    ASSERT_EQ(p.beta_done.size(), 1u);
    EXPECT_EQ(p.beta_done[0].error, EBUSY);
    EXPECT_THAT(p.beta_done[0].message, HasSubstr("'alpha' asked to be promoted at the same"));
    ASSERT_EQ(p.alpha_done.size(), 1u);
    EXPECT_EQ(p.alpha_done[0].error, 0);
  }
}

TEST(ReplicaPromote, ALostPeerEndsThePromotionWithoutPromoting) {
  Pair p;
  ASSERT_TRUE(p.alpha.Promote(false).ok());
  p.Collect();
  p.alpha.PeerDown("link cut");
  p.Collect();
  EXPECT_EQ(p.alpha.role(), Role::kSecondary);
  ASSERT_EQ(p.alpha_done.size(), 1u);
  EXPECT_EQ(p.alpha_done[0].error, ENOTCONN);
  EXPECT_THAT(p.alpha_done[0].message, HasSubstr("run 'replctl primary' again"));
  // A grant that was on its way is for a promotion that no longer waits: nothing happens.
  p.alpha.PeerPromoteReply(1, true, "");
  EXPECT_EQ(p.alpha.role(), Role::kSecondary);
  // Disconnected, the node promotes on its own (the operator's call).
  ASSERT_TRUE(p.alpha.Promote(false).ok());
  EXPECT_EQ(p.alpha.role(), Role::kPrimary);
  EXPECT_FALSE(p.alpha.promotion_pending());
}

TEST(ReplicaPromote, AnAbandonedPromotionTellsThePeerThisNodeIsStillSecondary) {
  Pair p;
  ASSERT_TRUE(p.alpha.Promote(false).ok());
  p.Collect();
  p.DeliverOne(p.beta, p.to_beta);  // beta granted; the grant is in flight
  p.alpha.AbandonPromotion("the peer did not answer within 10 s");
  p.Collect();
  ASSERT_EQ(p.alpha_done.size(), 1u);
  EXPECT_EQ(p.alpha_done[0].error, ETIMEDOUT);
  p.DeliverAll();  // the late grant, then alpha's State
  EXPECT_EQ(p.alpha.role(), Role::kSecondary);
  EXPECT_EQ(p.beta.Report().peer->role, Role::kSecondary);
  ASSERT_TRUE(p.beta.Promote(false).ok()) << "beta may ask again";
  p.Collect();
  p.DeliverAll();
  EXPECT_EQ(p.beta.role(), Role::kPrimary);
  EXPECT_EQ(p.Primaries(), 1);
}

// A node whose state changed between sending its State and the end of the handshake (promoted
// while Connecting) would decide from one state while the peer decided from another: it
// connects again instead.
TEST(ReplicaPromote, AHandshakeWhoseStateMovedReconnects) {
  ReplicaOptions o = Pair::Options("alpha", "beta");
  Replica alpha = MakeReplica(o, kIds, {});
  Replica beta = MakeReplica(Pair::Options("beta", "alpha"), kIds, {});
  alpha.PeerConnecting();
  const PeerState sent = alpha.LocalState();
  ASSERT_TRUE(alpha.Promote(false).ok());  // not connected: at once
  ASSERT_EQ(alpha.role(), Role::kPrimary);
  alpha.TakeActions();
  alpha.PeerUp(Replica::Handshake{beta.LocalState(), sent, true});
  std::vector<DropPeer> drops = All<DropPeer>(alpha.TakeActions());
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_TRUE(drops[0].reconnect);
  EXPECT_THAT(drops[0].reason,
              HasSubstr("changed during the handshake (role Secondary -> Primary"));
  EXPECT_NE(alpha.conn(), ConnState::kConnected);
  // The next handshake, with the state as it is, connects.
  alpha.PeerUp(Replica::Handshake{beta.LocalState(), alpha.LocalState(), true});
  EXPECT_EQ(alpha.conn(), ConnState::kConnected);
}

// A peer of an older build does not agree promotions: the node promotes at once, as before.
TEST(ReplicaPromote, APeerWithoutPromoteRequestsIsToldAfterwards) {
  Replica alpha = MakeReplica(Pair::Options("alpha", "beta"), kIds, {});
  Replica beta = MakeReplica(Pair::Options("beta", "alpha"), kIds, {});
  alpha.PeerUp(Replica::Handshake{beta.LocalState(), alpha.LocalState(), false});
  alpha.TakeActions();
  ASSERT_TRUE(alpha.Promote(false).ok());
  EXPECT_EQ(alpha.role(), Role::kPrimary);
  EXPECT_FALSE(alpha.promotion_pending());
  EXPECT_EQ(All<SendState>(alpha.TakeActions()).size(), 1u);
}

}  // namespace
}  // namespace repld
