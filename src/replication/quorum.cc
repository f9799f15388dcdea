#include "replication/quorum.h"

#include <algorithm>
#include <bit>
#include <utility>

#include "common/check.h"

namespace repld::quorum {

uint64_t VoteWaitMs(const QuorumOptions& options) {
  return options.lease_ms * 115 / 100 + options.ping_interval_ms;
}

QuorumNode::QuorumNode(const QuorumOptions& options, uint8_t outdated_mask, uint64_t now_ms)
    : options_(options),
      voter_(Voter::Options{options.self, options.witness, options.members, VoteWaitMs(options)},
             outdated_mask, now_ms),
      started_ms_(now_ms),
      next_ping_ms_(now_ms) {
  REPLD_CHECK(options_.members >= 2 && options_.members <= kMembersMax);
  REPLD_CHECK(options_.lease_ms > options_.ping_interval_ms);
  for (NodeId i = 0; i < options_.members; ++i) {
    if (i != options_.self && i != options_.witness) data_peer_ = i;
  }
  if (options_.self == options_.witness) data_peer_ = kNoNode;
}

std::vector<Action> QuorumNode::TakeActions() {
  std::vector<Action> out;
  out.swap(actions_);
  return out;
}

void QuorumNode::Answer(NodeId to, Message m) { Emit(Send{to, std::move(m)}); }

void QuorumNode::PersistIfChanged(uint8_t before) {
  const uint8_t after = voter_.outdated_mask();
  if (after == before) return;
  Emit(PersistOutdated{after});
}

void QuorumNode::HeardOutdated() {
  // Connected to the data peer, it is about an earlier separation that the connection's
  // handshake (a resync, or equal data) has settled since; the data peer clears the record.
  if (local_.role == Role::kSecondary && local_.disk == DiskState::kUpToDate &&
      !local_.data_peer_connected && !told_outdated_) {
    told_outdated_ = true;
    Emit(BecomeOutdated{});
  }
}

void QuorumNode::LinkUp(NodeId peer, uint64_t now_ms) {
  REPLD_CHECK(peer < options_.members && peer != options_.self);
  links_[peer].up = true;
  links_[peer].pings.clear();
  next_ping_ms_ = now_ms;  // ping at once: quorum comes back without waiting an interval
  Tick(now_ms);
}

void QuorumNode::LinkDown(NodeId peer, uint64_t now_ms) {
  REPLD_CHECK(peer < options_.members && peer != options_.self);
  Link& l = links_[peer];
  l.up = false;
  l.pings.clear();
  // Stop counting it at once (earlier than its lease would end: always safe).
  l.alive_until_ms = l.lease_until_ms = 0;
  l.backs = kNoNode;
  if (candidacy_ && ((candidacy_->granted | candidacy_->refused) & Bit(peer)) == 0) {
    candidacy_->refused |= Bit(peer);
  }
  UpdateQuorum(now_ms);
  if (candidacy_) OnVoteReply(peer, VoteReply{.token = 0});  // re-count: it will not answer
}

Ping QuorumNode::MakePing(uint64_t seq) const {
  return Ping{.seq = seq,
              .role = local_.role,
              .candidate = candidacy_.has_value() || won_,
              .disk = local_.disk,
              .data_peer_connected = local_.data_peer_connected,
              .data_peer_disk = local_.data_peer_disk};
}

void QuorumNode::SendPings(uint64_t now_ms) {
  next_ping_ms_ = now_ms + options_.ping_interval_ms;
  if (options_.self == options_.witness) return;  // the witness only answers
  for (NodeId n = 0; n < options_.members; ++n) {
    Link& l = links_[n];
    if (n == options_.self || !l.up) continue;
    const uint64_t seq = next_seq_++;
    l.pings.emplace_back(seq, now_ms);
    if (l.pings.size() > kPingsOutstandingMax) l.pings.pop_front();
    Answer(n, MakePing(seq));
  }
}

void QuorumNode::Tick(uint64_t now_ms) {
  if (now_ms >= next_ping_ms_) SendPings(now_ms);
  if (candidacy_ && now_ms >= candidacy_->sent_ms + options_.lease_ms) {
    EndCandidacy(false, "no majority of votes within the lease time");
  }
  if (won_ && now_ms >= won_sent_ms_ + options_.lease_ms) {
    // Won, but not promoted while the votes' leases lasted: the votes no longer count (a later
    // promotion starts without quorum, and earns it only from voters that back it then).
    won_ = false;
    if (local_.role != Role::kPrimary) voter_.ReleaseSelf();
  }
  if (fence_ && now_ms >= fence_->last_sent_ms + options_.ping_interval_ms) SendFence(now_ms);
  UpdateQuorum(now_ms);
}

bool QuorumNode::HasQuorum(uint64_t now_ms) const {
  uint8_t seen = 1;  // itself
  for (NodeId n = 0; n < options_.members; ++n) {
    if (n == options_.self) continue;
    const Link& l = links_[n];
    seen += (local_.role == Role::kPrimary ? l.lease_until_ms : l.alive_until_ms) > now_ms;
  }
  return seen >= majority();
}

void QuorumNode::UpdateQuorum(uint64_t now_ms) {
  const bool q = HasQuorum(now_ms);
  if (q == quorum_) return;
  quorum_ = q;
  Emit(QuorumChanged{q});
}

void QuorumNode::SetLocal(const LocalState& local, uint64_t now_ms) {
  if (local.disk != local_.disk || local.data_peer_connected != local_.data_peer_connected) {
    told_outdated_ = false;
  }
  if (local.role != local_.role) {
    // Backing earned in another role does not carry over: a voter lets a Primary go when it
    // hears it Secondary, and an answer to a ping of an earlier stint as Primary is stale. Only
    // the votes of a candidacy just won count for the Primary it becomes.
    const bool from_vote = local.role == Role::kPrimary && won_;
    for (Link& l : links_) {
      l.pings.clear();
      if (!from_vote) l.lease_until_ms = 0;
    }
  }
  local_ = local;
  if (local.data_peer_connected) {
    data_peer_seen_ = true;
    fence_.reset();
    peer_fenced_ = false;  // a later loss fences again
    if (local.disk == DiskState::kUpToDate && local.data_peer_disk == DiskState::kUpToDate &&
        data_peer_ != kNoNode) {
      const uint8_t before = voter_.outdated_mask();
      voter_.ClearOutdated(data_peer_);
      PersistIfChanged(before);
    }
  }
  if (local.role == Role::kPrimary) {
    won_ = false;
    voter_.BackSelf(now_ms);
    if (!local.data_peer_connected && !peer_fenced_ && !fence_ && data_peer_ != kNoNode) {
      StartFence(now_ms);
    }
  } else if (!candidacy_ && !won_) {
    voter_.ReleaseSelf();
    fence_.reset();
  }
  UpdateQuorum(now_ms);
}

bool QuorumNode::PeerSafe() const { return data_peer_ == kNoNode || peer_fenced_; }

std::string QuorumNode::WhyNotCandidate(uint64_t now_ms) const {
  if (options_.self == options_.witness) return "the witness is never Primary";
  if (local_.role == Role::kPrimary) return "already Primary";
  if (candidacy_ || won_) return "a vote is already running";
  if (local_.disk == DiskState::kOutdated) {
    return "disk Outdated: the peer went on writing without this node";
  }
  if (local_.disk != DiskState::kUpToDate) {
    return std::string("disk ") + DiskStateName(local_.disk) + ", not UpToDate";
  }
  if (!HasQuorum(now_ms)) return "no quorum";
  const Refusal r = voter_.CanBack(options_.self, now_ms);
  if (r == Refusal::kSupportsOther) {
    return "a Primary was heard from recently (node " + std::to_string(voter_.backed(now_ms)) + ")";
  }
  if (r == Refusal::kStartupWait) return "started recently: a Primary may still hold a lease";
  if (r != Refusal::kNone) return RefusalName(r);
  if (!data_peer_seen_ && now_ms < started_ms_ + options_.startup_wait_ms) {
    return "waiting for the peer seen at start (startup_wait)";
  }
  return "";
}

void QuorumNode::StartCandidacy(uint64_t now_ms) {
  std::string why = WhyNotCandidate(now_ms);
  if (!why.empty()) {
    Emit(CandidacyDone{false, std::move(why)});
    return;
  }
  Candidacy c{.token = next_seq_++, .sent_ms = now_ms, .granted = Bit(options_.self)};
  candidacy_ = c;
  voter_.BackSelf(now_ms);
  for (NodeId n = 0; n < options_.members; ++n) {
    if (n == options_.self) continue;
    if (links_[n].up) {
      Answer(n, VoteRequest{c.token});
    } else {
      candidacy_->refused |= Bit(n);  // it cannot answer
    }
  }
  OnVoteReply(options_.self, VoteReply{.token = 0});  // counts: a lone majority wins at once
}

void QuorumNode::OnVoteReply(NodeId from, const VoteReply& reply) {
  if (!candidacy_) return;
  Candidacy& c = *candidacy_;
  if (reply.token == c.token && ((c.granted | c.refused) & Bit(from)) == 0) {
    if (reply.granted) {
      c.granted |= Bit(from);
      Link& l = links_[from];
      l.alive_until_ms = std::max(l.alive_until_ms, c.sent_ms + options_.lease_ms);
      l.lease_until_ms = std::max(l.lease_until_ms, c.sent_ms + options_.lease_ms);
    } else {
      c.refused |= Bit(from);
      c.last_refusal = reply.refusal;
      if (reply.refusal == Refusal::kOutdated) HeardOutdated();
    }
  }
  const int granted = std::popcount(c.granted);
  const int open = options_.members - std::popcount(static_cast<uint8_t>(c.granted | c.refused));
  if (granted >= majority()) {
    won_ = true;
    won_sent_ms_ = c.sent_ms;
    candidacy_.reset();
    Emit(CandidacyDone{true, ""});
  } else if (granted + open < majority()) {
    EndCandidacy(false, std::string("refused: ") + RefusalName(c.last_refusal));
  }
}

void QuorumNode::EndCandidacy(bool won, std::string reason) {
  candidacy_.reset();
  if (local_.role != Role::kPrimary) voter_.ReleaseSelf();
  Emit(CandidacyDone{won, std::move(reason)});
}

void QuorumNode::Abandon() {
  won_ = false;
  candidacy_.reset();
  if (local_.role != Role::kPrimary) voter_.ReleaseSelf();
}

void QuorumNode::StartFence(uint64_t now_ms) {
  fence_ = Fence{.token = next_seq_++, .recorded = Bit(options_.self)};
  const uint8_t before = voter_.outdated_mask();
  voter_.MarkOutdated(data_peer_);
  PersistIfChanged(before);
  SendFence(now_ms);
  CheckFence();
}

void QuorumNode::SendFence(uint64_t now_ms) {
  fence_->last_sent_ms = now_ms;
  for (NodeId n = 0; n < options_.members; ++n) {
    if (n == options_.self || n == data_peer_ || !links_[n].up) continue;
    if ((fence_->recorded & Bit(n)) != 0) continue;
    Answer(n, OutdateRequest{fence_->token, data_peer_});
  }
}

void QuorumNode::CheckFence() {
  // Fenced once the nodes that do not hold it Outdated are too few for a majority.
  const int need = options_.members - majority() + 1;
  if (!fence_ || std::popcount(fence_->recorded) < need) return;
  fence_.reset();
  peer_fenced_ = true;
  Emit(PeerFenced{});
}

void QuorumNode::OnOutdateReply(NodeId from, const OutdateReply& reply) {
  if (!fence_ || reply.token != fence_->token || !reply.done) return;
  fence_->recorded |= Bit(from);
  CheckFence();
}

void QuorumNode::OnPong(NodeId from, const Pong& pong) {
  Link& l = links_[from];
  while (!l.pings.empty() && l.pings.front().first < pong.seq) l.pings.pop_front();
  if (l.pings.empty() || l.pings.front().first != pong.seq) return;  // not ours, or too old
  const uint64_t until = l.pings.front().second + options_.lease_ms;
  l.pings.pop_front();
  l.alive_until_ms = std::max(l.alive_until_ms, until);
  if (pong.supports && local_.role == Role::kPrimary) {
    l.lease_until_ms = std::max(l.lease_until_ms, until);
  }
  l.backs = pong.supported;
  if (pong.outdated) HeardOutdated();
}

void QuorumNode::Receive(NodeId from, const Message& message, uint64_t now_ms) {
  REPLD_CHECK(from < options_.members && from != options_.self);
  const uint8_t before = voter_.outdated_mask();
  if (const auto* ping = std::get_if<Ping>(&message)) {
    Pong pong = voter_.OnPing(from, *ping, now_ms);
    PersistIfChanged(before);
    Answer(from, pong);
  } else if (const auto* pong = std::get_if<Pong>(&message)) {
    OnPong(from, *pong);
  } else if (const auto* vr = std::get_if<VoteRequest>(&message)) {
    VoteReply reply = voter_.OnVoteRequest(from, *vr, now_ms);
    PersistIfChanged(before);
    Answer(from, reply);
  } else if (const auto* vrep = std::get_if<VoteReply>(&message)) {
    OnVoteReply(from, *vrep);
  } else if (const auto* orq = std::get_if<OutdateRequest>(&message)) {
    OutdateReply reply = voter_.OnOutdateRequest(from, *orq, now_ms);
    PersistIfChanged(before);
    Answer(from, reply);
  } else if (const auto* orep = std::get_if<OutdateReply>(&message)) {
    OnOutdateReply(from, *orep);
  }
  UpdateQuorum(now_ms);
}

}  // namespace repld::quorum
