#include "replication/voter.h"

#include "common/check.h"

namespace repld::quorum {

const char* RefusalName(Refusal r) {
  switch (r) {
    case Refusal::kNone:
      return "none";
    case Refusal::kSupportsOther:
      return "backs another Primary";
    case Refusal::kOutdated:
      return "Outdated";
    case Refusal::kVoterIsPrimary:
      return "voter is Primary";
    case Refusal::kStartupWait:
      return "voter started recently";
    case Refusal::kNotSupported:
      return "not the Primary this voter backs";
    case Refusal::kWitnessNeverPrimary:
      return "the witness is never Primary";
  }
  return "?";
}

Voter::Voter(const Options& options, uint8_t outdated_mask, uint64_t now_ms)
    : options_(options),
      outdated_(outdated_mask),
      blocked_until_ms_(now_ms + options.vote_wait_ms) {
  REPLD_CHECK(options_.members >= 2 && options_.members <= kMembersMax);
  REPLD_CHECK(options_.self < options_.members);
}

NodeId Voter::OtherDataNode(NodeId n) const {
  for (NodeId i = 0; i < options_.members; ++i) {
    if (i != n && i != options_.witness) return i;
  }
  return kNoNode;
}

NodeId Voter::backed(uint64_t now_ms) const {
  if (backed_ == kNoNode) return kNoNode;
  if (backed_ == options_.self) return backed_;  // itself: until ReleaseSelf
  return now_ms < backed_heard_ms_ + options_.vote_wait_ms ? backed_ : kNoNode;
}

Refusal Voter::CanBack(NodeId who, uint64_t now_ms) const {
  if (who == options_.witness) return Refusal::kWitnessNeverPrimary;
  if (IsOutdated(who)) return Refusal::kOutdated;
  const NodeId b = backed(now_ms);
  if (b == who) return Refusal::kNone;
  if (b == options_.self) return Refusal::kVoterIsPrimary;
  if (b != kNoNode) return Refusal::kSupportsOther;
  for (NodeId n = 0; n < options_.members; ++n) {
    if (n != who && n != options_.self && claimed_[n] &&
        now_ms < claimed_ms_[n] + options_.vote_wait_ms) {
      return Refusal::kSupportsOther;
    }
  }
  // After a start (itself included): a Primary it backed before may still hold a lease.
  if (now_ms < blocked_until_ms_) return Refusal::kStartupWait;
  return Refusal::kNone;
}

Pong Voter::OnPing(NodeId from, const Ping& ping, uint64_t now_ms) {
  Pong pong{.seq = ping.seq};
  // The other data node, Connected to `from` and both UpToDate: `from` caught up. Only `from`'s
  // data peer marks it Outdated, on this same ordered link, so a report sent before the mark
  // cannot undo it.
  const NodeId other = OtherDataNode(from);
  if (ping.data_peer_connected && ping.disk == DiskState::kUpToDate &&
      ping.data_peer_disk == DiskState::kUpToDate && other != kNoNode && !IsOutdated(from)) {
    ClearOutdated(other);
  }
  if (ping.role == Role::kPrimary && !IsOutdated(from)) {
    claimed_[from] = true;
    claimed_ms_[from] = now_ms;
  } else if (ping.role != Role::kPrimary) {
    claimed_[from] = false;  // it stepped down
  }
  if (ping.role == Role::kPrimary || ping.candidate) {
    pong.refusal = CanBack(from, now_ms);
    if (pong.refusal == Refusal::kNone) {
      Back(from, now_ms);
      pong.supports = ping.role == Role::kPrimary;
    }
  } else if (backed_ == from) {
    backed_ = kNoNode;  // it stepped down (or gave up its candidacy)
  }
  pong.supported = backed(now_ms);
  pong.outdated = IsOutdated(from);
  return pong;
}

VoteReply Voter::OnVoteRequest(NodeId from, const VoteRequest& request, uint64_t now_ms) {
  VoteReply reply{.token = request.token};
  reply.refusal = CanBack(from, now_ms);
  if (reply.refusal == Refusal::kNone) {
    Back(from, now_ms);
    reply.granted = true;
  }
  reply.supported = backed(now_ms);
  return reply;
}

OutdateReply Voter::OnOutdateRequest(NodeId from, const OutdateRequest& request, uint64_t now_ms) {
  OutdateReply reply{.token = request.token};
  // Only the Primary this voter backs, alive, may outdate its peer: a deposed Primary must not
  // outdate the node that replaced it.
  if (backed(now_ms) != from || from == options_.self) {
    reply.refusal = Refusal::kNotSupported;
    return reply;
  }
  backed_heard_ms_ = now_ms;
  if (request.node != from && request.node != options_.witness && request.node < options_.members) {
    MarkOutdated(request.node);
  }
  reply.done = true;
  return reply;
}

void Voter::BackSelf(uint64_t now_ms) { Back(options_.self, now_ms); }

void Voter::ReleaseSelf() {
  if (backed_ == options_.self) backed_ = kNoNode;
}

}  // namespace repld::quorum
