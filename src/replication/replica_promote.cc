// Promotion: what may refuse it, the change itself, and (while connected) the agreement with
// the peer that keeps two connected nodes from ever being Primary at once.
//
// Connected, with a peer that agrees promotions (peer::kFeaturePromoteRequests), a promotion
// is two steps, as DRBD 9's two-phase state change:
//   1. Promote() checks what it can here and sends PromoteRequest; nothing changes yet.
//   2. The peer answers at once: it refuses while it is Primary or while its own request wins
//      the tie below; otherwise it grants, and from then on counts us as Primary (so its own
//      Promote is refused) until a State of ours says otherwise.
//   3. A grant: the checks run again (the state may have moved) and the node promotes; a
//      refusal, a lost peer or AbandonPromotion ends it with PromotionDone's reason.
// Two requests that cross: each node sees the other's request while its own is pending. The
// node whose name sorts first wins on both sides (the tokens decide for two equal names): the
// loser fails its own promotion and grants, the winner refuses and is granted. So at most one
// of two connected nodes is ever Primary, whatever the timing.
#include <cerrno>

#include "replication/replica.h"

namespace repld {

Status Replica::CheckPromote(bool force) const {
  if (!HasDisk() && md_.disk != DiskState::kFailed) {
    // --force would make "no disk" the data that counts and overwrite the peer's, the only copy.
    return Status::Invalid(
        "this node has no disk (Diskless): it is not promoted, with or without --force; "
        "'replctl detach', replace or repair the disk, then 'replctl attach'");
  }
  if (md_.disk == DiskState::kFailed) {
    return Status::Invalid("the disk failed " + disk_failure_->what + " (error " +
                           std::to_string(disk_failure_->error) + ", " +
                           ErrnoText(disk_failure_->error) +
                           "): it is being detached, and this node is not promoted with it; "
                           "replace the disk and run 'replctl attach'");
  }
  // A resync target serves the blocks not yet synced from its UpToDate peer (fast failback):
  // also one whose disk failed before, since such a disk is resynced whole (the failed disk
  // attached again to a diskless Primary: resource_attach_primary.cc).
  const bool serves_through_peer =
      md_.disk != DiskState::kUpToDate && repl_ == ReplState::kSyncTarget && PeerCanServe();
  if (md_.io_error && !force && !serves_through_peer) {
    return Status::Invalid(
        std::string("the disk failed ") +
        (disk_failure_ ? disk_failure_->what : std::string("an I/O")) +
        " and has not been repaired by a resync since: this node is not promoted with it (its "
        "disk is " +
        DiskStateName(md_.disk) +
        "); connect it to the UpToDate peer to resync, or replace the disk and run 'replctl "
        "attach'. 'primary --force' makes its data the one that counts anyway");
  }
  if (Connected() && peer_ && peer_->role == Role::kPrimary) {
    const std::string them =
        options_.peer_name.empty() ? "the peer" : "the peer '" + options_.peer_name + "'";
    return Status::Invalid(them + " is Primary; demote it first (replctl secondary on " +
                           (options_.peer_name.empty() ? "the peer" : options_.peer_name) + ")");
  }
  if (md_.disk != DiskState::kUpToDate && repl_ == ReplState::kSyncTarget) {
    if (force) {
      return Status::Invalid(
          "this node is receiving a resync; --force would make half-copied data the one that "
          "counts. Without --force it becomes Primary at once (fast failback: blocks not yet "
          "synced are read from the peer), or wait for the resync to finish");
    }
    if (!PeerCanServe()) {
      return Status::Invalid(
          "this node is receiving a resync and is promoted during it only while connected to "
          "an UpToDate peer that serves the blocks not yet synced; wait for the resync");
    }
    return Status::Ok();
  }
  if (md_.disk != DiskState::kUpToDate && !force) {
    return Status::Invalid(std::string("the local disk is ") + DiskStateName(md_.disk) +
                           ", not UpToDate; 'primary --force' makes this node's data the one "
                           "that counts (the peer's differing data is overwritten)");
  }
  return Status::Ok();
}

Status Replica::Promote(bool force) {
  if (role_ == Role::kPrimary) return Status::Ok();
  if (promotion_) {
    return Status::Invalid("a promotion of this node is already waiting for the peer's answer");
  }
  if (Status s = CheckPromote(force); !s.ok()) return s;
  if (Connected() && peer_promote_requests_) {
    uint64_t token = 0;
    while (token == 0) token = NextRandom();
    promotion_ = PendingPromotion{token, force};
    Info("asking the peer to agree to this node's promotion");
    Emit(SendPromoteRequest{token});
    return Status::Ok();
  }
  DoPromote(force);
  return Status::Ok();
}

void Replica::DoPromote(bool force) {
  if (md_.disk != DiskState::kUpToDate && repl_ == ReplState::kSyncTarget) {
    // Fast failback: the data that counts stays the peer's until the resync ends, so no
    // generation changes.
    role_ = Role::kPrimary;
    md_.primary = true;
    PersistMdNow();
    Info(
        "role Secondary -> Primary during the resync (fast failback): blocks not yet synced "
        "are read from the peer, and writes complete once the peer has them");
    Emit(SendState{LocalState()});
    return;
  }
  const bool forced_over_data = force && md_.disk != DiskState::kUpToDate;
  if (forced_over_data || !Connected()) {
    // Our data diverges from whatever the peer has from now on.
    if (md_.ids.bitmap == 0 && md_.ids.current != 0 && !forced_over_data) {
      md_.ids.bitmap = md_.ids.current;
      md_.primary_at_split = false;  // promoted after the split: the younger Primary
    }
    NewCurrentId();
  }
  role_ = Role::kPrimary;
  md_.primary = true;
  md_.disk = DiskState::kUpToDate;
  md_.io_error = false;  // forced: the operator's word
  PersistMdNow();
  Info(std::string("role Secondary -> Primary") + (forced_over_data ? " (forced)" : ""));
  if (Connected()) {
    if (forced_over_data) {
      // The peer's data no longer counts: reconnect, and the handshake starts a full sync.
      Emit(DropPeer{"promoted with --force over the peer's data: reconnecting for a full sync",
                    true});
    } else {
      Emit(SendState{LocalState()});
    }
  }
}

void Replica::FinishPromotion(int error, const std::string& message) {
  if (!promotion_) return;
  promotion_.reset();
  if (error != 0) Warn("not promoted: " + message);
  Emit(PromotionDone{error, message});
}

// Both sides must reach opposite answers: the handshake checked that each side's peer name is
// the other's node name, so the names do; without two names, the two tokens do. +1: ours wins,
// -1: theirs wins, 0: neither (equal tokens: both refuse, and both promotions fail, safely).
int Replica::PromotionTie(uint64_t their_token) const {
  if (!options_.node_name.empty() && !options_.peer_name.empty() &&
      options_.node_name != options_.peer_name) {
    return options_.node_name < options_.peer_name ? 1 : -1;
  }
  if (promotion_->token == their_token) return 0;
  return promotion_->token > their_token ? 1 : -1;
}

void Replica::PeerPromoteRequest(uint64_t token) {
  if (!Connected()) return;
  const std::string me = "'" + options_.node_name + "'";
  std::string refusal;
  if (role_ == Role::kPrimary) {
    refusal = me + " is Primary; demote it first (replctl secondary on " + options_.node_name + ")";
  } else if (promotion_ && PromotionTie(token) >= 0) {
    refusal = me +
              " asked to be promoted at the same moment, and the node whose name sorts "
              "first wins";
  } else if (promotion_) {
    const std::string them =
        options_.peer_name.empty() ? "the peer" : "'" + options_.peer_name + "'";
    FinishPromotion(EBUSY, them +
                               " asked to be promoted at the same moment and takes "
                               "precedence (the node whose name sorts first wins); it is "
                               "Primary now");
  }
  if (!refusal.empty()) {
    Info("refused the peer's promotion: " + refusal);
    Emit(SendPromoteReply{token, false, refusal});
    return;
  }
  // Granted: the peer is Primary as far as this node is concerned, until its State says
  // otherwise (a promotion that fails after the grant sends one).
  peer_->role = Role::kPrimary;
  Info("agreed to the peer's promotion");
  Emit(SendPromoteReply{token, true, ""});
}

void Replica::PeerPromoteReply(uint64_t token, bool granted, const std::string& reason) {
  if (!promotion_ || promotion_->token != token) return;  // given up on, or not ours
  const bool force = promotion_->force;
  if (!granted) {
    FinishPromotion(EBUSY, "the peer refused: " + reason);
    return;
  }
  // The state may have moved while the question travelled: check again.
  if (Status s = CheckPromote(force); !s.ok()) {
    FinishPromotion(EINVAL, s.message());
    if (Connected()) Emit(SendState{LocalState()});  // the peer counted us as Primary
    return;
  }
  promotion_.reset();
  DoPromote(force);
  Emit(PromotionDone{0, ""});
}

void Replica::AbandonPromotion(const std::string& why) {
  if (!promotion_) return;
  FinishPromotion(ETIMEDOUT, why);
  // A grant may still be on its way: the peer must not go on counting us as Primary.
  if (Connected()) Emit(SendState{LocalState()});
}

}  // namespace repld
