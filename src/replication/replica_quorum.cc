// Quorum in the replica (docs/quorum.md): completions held without quorum, writes the lost
// peer did not confirm held until it is fenced. The votes themselves are quorum.cc's.
#include <utility>
#include <vector>

#include "replication/replica.h"

namespace repld {

void Replica::SetQuorum(bool has_quorum) {
  if (!options_.quorum || has_quorum == quorum_) return;
  quorum_ = has_quorum;
  if (!has_quorum) {
    if (role_ == Role::kPrimary) {
      Warn(options_.on_no_quorum == OnNoQuorum::kSuspendIo
               ? "lost quorum: I/O suspended until quorum returns (on_no_quorum = suspend-io)"
               : "lost quorum: I/O fails until quorum returns (on_no_quorum = io-error)");
    }
    return;
  }
  if (!held_.empty()) {
    Info("quorum is back: " + std::to_string(held_.size()) + " held request(s) complete");
  }
  for (const RequestId id : std::exchange(held_, {})) Emit(Complete{id, 0});
}

void Replica::PeerFenced() {
  if (!options_.quorum || peer_fenced_) return;
  peer_fenced_ = true;
  std::vector<RequestId> waiting;
  for (const auto& [id, r] : requests_) {
    if (!r.completed && r.type != Request::Type::kRead) waiting.push_back(id);
  }
  for (const RequestId id : waiting) MaybeComplete(id);
}

}  // namespace repld
