// One node's vote in its resource (docs/quorum.md): whom it backs as Primary, and which data
// nodes it holds Outdated. Every node has one, the witness included. Pure logic: time comes in
// as milliseconds of the caller's monotonic clock.
//
// The rules, each of which the "never two Primaries" argument of docs/quorum.md rests on:
//  - A voter backs at most one node at a time: a Primary that pings it, or a candidate it voted
//    for. It refuses every other node until it has heard nothing from the one it backs for
//    vote_wait (longer than any lease that node can hold from this voter's answers), or until
//    that node said it is Secondary again.
//  - It backs no candidate while another node has claimed to be Primary within vote_wait, even
//    one it did not back (it was a candidate itself then): that Primary may hold its lease
//    from the other voter.
//  - It never backs a node it holds Outdated, and holds a node Outdated from the moment a
//    Primary it backs asks until the other data node reports it Connected and UpToDate again.
//  - After a start it backs nobody for vote_wait: a Primary it backed before may still hold a
//    lease.
#pragma once

#include <cstdint>

#include "replication/quorum_msgs.h"

namespace repld::quorum {

class Voter {
 public:
  struct Options {
    NodeId self = 0;
    NodeId witness = kNoNode;  // kNoNode: two data nodes, no witness
    uint8_t members = 2;       // 2 or 3
    uint64_t vote_wait_ms = 0;
  };
  // `outdated_mask`: bit i set for node i held Outdated (persisted by the caller).
  Voter(const Options& options, uint8_t outdated_mask, uint64_t now_ms);

  // Whether this voter may back `who` as Primary (or candidate) now.
  Refusal CanBack(NodeId who, uint64_t now_ms) const;
  // The answers. Each may change the Outdated set (outdated_mask() tells; the caller persists
  // it before it sends the answer).
  Pong OnPing(NodeId from, const Ping& ping, uint64_t now_ms);
  VoteReply OnVoteRequest(NodeId from, const VoteRequest& request, uint64_t now_ms);
  OutdateReply OnOutdateRequest(NodeId from, const OutdateRequest& request, uint64_t now_ms);

  // This node itself: backs itself while Primary or candidate (and nobody else).
  void BackSelf(uint64_t now_ms);
  void ReleaseSelf();
  void MarkOutdated(NodeId node) { outdated_ |= Bit(node); }
  void ClearOutdated(NodeId node) { outdated_ &= static_cast<uint8_t>(~Bit(node)); }
  bool IsOutdated(NodeId node) const { return (outdated_ & Bit(node)) != 0; }
  uint8_t outdated_mask() const { return outdated_; }
  // Whom it backs now (kNoNode: nobody, or the one it backed went quiet for vote_wait).
  NodeId backed(uint64_t now_ms) const;
  // Not backing anyone before this time (a start).
  uint64_t blocked_until_ms() const { return blocked_until_ms_; }

 private:
  static uint8_t Bit(NodeId n) { return static_cast<uint8_t>(1u << n); }
  // The data node that is not `n` (kNoNode with fewer than two data nodes).
  NodeId OtherDataNode(NodeId n) const;
  void Back(NodeId who, uint64_t now_ms) {
    backed_ = who;
    backed_heard_ms_ = now_ms;
  }

  Options options_;
  uint8_t outdated_ = 0;
  // When each node last claimed to be Primary (a ping), unless it was held Outdated here.
  uint64_t claimed_ms_[kMembersMax] = {};
  bool claimed_[kMembersMax] = {};
  NodeId backed_ = kNoNode;
  uint64_t backed_heard_ms_ = 0;
  uint64_t blocked_until_ms_ = 0;
};

}  // namespace repld::quorum
