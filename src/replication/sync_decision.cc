#include "replication/sync_decision.h"

#include <array>

namespace repld {

namespace {

std::string Hex(uint64_t id) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, id >>= 4) out[static_cast<size_t>(i)] = kDigits[id & 0xf];
  return out;
}

std::string Ids(const GenerationIds& ids) {
  return Hex(ids.current) + ":" + Hex(ids.bitmap) + ":" + Hex(ids.history[0]) + ":" +
         Hex(ids.history[1]);
}

// The ids a node's data descends from, besides its current one (0: none; callers skip it).
std::array<uint64_t, 3> Ancestors(const GenerationIds& ids) {
  return {ids.bitmap, ids.history[0], ids.history[1]};
}

bool InHistory(uint64_t id, const GenerationIds& ids) {
  return id != 0 && (ids.history[0] == id || ids.history[1] == id);
}

bool ShareAnAncestor(const GenerationIds& a, const GenerationIds& b) {
  for (uint64_t x : Ancestors(a)) {
    if (x == 0) continue;
    for (uint64_t y : Ancestors(b)) {
      if (x == y) return true;
    }
  }
  return false;
}

SyncDecision Make(SyncPlan plan, int rule, const std::string& text) {
  return SyncDecision{plan, rule, "rule " + std::to_string(rule) + ": " + text};
}

// The table, without the role checks.
SyncDecision Table(const SyncSide& mine, const SyncSide& theirs) {
  const GenerationIds& m = mine.ids;
  const GenerationIds& t = theirs.ids;
  const bool my_data = mine.disk == DiskState::kUpToDate;
  const bool their_data = theirs.disk == DiskState::kUpToDate;
  if (m.current == 0 && t.current == 0) {
    return Make(SyncPlan::kNone, 10,
                "both disks are new (no data yet); 'replctl primary --force' on one node makes "
                "its data the one that counts and starts the initial full sync");
  }
  if (m.current == t.current) {
    const bool my_bits = my_data && mine.out_of_sync_bytes > 0;
    const bool their_bits = their_data && theirs.out_of_sync_bytes > 0;
    if (my_bits && their_bits) {
      // A Primary's data counts; otherwise neither side can be preferred.
      if (mine.role == Role::kPrimary && theirs.role != Role::kPrimary) {
        return Make(SyncPlan::kBitmapSource, 21,
                    "same data generation, both bitmaps have blocks, this node is Primary: "
                    "bitmap sync from here");
      }
      if (theirs.role == Role::kPrimary && mine.role != Role::kPrimary) {
        return Make(SyncPlan::kTarget, 21,
                    "same data generation, both bitmaps have blocks, the peer is Primary: "
                    "bitmap sync from the peer");
      }
      return Make(SyncPlan::kRefuse, 22,
                  "same data generation and both bitmaps have blocks: make the node whose data "
                  "counts Primary, then connect again");
    }
    if (my_bits) {
      return Make(SyncPlan::kBitmapSource, 20,
                  "same data generation, our bitmap has blocks: bitmap sync from here");
    }
    if (their_bits) {
      return Make(SyncPlan::kTarget, 20,
                  "same data generation, the peer's bitmap has blocks: bitmap sync from the peer");
    }
    if (!my_data && !their_data) {
      return Make(SyncPlan::kRefuse, 23,
                  "same data generation, but neither disk is UpToDate (an interrupted full "
                  "sync?): 'replctl primary --force' on the node whose data counts");
    }
    return Make(SyncPlan::kNone, 24, "same data generation: in sync");
  }
  if (t.current == 0) {
    if (my_data)
      return Make(SyncPlan::kFullSource, 30, "the peer's disk is new: full sync from here");
    return Make(SyncPlan::kRefuse, 31,
                "the peer's disk is new, and ours is " + std::string(DiskStateName(mine.disk)) +
                    ": no node has data to send");
  }
  if (m.current == 0) {
    if (their_data) return Make(SyncPlan::kTarget, 30, "our disk is new: full sync from the peer");
    return Make(SyncPlan::kRefuse, 31,
                "our disk is new, and the peer's is " + std::string(DiskStateName(theirs.disk)) +
                    ": no node has data to send");
  }
  if (m.bitmap != 0 && m.bitmap == t.current) {
    if (my_data) {
      return Make(SyncPlan::kBitmapSource, 40,
                  "the peer's data is where ours was when we parted (our bitmap id): bitmap "
                  "sync from here");
    }
    return Make(SyncPlan::kRefuse, 41,
                "our data moved on from the peer's, but our disk is " +
                    std::string(DiskStateName(mine.disk)));
  }
  if (t.bitmap != 0 && t.bitmap == m.current) {
    if (their_data) {
      return Make(SyncPlan::kTarget, 40,
                  "our data is where the peer's was when we parted (its bitmap id): bitmap sync "
                  "from the peer");
    }
    return Make(SyncPlan::kRefuse, 41,
                "the peer's data moved on from ours, but its disk is " +
                    std::string(DiskStateName(theirs.disk)));
  }
  if (InHistory(t.current, m)) {
    if (my_data) {
      return Make(SyncPlan::kFullSource, 50,
                  "the peer's data is an older generation of ours (in our history): full sync "
                  "from here");
    }
    return Make(SyncPlan::kRefuse, 51,
                "the peer's data is an older generation of ours, but our disk is " +
                    std::string(DiskStateName(mine.disk)));
  }
  if (InHistory(m.current, t)) {
    if (their_data) {
      return Make(SyncPlan::kTarget, 50,
                  "our data is an older generation of the peer's (in its history): full sync "
                  "from the peer");
    }
    return Make(SyncPlan::kRefuse, 51,
                "our data is an older generation of the peer's, but its disk is " +
                    std::string(DiskStateName(theirs.disk)));
  }
  if (ShareAnAncestor(m, t)) {
    return Make(SyncPlan::kSplitBrain, 60,
                "split brain: both nodes changed the data since they were last connected "
                "(ours " +
                    Ids(m) + ", the peer's " + Ids(t) + ")");
  }
  return Make(SyncPlan::kUnrelated, 70,
              "unrelated data: the two disks share no data generation (ours " + Ids(m) +
                  ", the peer's " + Ids(t) + "); were they ever a pair?");
}

}  // namespace

const char* SyncPlanName(SyncPlan plan) {
  switch (plan) {
    case SyncPlan::kNone:
      return "none";
    case SyncPlan::kBitmapSource:
      return "bitmap-source";
    case SyncPlan::kFullSource:
      return "full-source";
    case SyncPlan::kTarget:
      return "target";
    case SyncPlan::kSplitBrain:
      return "split-brain";
    case SyncPlan::kUnrelated:
      return "unrelated";
    case SyncPlan::kRefuse:
      return "refuse";
  }
  return "?";
}

SyncDecision DecideSync(const SyncSide& mine, const SyncSide& theirs) {
  SyncDecision d = Table(mine, theirs);
  const bool source = d.plan == SyncPlan::kBitmapSource || d.plan == SyncPlan::kFullSource;
  if (d.plan == SyncPlan::kTarget && mine.role == Role::kPrimary) {
    d.plan = SyncPlan::kRefuse;
    d.text +=
        "; but this node is Primary and would have to become the sync target: demote it "
        "('replctl secondary') and connect again";
  } else if (source && theirs.role == Role::kPrimary) {
    d.plan = SyncPlan::kRefuse;
    d.text +=
        "; but the peer is Primary and would have to become the sync target: demote it "
        "('replctl secondary' there) and connect again";
  }
  return d;
}

}  // namespace repld
