// Test helpers for the Replica tests: the actions of one kind among those a Replica emitted, and
// a node with UpToDate data at generation `ids` whose bitmap marks `marked`.
#pragma once

#include <variant>
#include <vector>

#include "replication/replica.h"

namespace repld {

inline Replica MakeReplica(const ReplicaOptions& o, GenerationIds ids,
                           std::vector<OutOfSyncRun> marked) {
  Bitmap bitmap(o.data_bytes);
  for (const OutOfSyncRun& run : marked) bitmap.SetRange(run.offset_bytes, run.length_bytes);
  MdState md;
  md.ids = ids;
  md.disk = DiskState::kUpToDate;
  return Replica(o, md, ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 0), std::move(bitmap));
}

template <typename T>
std::vector<T> All(std::vector<Action> actions) {
  std::vector<T> out;
  for (Action& a : actions) {
    if (auto* t = std::get_if<T>(&a)) out.push_back(std::move(*t));
  }
  return out;
}

// The bitmap exchange of a connect that made `target` the sync target of `source`: the
// target's OutOfSync frames to the source, the merged bitmap back, the source's State to the
// target. The source's actions after the exchange stay for the caller.
inline void ExchangeBitmaps(Replica& target, Replica& source) {
  for (const SendOutOfSync& f : All<SendOutOfSync>(target.TakeActions())) {
    source.PeerOutOfSync(f.runs, f.last);
  }
  for (const SendOutOfSync& f : All<SendOutOfSync>(source.TakeActions())) {
    target.PeerOutOfSync(f.runs, f.last);
  }
  target.PeerStateChanged(source.LocalState());
}

}  // namespace repld
