// Who syncs from whom when two nodes connect: a pure function of what each node knows about its
// data (generation identifiers, disk state, role, out-of-sync amounts). docs/replication.md
// ("Who syncs from whom") has the same table; each rule has a number the log and status show.
#pragma once

#include <cstdint>
#include <string>

#include "replication/states.h"

namespace repld {

struct GenerationIds {
  uint64_t current = 0;  // 0: never had data (fresh metadata)
  uint64_t bitmap = 0;   // the current id the peer had when this node started a bitmap
  uint64_t history[2] = {0, 0};
  bool operator==(const GenerationIds&) const = default;
};

// One side, as the deciding node sees it.
struct SyncSide {
  GenerationIds ids;
  DiskState disk = DiskState::kInconsistent;
  Role role = Role::kSecondary;
  uint64_t out_of_sync_bytes = 0;  // set bits of its bitmap, in bytes
  // The operator ran 'replctl connect --discard-my-data' here: after a split brain, this side's
  // changes are the ones dropped.
  bool discard_my_data = false;
  // The node was Primary when it lost the peer (its bitmap id was taken then, not at a later
  // promotion): after a split brain it is the older Primary of the two.
  bool primary_at_split = false;
};

// What resolves a split brain automatically (DRBD's after-sb-*pri), by how many nodes are
// Primary when they meet. The default everywhere: disconnect (only an operator resolves it).
enum class AfterSb0Pri : uint8_t {
  kDisconnect,
  kDiscardYoungerPrimary,  // the node promoted after the split loses its changes
  kDiscardLeastChanges,    // the node that changed fewer bytes loses (a tie: disconnect)
  kDiscardZeroChanges,     // a node that changed nothing loses (both changed: disconnect)
};
enum class AfterSb1Pri : uint8_t {
  kDisconnect,
  kConsensus,         // the after-sb-0pri answer, when it discards the Secondary
  kDiscardSecondary,  // the Secondary loses its changes
};
enum class AfterSb2Pri : uint8_t { kDisconnect };

struct SplitBrainPolicy {
  AfterSb0Pri zero_primaries = AfterSb0Pri::kDisconnect;
  AfterSb1Pri one_primary = AfterSb1Pri::kDisconnect;
  AfterSb2Pri two_primaries = AfterSb2Pri::kDisconnect;
  bool operator==(const SplitBrainPolicy&) const = default;
};

// Config spellings ("discard-least-changes"); Parse* return false for anything else.
const char* AfterSb0PriName(AfterSb0Pri p);
const char* AfterSb1PriName(AfterSb1Pri p);
const char* AfterSb2PriName(AfterSb2Pri p);
bool ParseAfterSb0Pri(const std::string& text, AfterSb0Pri* out);
bool ParseAfterSb1Pri(const std::string& text, AfterSb1Pri* out);
bool ParseAfterSb2Pri(const std::string& text, AfterSb2Pri* out);

enum class SyncPlan {
  kNone,          // nothing to copy
  kBitmapSource,  // this node sends the blocks its bitmap marks
  kFullSource,    // this node sends every block
  kTarget,        // this node receives (the source decides bitmap or full)
  kSplitBrain,    // both changed the data while apart: no data moves
  kUnrelated,     // the disks never were a pair (or lost every common id): no data moves
  kRefuse,        // a rule chose a direction this node cannot take (a Primary as target)
};

struct SyncDecision {
  SyncPlan plan = SyncPlan::kNone;
  int rule = 0;      // the table's row
  std::string text;  // "rule 30: our bitmap id is the peer's current id: bitmap sync from here"
};

const char* SyncPlanName(SyncPlan plan);

// Symmetric: DecideSync(a, b) and DecideSync(b, a) agree (one source, one target, or both
// refuse), so each node can decide alone from the State the handshake exchanged, provided
// both nodes run the same `policy` (the config's [net] after_sb_*; see docs/replication.md).
SyncDecision DecideSync(const SyncSide& mine, const SyncSide& theirs,
                        const SplitBrainPolicy& policy = {});

}  // namespace repld
