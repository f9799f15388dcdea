// The activity log in the write path: writes whose cold extents do not all fit in one
// transaction still complete (found by review: three large trims at once hung for ever).
#include <gtest/gtest.h>

#include <set>

#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Runs the replica's actions until it has none, answering disk I/O and AL writes at once.
std::set<RequestId> RunToQuiet(Replica& r) {
  std::set<RequestId> completed;
  for (int round = 0; round < 10000; ++round) {
    std::vector<Action> actions = r.TakeActions();
    if (actions.empty()) break;
    for (Action& a : actions) {
      if (auto* w = std::get_if<SubmitWrite>(&a)) r.LocalWriteDone(w->id, 0);
      if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
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

}  // namespace
}  // namespace repld
