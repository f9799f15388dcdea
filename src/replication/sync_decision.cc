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

enum class Loser { kNone, kMe, kPeer };

// after-sb-0pri: which node's changes go, or kNone (the policy does not decide this case).
Loser ZeroPrimaries(AfterSb0Pri p, const SyncSide& mine, const SyncSide& theirs) {
  switch (p) {
    case AfterSb0Pri::kDisconnect:
      return Loser::kNone;
    case AfterSb0Pri::kDiscardYoungerPrimary:
      if (mine.primary_at_split == theirs.primary_at_split) return Loser::kNone;
      return mine.primary_at_split ? Loser::kPeer : Loser::kMe;
    case AfterSb0Pri::kDiscardLeastChanges:
      if (mine.out_of_sync_bytes == theirs.out_of_sync_bytes) return Loser::kNone;
      return mine.out_of_sync_bytes < theirs.out_of_sync_bytes ? Loser::kMe : Loser::kPeer;
    case AfterSb0Pri::kDiscardZeroChanges: {
      const bool mine_zero = mine.out_of_sync_bytes == 0,
                 theirs_zero = theirs.out_of_sync_bytes == 0;
      if (mine_zero == theirs_zero) return Loser::kNone;
      return mine_zero ? Loser::kMe : Loser::kPeer;
    }
  }
  return Loser::kNone;
}

// after-sb-1pri: exactly one of the two is Primary.
Loser OnePrimary(const SplitBrainPolicy& policy, const SyncSide& mine, const SyncSide& theirs) {
  const Loser secondary = mine.role == Role::kPrimary ? Loser::kPeer : Loser::kMe;
  switch (policy.one_primary) {
    case AfterSb1Pri::kDisconnect:
      return Loser::kNone;
    case AfterSb1Pri::kConsensus:
      return ZeroPrimaries(policy.zero_primaries, mine, theirs) == secondary ? secondary
                                                                             : Loser::kNone;
    case AfterSb1Pri::kDiscardSecondary:
      return secondary;
  }
  return Loser::kNone;
}

// Rule 60 and its resolutions: an operator's --discard-my-data (61), or a policy (63).
SyncDecision SplitBrain(const SyncSide& mine, const SyncSide& theirs,
                        const SplitBrainPolicy& policy) {
  const GenerationIds& m = mine.ids;
  const GenerationIds& t = theirs.ids;
  const std::string ids = "ours " + Ids(m) + ", the peer's " + Ids(t);
  if (mine.discard_my_data && theirs.discard_my_data) {
    return Make(SyncPlan::kRefuse, 62,
                "split brain, and both nodes were told to discard their data: run 'replctl "
                "connect --discard-my-data' on one node only (" +
                    ids + ")");
  }
  Loser loser = Loser::kNone;
  int rule = 60;
  std::string why;
  if (mine.discard_my_data || theirs.discard_my_data) {
    loser = mine.discard_my_data ? Loser::kMe : Loser::kPeer;
    rule = 61;
    why = "split brain resolved by the operator (connect --discard-my-data on " +
          std::string(loser == Loser::kMe ? "this node" : "the peer") + ")";
  } else {
    const int primaries = (mine.role == Role::kPrimary) + (theirs.role == Role::kPrimary);
    if (primaries == 0) {
      loser = ZeroPrimaries(policy.zero_primaries, mine, theirs);
      why = std::string("split brain resolved by after_sb_0pri = ") +
            AfterSb0PriName(policy.zero_primaries);
    } else if (primaries == 1) {
      loser = OnePrimary(policy, mine, theirs);
      why = std::string("split brain resolved by after_sb_1pri = ") +
            AfterSb1PriName(policy.one_primary);
      if (policy.one_primary == AfterSb1Pri::kConsensus) {
        why += std::string(" (after_sb_0pri = ") + AfterSb0PriName(policy.zero_primaries) + ")";
      }
    }  // two Primaries: after_sb_2pri knows only disconnect
    rule = 63;
  }
  if (loser == Loser::kNone) {
    return Make(
        SyncPlan::kSplitBrain, 60,
        "split brain: both nodes changed the data since they were last connected (" + ids + ")");
  }
  const SyncSide& survivor = loser == Loser::kMe ? theirs : mine;
  if (survivor.disk != DiskState::kUpToDate) {
    return Make(SyncPlan::kRefuse, 64,
                why + ", but the node whose changes are kept is " + DiskStateName(survivor.disk) +
                    ", not UpToDate: no data moves (" + ids + ")");
  }
  // Parted from the same generation: the union of both bitmaps covers every block either side
  // changed. Otherwise nothing bounds the difference, and everything is copied.
  const bool bitmap = m.bitmap != 0 && m.bitmap == t.bitmap;
  const std::string how = bitmap ? "bitmap sync" : "full sync";
  if (loser == Loser::kMe) {
    return Make(SyncPlan::kTarget, rule,
                why + ": this node's changes are discarded, " + how + " from the peer");
  }
  return Make(bitmap ? SyncPlan::kBitmapSource : SyncPlan::kFullSource, rule,
              why + ": the peer's changes are discarded, " + how + " from here");
}

// The table, without the role checks.
SyncDecision Table(const SyncSide& mine, const SyncSide& theirs, const SplitBrainPolicy& policy) {
  const GenerationIds& m = mine.ids;
  const GenerationIds& t = theirs.ids;
  const bool my_data = mine.disk == DiskState::kUpToDate;
  const bool their_data = theirs.disk == DiskState::kUpToDate;
  if (m.current == 0 && t.current == 0) {
    return Make(SyncPlan::kNone, 10,
                "both disks are new (no data yet); 'replctl primary --force' on one node makes "
                "its data the one that counts and starts the initial full sync");
  }
  // A node without a disk (a diskless Primary, replica_diskless.cc) has no data to compare: it
  // serves its peer's. It follows the peer's current id while connected, so a reconnect finds
  // the same id unless the peer's data moved on without it (a promotion while apart), and
  // then serving it would change the data under the node's clients.
  const bool my_disk = mine.disk != DiskState::kDiskless && mine.disk != DiskState::kFailed;
  const bool their_disk = theirs.disk != DiskState::kDiskless && theirs.disk != DiskState::kFailed;
  if (!my_disk || !their_disk) {
    if (my_disk && m.current == t.current && my_data) {
      return Make(SyncPlan::kNone, 15,
                  "the peer has no disk and serves its clients our data, the generation it "
                  "served before: no sync");
    }
    if (their_disk && m.current == t.current && their_data) {
      return Make(SyncPlan::kNone, 15,
                  "this node has no disk and serves the peer's data, the generation it served "
                  "before: no sync");
    }
    return Make(SyncPlan::kRefuse, 16,
                "a node has no disk: it connects only to an UpToDate peer on the data generation "
                "it served (ours " +
                    Ids(m) + ", " + DiskStateName(mine.disk) + "; the peer's " + Ids(t) + ", " +
                    DiskStateName(theirs.disk) + "); attach a disk first");
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
    // A disk that is not UpToDate may have marked blocks of its own (a fast-failback Primary's
    // writes that failed when the link broke, a Secondary's failed writes under on_io_error =
    // pass_on): they come from the UpToDate side. So does an Inconsistent disk without marks (a
    // failed flush lost writes it cannot name): the resync brings the source's marks, and the
    // disk is UpToDate only when the source says the resync is done, never on its own word.
    const auto repairable = [](const SyncSide& s) {
      return s.out_of_sync_bytes > 0 || s.disk == DiskState::kInconsistent;
    };
    if (my_data && !their_data && repairable(theirs)) {
      return Make(SyncPlan::kBitmapSource, 25,
                  "same data generation, the peer's disk is " +
                      std::string(DiskStateName(theirs.disk)) +
                      " and its bitmap or ours names what it lacks: bitmap sync from here");
    }
    if (their_data && !my_data && repairable(mine)) {
      return Make(SyncPlan::kTarget, 25,
                  "same data generation, our disk is " + std::string(DiskStateName(mine.disk)) +
                      " and the peer's bitmap or ours names what it lacks: bitmap sync from the "
                      "peer");
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
  if (ShareAnAncestor(m, t)) return SplitBrain(mine, theirs, policy);
  return Make(SyncPlan::kUnrelated, 70,
              "unrelated data: the two disks share no data generation (ours " + Ids(m) +
                  ", the peer's " + Ids(t) + "); were they ever a pair?");
}

}  // namespace

namespace {

template <typename E, size_t N>
bool ParseName(const std::string& text, const std::array<const char*, N>& names, E* out) {
  for (size_t i = 0; i < N; ++i) {
    if (text == names[i]) {
      *out = static_cast<E>(i);
      return true;
    }
  }
  return false;
}

constexpr std::array<const char*, 4> k0PriNames = {"disconnect", "discard-younger-primary",
                                                   "discard-least-changes", "discard-zero-changes"};
constexpr std::array<const char*, 3> k1PriNames = {"disconnect", "consensus", "discard-secondary"};
constexpr std::array<const char*, 1> k2PriNames = {"disconnect"};

}  // namespace

const char* AfterSb0PriName(AfterSb0Pri p) { return k0PriNames.at(static_cast<size_t>(p)); }
const char* AfterSb1PriName(AfterSb1Pri p) { return k1PriNames.at(static_cast<size_t>(p)); }
const char* AfterSb2PriName(AfterSb2Pri p) { return k2PriNames.at(static_cast<size_t>(p)); }
bool ParseAfterSb0Pri(const std::string& text, AfterSb0Pri* out) {
  return ParseName(text, k0PriNames, out);
}
bool ParseAfterSb1Pri(const std::string& text, AfterSb1Pri* out) {
  return ParseName(text, k1PriNames, out);
}
bool ParseAfterSb2Pri(const std::string& text, AfterSb2Pri* out) {
  return ParseName(text, k2PriNames, out);
}

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

SyncDecision DecideSync(const SyncSide& mine, const SyncSide& theirs,
                        const SplitBrainPolicy& policy) {
  SyncDecision d = Table(mine, theirs, policy);
  const bool source = d.plan == SyncPlan::kBitmapSource || d.plan == SyncPlan::kFullSource;
  // A Primary whose disk is not UpToDate (fast failback) goes on as the target: its data does
  // not count yet, the peer serves the blocks it lacks.
  if (d.plan == SyncPlan::kTarget && mine.role == Role::kPrimary &&
      mine.disk == DiskState::kUpToDate) {
    d.plan = SyncPlan::kRefuse;
    d.text +=
        "; but this node is Primary and would have to become the sync target: demote it "
        "('replctl secondary') and connect again";
  } else if (source && theirs.role == Role::kPrimary && theirs.disk == DiskState::kUpToDate) {
    d.plan = SyncPlan::kRefuse;
    d.text +=
        "; but the peer is Primary and would have to become the sync target: demote it "
        "('replctl secondary' there) and connect again";
  }
  return d;
}

}  // namespace repld
