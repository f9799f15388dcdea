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

}  // namespace
}  // namespace repld
