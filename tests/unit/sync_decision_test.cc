// The connect-time decision table (replication/sync_decision.h): every row, from both sides.
#include "replication/sync_decision.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace repld {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint64_t kX = 0x1000, kY = 0x2000, kZ = 0x3000, kOld = 0x4000, kOther = 0x5000;
constexpr uint64_t kMiB = 1 << 20;

SyncSide Side(GenerationIds ids, DiskState disk = DiskState::kUpToDate,
              Role role = Role::kSecondary, uint64_t out_of_sync_bytes = 0) {
  return SyncSide{ids, disk, role, out_of_sync_bytes};
}

// What the other node must decide when this one decides `plan`.
SyncPlan Mirror(SyncPlan plan) {
  switch (plan) {
    case SyncPlan::kBitmapSource:
    case SyncPlan::kFullSource:
      return SyncPlan::kTarget;
    default:
      return plan;
  }
}

struct Row {
  const char* what;
  SyncSide a;
  SyncSide b;
  SyncPlan a_plan;
  int rule;
};

class SyncDecisionTable : public ::testing::TestWithParam<Row> {};

TEST_P(SyncDecisionTable, BothNodesAgree) {
  const Row& row = GetParam();
  const SyncDecision a = DecideSync(row.a, row.b);
  const SyncDecision b = DecideSync(row.b, row.a);
  EXPECT_EQ(a.plan, row.a_plan) << row.what << ": " << a.text;
  EXPECT_EQ(a.rule, row.rule) << row.what << ": " << a.text;
  EXPECT_THAT(a.text, StartsWith("rule " + std::to_string(row.rule) + ": "));
  // The peer, deciding alone from the same two States, takes the other end.
  if (row.a_plan == SyncPlan::kTarget) {
    EXPECT_TRUE(b.plan == SyncPlan::kBitmapSource || b.plan == SyncPlan::kFullSource)
        << row.what << ": the peer decided " << SyncPlanName(b.plan) << ": " << b.text;
  } else {
    EXPECT_EQ(b.plan, Mirror(row.a_plan)) << row.what << ": the peer: " << b.text;
  }
  EXPECT_EQ(b.rule, row.rule) << row.what << ": the peer: " << b.text;
}

const GenerationIds kFresh{};
const GenerationIds kAtX{kX, 0, {kOld, 0}};
// Moved on from X while apart (a Primary that lost its peer, or one promoted alone).
const GenerationIds kMovedToY{kY, kX, {kX, kOld}};
const GenerationIds kMovedToZ{kZ, kX, {kX, kOld}};
// Forced over: X is history, no bitmap.
const GenerationIds kForcedToY{kY, 0, {kX, kOld}};

INSTANTIATE_TEST_SUITE_P(
    Rows, SyncDecisionTable,
    ::testing::Values(
        Row{"both new", Side(kFresh, DiskState::kInconsistent),
            Side(kFresh, DiskState::kInconsistent), SyncPlan::kNone, 10},
        Row{"same generation, no bits", Side(kAtX), Side(kAtX), SyncPlan::kNone, 24},
        Row{"we have no disk, the peer serves the generation we served",
            Side(kAtX, DiskState::kDiskless, Role::kPrimary),
            Side(kAtX, DiskState::kUpToDate, Role::kSecondary, kMiB), SyncPlan::kNone, 15},
        Row{"the peer has no disk (its bits are its own), on our generation",
            Side(kAtX, DiskState::kUpToDate, Role::kSecondary, kMiB),
            Side(kAtX, DiskState::kDiskless, Role::kPrimary, kMiB), SyncPlan::kNone, 15},
        Row{"we have no disk, the peer moved on without us",
            Side(kAtX, DiskState::kDiskless, Role::kPrimary), Side(kMovedToY), SyncPlan::kRefuse,
            16},
        Row{"we have no disk, the peer is not UpToDate",
            Side(kAtX, DiskState::kDiskless, Role::kPrimary), Side(kAtX, DiskState::kInconsistent),
            SyncPlan::kRefuse, 16},
        Row{"neither has a disk", Side(kAtX, DiskState::kDiskless, Role::kPrimary),
            Side(kAtX, DiskState::kDiskless), SyncPlan::kRefuse, 16},
        Row{"same generation, the peer outdated", Side(kAtX), Side(kAtX, DiskState::kOutdated),
            SyncPlan::kNone, 24},
        Row{"same generation, our bits", Side(kAtX, DiskState::kUpToDate, Role::kPrimary, kMiB),
            Side(kAtX), SyncPlan::kBitmapSource, 20},
        Row{"same generation, the peer's bits", Side(kAtX),
            Side(kAtX, DiskState::kUpToDate, Role::kSecondary, kMiB), SyncPlan::kTarget, 20},
        Row{"same generation, both bits, we are Primary",
            Side(kAtX, DiskState::kUpToDate, Role::kPrimary, kMiB),
            Side(kAtX, DiskState::kUpToDate, Role::kSecondary, 2 * kMiB), SyncPlan::kBitmapSource,
            21},
        Row{"same generation, both bits, neither Primary",
            Side(kAtX, DiskState::kUpToDate, Role::kSecondary, kMiB),
            Side(kAtX, DiskState::kUpToDate, Role::kSecondary, kMiB), SyncPlan::kRefuse, 22},
        Row{"same generation, the peer is a fast-failback Primary with bits", Side(kAtX),
            Side(kAtX, DiskState::kInconsistent, Role::kPrimary, kMiB), SyncPlan::kBitmapSource,
            25},
        Row{"same generation, we are a fast-failback Primary with bits",
            Side(kAtX, DiskState::kInconsistent, Role::kPrimary, kMiB), Side(kAtX),
            SyncPlan::kTarget, 25},
        Row{"same generation, the Secondary's disk failed a write (pass_on: marked)",
            Side(kAtX, DiskState::kUpToDate, Role::kPrimary),
            Side(kAtX, DiskState::kInconsistent, Role::kSecondary, kMiB), SyncPlan::kBitmapSource,
            25},
        Row{"same generation, our disk failed a flush (Inconsistent, nothing marked)",
            Side(kAtX, DiskState::kInconsistent), Side(kAtX, DiskState::kUpToDate, Role::kPrimary),
            SyncPlan::kTarget, 25},
        Row{"the Primary moved on when our disk failed", Side(kAtX, DiskState::kInconsistent),
            Side(kMovedToY, DiskState::kUpToDate, Role::kPrimary, kMiB), SyncPlan::kTarget, 40},
        Row{"same generation, neither UpToDate", Side(kAtX, DiskState::kInconsistent),
            Side(kAtX, DiskState::kInconsistent), SyncPlan::kRefuse, 23},
        Row{"the peer is new", Side(kAtX), Side(kFresh, DiskState::kInconsistent),
            SyncPlan::kFullSource, 30},
        Row{"we are new", Side(kFresh, DiskState::kInconsistent), Side(kAtX), SyncPlan::kTarget,
            30},
        Row{"the peer is new and we are not UpToDate", Side(kAtX, DiskState::kInconsistent),
            Side(kFresh, DiskState::kInconsistent), SyncPlan::kRefuse, 31},
        Row{"we moved on", Side(kMovedToY, DiskState::kUpToDate, Role::kPrimary, 8 * kMiB),
            Side(kAtX), SyncPlan::kBitmapSource, 40},
        Row{"the peer moved on", Side(kAtX),
            Side(kMovedToY, DiskState::kUpToDate, Role::kPrimary, 8 * kMiB), SyncPlan::kTarget, 40},
        Row{"we moved on but are not UpToDate", Side(kMovedToY, DiskState::kInconsistent),
            Side(kAtX), SyncPlan::kRefuse, 41},
        Row{"we moved on, the peer is Primary at the old generation",
            Side(kMovedToY, DiskState::kUpToDate, Role::kSecondary, kMiB),
            Side(kAtX, DiskState::kUpToDate, Role::kPrimary), SyncPlan::kRefuse, 40},
        Row{"the peer is an older generation", Side(kForcedToY), Side(kAtX), SyncPlan::kFullSource,
            50},
        Row{"we are an older generation", Side(kAtX), Side(kForcedToY), SyncPlan::kTarget, 50},
        Row{"both moved on from X", Side(kMovedToY, DiskState::kUpToDate, Role::kPrimary, kMiB),
            Side(kMovedToZ, DiskState::kUpToDate, Role::kSecondary, 3 * kMiB),
            SyncPlan::kSplitBrain, 60},
        Row{"both moved on, one was forced", Side(kForcedToY),
            Side(kMovedToZ, DiskState::kUpToDate, Role::kPrimary, kMiB), SyncPlan::kSplitBrain, 60},
        Row{"nothing in common", Side(kAtX), Side(GenerationIds{kOther, 0, {0, 0}}),
            SyncPlan::kUnrelated, 70}));

TEST(SyncDecision, SplitBrainAndUnrelatedNameBothNodesIds) {
  const SyncDecision d =
      DecideSync(Side(kMovedToY, DiskState::kUpToDate, Role::kPrimary), Side(kMovedToZ));
  EXPECT_THAT(d.text, HasSubstr("split brain"));
  EXPECT_THAT(d.text, HasSubstr("0000000000002000:0000000000001000"));  // ours
  EXPECT_THAT(d.text, HasSubstr("0000000000003000:0000000000001000"));  // the peer's
  const SyncDecision u = DecideSync(Side(kAtX), Side(GenerationIds{kOther, 0, {0, 0}}));
  EXPECT_THAT(u.text, HasSubstr("unrelated data"));
}

TEST(SyncDecision, APrimaryIsNeverMadeATarget) {
  const SyncDecision d = DecideSync(Side(kAtX, DiskState::kUpToDate, Role::kPrimary),
                                    Side(kMovedToY, DiskState::kUpToDate, Role::kSecondary, kMiB));
  EXPECT_EQ(d.plan, SyncPlan::kRefuse);
  EXPECT_THAT(d.text, HasSubstr("this node is Primary and would have to become the sync target"));
}

// --- Split brain resolved by the operator or a policy (rules 61..64) ---

SyncSide Split(GenerationIds ids, Role role, uint64_t changed, bool primary_at_split = false,
               bool discard = false, DiskState disk = DiskState::kUpToDate) {
  SyncSide s{ids, disk, role, changed};
  s.primary_at_split = primary_at_split;
  s.discard_my_data = discard;
  return s;
}

struct PolicyRow {
  const char* what;
  SplitBrainPolicy policy;
  SyncSide a;
  SyncSide b;
  SyncPlan a_plan;
  int rule;
};

class SplitBrainPolicies : public ::testing::TestWithParam<PolicyRow> {};

TEST_P(SplitBrainPolicies, BothNodesAgree) {
  const PolicyRow& row = GetParam();
  const SyncDecision a = DecideSync(row.a, row.b, row.policy);
  const SyncDecision b = DecideSync(row.b, row.a, row.policy);
  EXPECT_EQ(a.plan, row.a_plan) << row.what << ": " << a.text;
  EXPECT_EQ(a.rule, row.rule) << row.what << ": " << a.text;
  EXPECT_EQ(b.rule, row.rule) << row.what << ": the peer: " << b.text;
  if (row.a_plan == SyncPlan::kTarget) {
    EXPECT_TRUE(b.plan == SyncPlan::kBitmapSource || b.plan == SyncPlan::kFullSource)
        << row.what << ": the peer decided " << SyncPlanName(b.plan) << ": " << b.text;
  } else {
    EXPECT_EQ(b.plan, Mirror(row.a_plan)) << row.what << ": the peer: " << b.text;
  }
}

constexpr SplitBrainPolicy kNoPolicy{};
constexpr SplitBrainPolicy kYounger{AfterSb0Pri::kDiscardYoungerPrimary};
constexpr SplitBrainPolicy kLeast{AfterSb0Pri::kDiscardLeastChanges};
constexpr SplitBrainPolicy kZero{AfterSb0Pri::kDiscardZeroChanges};
constexpr SplitBrainPolicy kDiscardSecondary{AfterSb0Pri::kDisconnect,
                                             AfterSb1Pri::kDiscardSecondary};
constexpr SplitBrainPolicy kConsensusLeast{AfterSb0Pri::kDiscardLeastChanges,
                                           AfterSb1Pri::kConsensus};
constexpr SplitBrainPolicy kEverything{AfterSb0Pri::kDiscardLeastChanges,
                                       AfterSb1Pri::kDiscardSecondary, AfterSb2Pri::kDisconnect};
constexpr Role kS = Role::kSecondary, kP = Role::kPrimary;

INSTANTIATE_TEST_SUITE_P(
    Rows, SplitBrainPolicies,
    ::testing::Values(
        PolicyRow{"no policy: an operator decides", kNoPolicy, Split(kMovedToY, kS, kMiB),
                  Split(kMovedToZ, kS, 2 * kMiB), SyncPlan::kSplitBrain, 60},
        PolicyRow{"discard-my-data here: bitmap sync from the peer", kNoPolicy,
                  Split(kMovedToY, kS, kMiB, false, true), Split(kMovedToZ, kP, 2 * kMiB),
                  SyncPlan::kTarget, 61},
        PolicyRow{"discard-my-data on the peer: bitmap sync from here", kNoPolicy,
                  Split(kMovedToY, kS, kMiB), Split(kMovedToZ, kS, 2 * kMiB, false, true),
                  SyncPlan::kBitmapSource, 61},
        PolicyRow{"discard-my-data, parted from different generations: full sync", kNoPolicy,
                  Split(kForcedToY, kS, kMiB), Split(kMovedToZ, kS, 0, false, true),
                  SyncPlan::kFullSource, 61},
        PolicyRow{"discard-my-data on both", kNoPolicy, Split(kMovedToY, kS, kMiB, false, true),
                  Split(kMovedToZ, kS, kMiB, false, true), SyncPlan::kRefuse, 62},
        PolicyRow{"discard-my-data on a Primary: refused", kNoPolicy,
                  Split(kMovedToY, kP, kMiB, false, true), Split(kMovedToZ, kS, kMiB),
                  SyncPlan::kRefuse, 61},
        PolicyRow{"the survivor is not UpToDate", kNoPolicy,
                  Split(kMovedToY, kS, kMiB, false, false, DiskState::kOutdated),
                  Split(kMovedToZ, kS, kMiB, false, true), SyncPlan::kRefuse, 64},
        PolicyRow{"0pri discard-younger-primary: we were promoted later", kYounger,
                  Split(kMovedToY, kS, kMiB, false), Split(kMovedToZ, kS, kMiB, true),
                  SyncPlan::kTarget, 63},
        PolicyRow{"0pri discard-younger-primary: both promoted alone", kYounger,
                  Split(kMovedToY, kS, kMiB), Split(kMovedToZ, kS, kMiB), SyncPlan::kSplitBrain,
                  60},
        PolicyRow{"0pri discard-least-changes", kLeast, Split(kMovedToY, kS, 3 * kMiB),
                  Split(kMovedToZ, kS, kMiB), SyncPlan::kBitmapSource, 63},
        PolicyRow{"0pri discard-least-changes, a tie", kLeast, Split(kMovedToY, kS, kMiB),
                  Split(kMovedToZ, kS, kMiB), SyncPlan::kSplitBrain, 60},
        PolicyRow{"0pri discard-zero-changes", kZero, Split(kMovedToY, kS, 0),
                  Split(kMovedToZ, kS, kMiB), SyncPlan::kTarget, 63},
        PolicyRow{"0pri discard-zero-changes, both changed", kZero, Split(kMovedToY, kS, kMiB),
                  Split(kMovedToZ, kS, 2 * kMiB), SyncPlan::kSplitBrain, 60},
        PolicyRow{"0pri policy does not apply with one Primary", kLeast,
                  Split(kMovedToY, kP, 3 * kMiB), Split(kMovedToZ, kS, kMiB), SyncPlan::kSplitBrain,
                  60},
        PolicyRow{"1pri discard-secondary", kDiscardSecondary, Split(kMovedToY, kP, kMiB),
                  Split(kMovedToZ, kS, 5 * kMiB), SyncPlan::kBitmapSource, 63},
        PolicyRow{"1pri consensus: 0pri also discards the Secondary", kConsensusLeast,
                  Split(kMovedToY, kP, 5 * kMiB), Split(kMovedToZ, kS, kMiB),
                  SyncPlan::kBitmapSource, 63},
        PolicyRow{"1pri consensus: 0pri would discard the Primary", kConsensusLeast,
                  Split(kMovedToY, kP, kMiB), Split(kMovedToZ, kS, 5 * kMiB), SyncPlan::kSplitBrain,
                  60},
        PolicyRow{"2pri: only disconnect", kEverything, Split(kMovedToY, kP, kMiB),
                  Split(kMovedToZ, kP, 5 * kMiB), SyncPlan::kSplitBrain, 60}));

TEST(SyncDecision, ResolvedSplitBrainSaysWhoAndHow) {
  const SyncDecision d =
      DecideSync(Split(kMovedToY, kS, 3 * kMiB), Split(kMovedToZ, kS, kMiB), kLeast);
  EXPECT_THAT(d.text, HasSubstr("after_sb_0pri = discard-least-changes"));
  EXPECT_THAT(d.text, HasSubstr("the peer's changes are discarded, bitmap sync from here"));
}

TEST(SyncDecision, PolicyNamesRoundTrip) {
  for (auto p : {AfterSb0Pri::kDisconnect, AfterSb0Pri::kDiscardYoungerPrimary,
                 AfterSb0Pri::kDiscardLeastChanges, AfterSb0Pri::kDiscardZeroChanges}) {
    AfterSb0Pri back{};
    EXPECT_TRUE(ParseAfterSb0Pri(AfterSb0PriName(p), &back));
    EXPECT_EQ(back, p);
  }
  AfterSb1Pri one{};
  EXPECT_TRUE(ParseAfterSb1Pri("discard-secondary", &one));
  EXPECT_EQ(one, AfterSb1Pri::kDiscardSecondary);
  EXPECT_FALSE(ParseAfterSb1Pri("discard-younger-primary", &one));
  AfterSb2Pri two{};
  EXPECT_FALSE(ParseAfterSb2Pri("violently", &two));
}

}  // namespace
}  // namespace repld
