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
};

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
// refuse), so each node can decide alone from the State the handshake exchanged.
SyncDecision DecideSync(const SyncSide& mine, const SyncSide& theirs);

}  // namespace repld
