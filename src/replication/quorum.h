// Quorum, leases, promotion votes and fencing for one node of a resource (docs/quorum.md): the
// sans-I/O half of [resource] quorum = "majority". The daemon and the simulator drive it with
// link events, received messages and the time, and carry out the Actions it emits.
//
// A data node holds quorum while it has heard, within lease_ms of sending a ping, from enough
// nodes to make a majority with itself; a Primary counts only the nodes that answered that they
// back it. Voters (voter.h) back one Primary at a time and refuse any other until vote_wait_ms
// after they last heard from it, and vote_wait_ms is longer than any lease, with room for the
// clocks' drift: so the old Primary's quorum has lapsed before a new one can gather votes.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "replication/quorum_msgs.h"
#include "replication/voter.h"

namespace repld::quorum {

struct QuorumOptions {
  uint8_t members = 3;  // 2 (two data nodes) or 3 (with a witness)
  NodeId self = 0;
  NodeId witness = kNoNode;
  uint64_t ping_interval_ms = 500;
  uint64_t lease_ms = 1500;  // quorum lasts this long after the ping that earned it was sent
  // A node that has not been Connected to its data peer since it started does not stand as a
  // candidate before this (Heartbeat's initdead).
  uint64_t startup_wait_ms = 0;
};

// How long a voter waits after it last heard from a Primary before it backs another: the lease
// and a margin for clocks that run up to 5% apart ((1.05 / 0.95) < 1.15), and one ping interval.
uint64_t VoteWaitMs(const QuorumOptions& options);

// What the local replica is, for the pings.
struct LocalState {
  Role role = Role::kSecondary;
  DiskState disk = DiskState::kDiskless;
  bool data_peer_connected = false;
  DiskState data_peer_disk = DiskState::kDiskless;
};

// --- Actions ---
struct Send {
  NodeId to;
  Message message;
};
// Persist the Outdated set now, synchronously, before any later Send: a voter's answer promises
// what it recorded. A failure to persist is fatal (the process stops without answering).
struct PersistOutdated {
  uint8_t mask;
};
struct QuorumChanged {
  bool quorum;
};
// The candidacy StartCandidacy began ended: won (the caller promotes, or calls Abandon) or lost.
struct CandidacyDone {
  bool won;
  std::string reason;
};
// The data peer, lost while this node is Primary, is now Outdated at enough voters that it can
// never gather a majority: writes it lacks may be acknowledged.
struct PeerFenced {};
// A voter holds this node Outdated (a Pong, or a refused vote said so) while it is Secondary,
// UpToDate and not Connected to its data peer: the caller persists its disk as Outdated.
struct BecomeOutdated {};
using Action =
    std::variant<Send, PersistOutdated, QuorumChanged, CandidacyDone, PeerFenced, BecomeOutdated>;

class QuorumNode {
 public:
  QuorumNode(const QuorumOptions& options, uint8_t outdated_mask, uint64_t now_ms);

  void LinkUp(NodeId peer, uint64_t now_ms);
  void LinkDown(NodeId peer, uint64_t now_ms);
  void Receive(NodeId from, const Message& message, uint64_t now_ms);
  // Pings, lease expiry, the candidacy's timeout, the fence's retries. Call at least every
  // ping interval, and before acting on HasQuorum at any other time.
  void Tick(uint64_t now_ms);
  // With quorum on, the replica becomes Primary only right after a won candidacy
  // (CandidacyDone): a node promoted otherwise starts without quorum and earns it only from
  // voters that back it then.
  void SetLocal(const LocalState& local, uint64_t now_ms);

  // Ask the voters for the Primary role; CandidacyDone follows. Refused at once (CandidacyDone
  // lost) when WhyNotCandidate says so.
  void StartCandidacy(uint64_t now_ms);
  // The caller did not promote after all (or demoted): the voters hear it at the next ping.
  void Abandon();
  // "" when this node may stand as a candidate now; else why not, for status.
  std::string WhyNotCandidate(uint64_t now_ms) const;

  bool HasQuorum(uint64_t now_ms) const;
  // The data peer this Primary lost is fenced: it can win no vote, so a write it did not
  // confirm may complete (a write it confirmed needs no fence).
  bool PeerSafe() const;
  const Voter& voter() const { return voter_; }
  uint8_t majority() const { return static_cast<uint8_t>(options_.members / 2 + 1); }
  bool LinkUp(NodeId peer) const { return links_[peer].up; }
  // Whom `peer` said (in its last answer) that it backs.
  NodeId BackedBy(NodeId peer) const { return links_[peer].backs; }
  NodeId data_peer() const { return data_peer_; }

  std::vector<Action> TakeActions();

 private:
  struct Link {
    bool up = false;
    uint64_t alive_until_ms = 0;  // heard from, as any node
    uint64_t lease_until_ms = 0;  // backs this node as Primary
    NodeId backs = kNoNode;
    std::deque<std::pair<uint64_t, uint64_t>> pings;  // seq, send time: awaiting a Pong
  };
  struct Candidacy {
    uint64_t token = 0;
    uint64_t sent_ms = 0;
    uint8_t granted = 0, refused = 0;
    Refusal last_refusal = Refusal::kNone;
  };
  struct Fence {
    uint64_t token = 0;
    uint8_t recorded = 0;  // nodes that hold the data peer Outdated
    uint64_t last_sent_ms = 0;
  };
  static constexpr size_t kPingsOutstandingMax = 16;
  static uint8_t Bit(NodeId n) { return static_cast<uint8_t>(1u << n); }
  template <typename T>
  void Emit(T a) {
    actions_.emplace_back(std::in_place_type<T>, std::move(a));
  }
  void Answer(NodeId to, Message m);
  void PersistIfChanged(uint8_t before);
  void HeardOutdated();
  void OnPong(NodeId from, const Pong& pong);
  void OnVoteReply(NodeId from, const VoteReply& reply);
  void OnOutdateReply(NodeId from, const OutdateReply& reply);
  void EndCandidacy(bool won, std::string reason);
  void StartFence(uint64_t now_ms);
  void SendFence(uint64_t now_ms);
  void CheckFence();
  void SendPings(uint64_t now_ms);
  void UpdateQuorum(uint64_t now_ms);
  Ping MakePing(uint64_t seq) const;

  QuorumOptions options_;
  Voter voter_;
  NodeId data_peer_ = kNoNode;
  std::array<Link, kMembersMax> links_;
  LocalState local_;
  uint64_t started_ms_ = 0;
  bool data_peer_seen_ = false;
  bool quorum_ = false;
  uint64_t next_ping_ms_ = 0;
  uint64_t next_seq_ = 1;
  std::optional<Candidacy> candidacy_;
  bool won_ = false;          // won the last candidacy, not yet Primary (for one lease)
  uint64_t won_sent_ms_ = 0;  // when the won candidacy's requests went out
  std::optional<Fence> fence_;
  bool peer_fenced_ = false;
  bool told_outdated_ = false;  // BecomeOutdated emitted for the current local state
  std::vector<Action> actions_;
};

}  // namespace repld::quorum
