// replctl invalidate / invalidate-remote: one node's data stops counting and a full sync from
// the other replaces it. Both work through the generation ids and a reconnect, so the connect
// decision (sync_decision.h) starts the full sync and a crash in between leaves a state that
// decides the same way (or refuses) at the next connect:
// - invalidate: our current id becomes 0 and the disk Inconsistent -> rule 30 from the peer;
// - invalidate-remote: we draw a new current id with no bitmap id, so the peer's current id is
//   only in our history -> rule 50, a full sync from here.
#include "replication/replica.h"

namespace repld {

Status Replica::Invalidate() {
  if (!Connected() || !peer_) {
    return Status::Invalid(
        "not connected: invalidating this node's data needs an UpToDate peer to copy it from; "
        "connect first (replctl status shows why it is not)");
  }
  if (role_ == Role::kPrimary) {
    return Status::Invalid(
        "this node is Primary and serves this data; demote it first (replctl secondary), or "
        "run 'replctl invalidate-remote' to overwrite the peer instead");
  }
  if (peer_->disk != DiskState::kUpToDate) {
    return Status::Invalid(std::string("the peer's disk is ") + DiskStateName(peer_->disk) +
                           ", not UpToDate: there is no good copy to sync from");
  }
  Warn(
      "invalidated by the operator: this node's data no longer counts; a full sync from the "
      "peer follows");
  md_.ids = GenerationIds{};
  md_.disk = DiskState::kInconsistent;
  PersistMdNow();
  Emit(DropPeer{"invalidated: reconnecting for a full sync from the peer", true});
  return Status::Ok();
}

Status Replica::InvalidateRemote() {
  if (!Connected() || !peer_) {
    return Status::Invalid(
        "not connected: the peer cannot be told to take a full sync; connect first (replctl "
        "status shows why it is not)");
  }
  if (peer_->role == Role::kPrimary) {
    return Status::Invalid(
        "the peer is Primary and serves its data; demote it first, or run 'replctl invalidate' "
        "here to overwrite this node instead");
  }
  if (md_.disk != DiskState::kUpToDate || repl_ == ReplState::kSyncTarget) {
    return Status::Invalid(std::string("this node's disk is ") + DiskStateName(md_.disk) +
                           (repl_ == ReplState::kSyncTarget ? " (receiving a resync)" : "") +
                           ": only UpToDate data can overwrite the peer's");
  }
  Warn(
      "invalidate-remote by the operator: the peer's data no longer counts; a full sync to "
      "the peer follows");
  md_.ids.bitmap = 0;  // a bitmap id would make the next connect a bitmap sync
  NewCurrentId();
  PersistMdNow();
  Emit(DropPeer{"invalidate-remote: reconnecting for a full sync to the peer", true});
  return Status::Ok();
}

}  // namespace repld
