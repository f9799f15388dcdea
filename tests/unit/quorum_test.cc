// Quorum, votes and fencing (replication/quorum.h, voter.h) in the cases docs/quorum.md's table
// names, on three nodes whose messages arrive at once; tests/sim/quorum_world.cc runs the same
// code through random partitions, delays, clocks and crashes.
#include "replication/quorum.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <memory>

namespace repld::quorum {
namespace {

using ::testing::HasSubstr;

constexpr NodeId kAlpha = 0, kBeta = 1, kWitness = 2;

class Cluster {
 public:
  Cluster() {
    opt_.members = 3;
    opt_.witness = kWitness;
    opt_.ping_interval_ms = 100;
    opt_.lease_ms = 400;
    for (NodeId i = 0; i < 3; ++i) Start(i);
  }
  void Start(NodeId i, uint8_t outdated_mask = 0) {
    QuorumOptions o = opt_;
    o.self = i;
    nodes_[i] = std::make_unique<QuorumNode>(o, outdated_mask, now_);
    if (i != kWitness) nodes_[i]->SetLocal(local_[i], now_);
  }
  QuorumNode& operator[](NodeId i) { return *nodes_[i]; }
  uint64_t now() const { return now_; }
  uint64_t vote_wait() const { return VoteWaitMs(opt_); }

  void Link(NodeId a, NodeId b) {
    up_[a][b] = up_[b][a] = true;
    nodes_[a]->LinkUp(b, now_);
    nodes_[b]->LinkUp(a, now_);
    Pump();
  }
  // The node stops: its links drop without the others noticing yet (no LinkDown).
  void PowerLoss(NodeId i) {
    for (NodeId j = 0; j < 3; ++j) up_[i][j] = up_[j][i] = false;
  }
  void Cut(NodeId a, NodeId b) {
    up_[a][b] = up_[b][a] = false;
    nodes_[a]->LinkDown(b, now_);
    nodes_[b]->LinkDown(a, now_);
    Pump();
  }
  void Set(NodeId i, Role role, DiskState disk, bool connected) {
    local_[i] = {role, disk, connected, connected ? local_[1 - i].disk : DiskState::kDiskless};
    nodes_[i]->SetLocal(local_[i], now_);
    Pump();
  }
  // Time passes in steps of 50 ms, with pings answered at once.
  void Advance(uint64_t ms) {
    for (uint64_t t = 0; t < ms; t += 50) {
      now_ += 50;
      for (auto& n : nodes_) n->Tick(now_);
      Pump();
    }
  }
  void Pump() {
    for (bool more = true; more;) {
      more = false;
      for (NodeId i = 0; i < 3; ++i) {
        for (Action& a : nodes_[i]->TakeActions()) {
          more = true;
          if (auto* s = std::get_if<Send>(&a)) {
            if (up_[i][s->to]) nodes_[s->to]->Receive(i, s->message, now_);
          } else {
            events_[i].push_back(std::move(a));
          }
        }
      }
    }
  }
  template <typename T>
  const T* Last(NodeId i) const {
    for (auto it = events_[i].rbegin(); it != events_[i].rend(); ++it) {
      if (const T* t = std::get_if<T>(&*it)) return t;
    }
    return nullptr;
  }
  void Forget() {
    for (auto& e : events_) e.clear();
  }
  // alpha Primary, beta Secondary, all three linked.
  void HealthyPair() {
    Link(kAlpha, kBeta);
    Link(kAlpha, kWitness);
    Link(kBeta, kWitness);
    Set(kAlpha, Role::kSecondary, DiskState::kUpToDate, true);
    Set(kBeta, Role::kSecondary, DiskState::kUpToDate, true);
    Set(kAlpha, Role::kSecondary, DiskState::kUpToDate, true);
    Advance(vote_wait() + 100);  // past every voter's start
    nodes_[kAlpha]->StartCandidacy(now_);
    Pump();
    ASSERT_NE(Last<CandidacyDone>(kAlpha), nullptr);
    ASSERT_TRUE(Last<CandidacyDone>(kAlpha)->won) << Last<CandidacyDone>(kAlpha)->reason;
    Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, true);
    Advance(200);
    Forget();
  }

 private:
  QuorumOptions opt_;
  uint64_t now_ = 1000;
  std::unique_ptr<QuorumNode> nodes_[3];
  LocalState local_[3];
  bool up_[3][3] = {};
  std::deque<Action> events_[3];
};

TEST(Quorum, PrimaryCutFromItsPeerKeepsQuorumAndFencesThePeerThroughTheWitness) {
  Cluster c;
  c.HealthyPair();
  c.Cut(kAlpha, kBeta);
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, false);
  c.Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, false);
  EXPECT_NE(c.Last<PeerFenced>(kAlpha), nullptr);
  EXPECT_TRUE(c[kAlpha].PeerSafe());
  EXPECT_TRUE(c[kWitness].voter().IsOutdated(kBeta));
  c.Advance(1000);
  EXPECT_NE(c.Last<BecomeOutdated>(kBeta), nullptr);  // the witness's answers told it
  EXPECT_TRUE(c[kAlpha].HasQuorum(c.now()));
  // beta, Outdated, never wins: it does not even stand.
  c.Set(kBeta, Role::kSecondary, DiskState::kOutdated, false);
  EXPECT_THAT(c[kBeta].WhyNotCandidate(c.now()), HasSubstr("Outdated"));
}

TEST(Quorum, NoFenceWithoutTheWitness) {
  Cluster c;
  c.HealthyPair();
  c.Cut(kAlpha, kWitness);
  c.Cut(kAlpha, kBeta);
  c.Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, false);
  c.Advance(2000);
  EXPECT_EQ(c.Last<PeerFenced>(kAlpha), nullptr);
  EXPECT_FALSE(c[kAlpha].PeerSafe());
  EXPECT_FALSE(c[kAlpha].HasQuorum(c.now()));
  // The witness comes back: the fence completes, quorum returns.
  c.Link(kAlpha, kWitness);
  c.Advance(200);
  EXPECT_NE(c.Last<PeerFenced>(kAlpha), nullptr);
  EXPECT_TRUE(c[kAlpha].HasQuorum(c.now()));
}

TEST(Quorum, TheWitnessRefusesACandidateWhileThePrimaryPingsIt) {
  Cluster c;
  c.HealthyPair();
  c.Cut(kAlpha, kBeta);
  c.Advance(c.vote_wait() + 200);  // beta's own memory of alpha's pings has passed
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, false);
  c[kBeta].StartCandidacy(c.now());
  c.Pump();
  ASSERT_NE(c.Last<CandidacyDone>(kBeta), nullptr);
  EXPECT_FALSE(c.Last<CandidacyDone>(kBeta)->won);
  EXPECT_THAT(c.Last<CandidacyDone>(kBeta)->reason, HasSubstr("backs another Primary"));
}

TEST(Quorum, AnIsolatedPrimaryLosesQuorumBeforeTheSurvivorCanWin) {
  Cluster c;
  c.HealthyPair();
  const uint64_t cut = c.now();
  c.Cut(kAlpha, kBeta);
  c.Cut(kAlpha, kWitness);
  EXPECT_FALSE(c[kAlpha].HasQuorum(c.now()));  // links down: it stops counting them at once
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, false);
  uint64_t won_at = 0;
  while (won_at == 0 && c.now() < cut + 10'000) {
    c.Advance(50);
    if (c[kBeta].WhyNotCandidate(c.now()).empty()) {
      c[kBeta].StartCandidacy(c.now());
      c.Pump();
      const CandidacyDone* d = c.Last<CandidacyDone>(kBeta);
      if (d != nullptr && d->won) won_at = c.now();
    }
  }
  ASSERT_NE(won_at, 0u);
  EXPECT_GE(won_at, cut + c.vote_wait());
  // The vote marks nobody (beta might not promote after all); once Primary, beta fences alpha:
  // Outdated at the witness and at beta.
  EXPECT_FALSE(c[kWitness].voter().IsOutdated(kAlpha));
  c.Set(kBeta, Role::kPrimary, DiskState::kUpToDate, false);
  EXPECT_NE(c.Last<PeerFenced>(kBeta), nullptr);
  EXPECT_TRUE(c[kWitness].voter().IsOutdated(kAlpha));
  EXPECT_TRUE(c[kBeta].voter().IsOutdated(kAlpha));
  EXPECT_TRUE(c[kBeta].PeerSafe());
  EXPECT_TRUE(c[kBeta].HasQuorum(c.now()));
  // alpha's links come back: still Primary, it gets no backing (Outdated, and beta is Primary).
  c.Link(kAlpha, kWitness);
  c.Advance(1000);
  EXPECT_FALSE(c[kAlpha].HasQuorum(c.now()));
  EXPECT_EQ(c[kAlpha].BackedBy(kWitness), kBeta);
}

// beta and the witness lose power and start again within alpha's lease, which alpha, not yet
// aware, still holds: a voter that just started backs nobody for vote_wait, so beta cannot win
// while alpha has quorum.
TEST(Quorum, VotersThatRestartedWaitOutTheLeasesTheyMayHaveGiven) {
  Cluster c;
  c.HealthyPair();
  c.PowerLoss(kBeta);
  c.PowerLoss(kWitness);
  c.Start(kBeta);
  c.Start(kWitness);
  c.Link(kBeta, kWitness);
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, false);
  ASSERT_TRUE(c[kAlpha].HasQuorum(c.now()));  // not aware yet
  bool won = false;
  for (int step = 0; step < 200 && !won; ++step) {
    if (c[kBeta].WhyNotCandidate(c.now()).empty()) {
      c[kBeta].StartCandidacy(c.now());
      c.Pump();
      const CandidacyDone* d = c.Last<CandidacyDone>(kBeta);
      won = d != nullptr && d->won;
      if (won) {
        EXPECT_FALSE(c[kAlpha].HasQuorum(c.now()));
      }
    }
    c.Advance(50);
  }
  EXPECT_TRUE(won);
}

// A node promoted without a vote (the replica's own agreement with its peer) keeps no backing
// from an earlier stint: voters that let it go, or that back another, do not count.
TEST(Quorum, APromotionWithoutAVoteStartsWithoutQuorum) {
  Cluster c;
  c.HealthyPair();
  c.Set(kAlpha, Role::kSecondary, DiskState::kUpToDate, true);  // a switchover
  c.Advance(100);
  c[kBeta].StartCandidacy(c.now());
  c.Pump();
  ASSERT_TRUE(c.Last<CandidacyDone>(kBeta)->won);
  c.Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, true);  // no vote
  EXPECT_FALSE(c[kAlpha].HasQuorum(c.now()));
  c.Set(kBeta, Role::kPrimary, DiskState::kUpToDate, true);
  EXPECT_TRUE(c[kBeta].HasQuorum(c.now()));
  EXPECT_FALSE(c[kAlpha].HasQuorum(c.now()));
}

TEST(Quorum, CrossedCandidaciesElectOne) {
  Cluster c;
  c.Link(kAlpha, kBeta);
  c.Link(kAlpha, kWitness);
  c.Link(kBeta, kWitness);
  c.Set(kAlpha, Role::kSecondary, DiskState::kUpToDate, true);
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, true);
  c.Set(kAlpha, Role::kSecondary, DiskState::kUpToDate, true);
  c.Advance(c.vote_wait() + 100);
  c[kBeta].StartCandidacy(c.now());  // its request reaches the witness first
  c[kAlpha].StartCandidacy(c.now());
  c.Pump();
  const CandidacyDone* a = c.Last<CandidacyDone>(kAlpha);
  const CandidacyDone* b = c.Last<CandidacyDone>(kBeta);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->won + b->won, 1);
}

TEST(Quorum, AStartedVoterBacksNobodyForTheVoteWait) {
  Cluster c;
  c.Link(kBeta, kWitness);
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, false);
  c.Advance(100);
  EXPECT_THAT(c[kBeta].WhyNotCandidate(c.now()), HasSubstr("started recently"));
  c.Advance(c.vote_wait());
  EXPECT_EQ(c[kBeta].WhyNotCandidate(c.now()), "");
}

TEST(Quorum, WhyNotCandidateNamesTheReason) {
  Cluster c;
  c.Link(kBeta, kWitness);
  c.Advance(c.vote_wait() + 100);
  c.Set(kBeta, Role::kSecondary, DiskState::kInconsistent, false);
  EXPECT_THAT(c[kBeta].WhyNotCandidate(c.now()), HasSubstr("Inconsistent, not UpToDate"));
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, false);
  c.Cut(kBeta, kWitness);
  EXPECT_EQ(c[kBeta].WhyNotCandidate(c.now()), "no quorum");
  EXPECT_EQ(c[kWitness].WhyNotCandidate(c.now()), "the witness is never Primary");
}

TEST(Quorum, AnOutdatedNoticeIsIgnoredWhileConnectedToThePeer) {
  Cluster c;
  c.HealthyPair();
  c.Cut(kAlpha, kBeta);
  c.Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, false);
  c.Advance(300);
  // beta has not noticed the cut yet: Connected in its view, it does not take the record.
  EXPECT_TRUE(c[kWitness].voter().IsOutdated(kBeta));
  EXPECT_EQ(c.Last<BecomeOutdated>(kBeta), nullptr);
  // It reconnects and resyncs; the witness still holds it Outdated until alpha reports.
  c.Link(kAlpha, kBeta);
  c.Set(kBeta, Role::kSecondary, DiskState::kUpToDate, true);
  c.Advance(300);
  EXPECT_EQ(c.Last<BecomeOutdated>(kBeta), nullptr);
  // Both UpToDate and Connected: alpha's report clears beta at the witness.
  c.Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, true);
  c.Advance(300);
  EXPECT_FALSE(c[kWitness].voter().IsOutdated(kBeta));
  EXPECT_FALSE(c[kAlpha].voter().IsOutdated(kBeta));
}

TEST(Quorum, TheWitnessKeepsItsRecordAcrossARestart) {
  Cluster c;
  c.HealthyPair();
  c.Cut(kAlpha, kBeta);
  c.Set(kAlpha, Role::kPrimary, DiskState::kUpToDate, false);
  const PersistOutdated* p = c.Last<PersistOutdated>(kWitness);
  ASSERT_NE(p, nullptr);
  c.Start(kWitness, p->mask);  // what it persisted
  EXPECT_TRUE(c[kWitness].voter().IsOutdated(kBeta));
}

}  // namespace
}  // namespace repld::quorum
