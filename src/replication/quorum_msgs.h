// The messages of quorum and promotion votes between the nodes of one resource (two data nodes
// and, optionally, a diskless witness). Logic only: the daemon carries them in peer frames, the
// simulator (tests/sim/quorum_world.cc) on its own network. See docs/quorum.md for the model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <variant>

#include "replication/states.h"

namespace repld::quorum {

// A node of the resource, by its index in the members list (QuorumOptions::members).
using NodeId = uint8_t;
inline constexpr NodeId kNoNode = 0xFF;
inline constexpr size_t kMembersMax = 3;

// Why a voter refuses its vote, its support of a Primary, or an outdate request.
enum class Refusal : uint8_t {
  kNone = 0,
  kSupportsOther = 1,        // it supports another Primary (or candidate) heard from recently
  kOutdated = 2,             // the candidate (or Primary) is Outdated at this voter
  kVoterIsPrimary = 3,       // the voter is Primary itself
  kStartupWait = 4,          // the voter started recently: a Primary it cannot know of may live
  kNotSupported = 5,         // an outdate request from a node this voter does not support
  kWitnessNeverPrimary = 6,  // the witness holds no data: it is never a candidate
};

const char* RefusalName(Refusal r);

// Every ping_interval on every link: what the sender is, so that voters know whom they support
// and when a data node has caught up again.
struct Ping {
  uint64_t seq = 0;
  Role role = Role::kSecondary;
  bool candidate = false;  // asking for votes, or won them and not yet Primary
  DiskState disk = DiskState::kDiskless;
  // The sender is Connected to the other data node, whose disk is this (a witness: false).
  bool data_peer_connected = false;
  DiskState data_peer_disk = DiskState::kDiskless;
};
// The answer to Ping `seq`. `supports`: the voter backs the sender as Primary (meaningful when
// the ping said Primary), until vote_wait after it received the ping.
struct Pong {
  uint64_t seq = 0;
  bool supports = false;
  Refusal refusal = Refusal::kNone;
  NodeId supported = kNoNode;  // whom the voter supports, if anyone
  // The voter holds the sender Outdated: the sender, not Connected to its data peer, persists its
  // disk as Outdated (Connected, the handshake settled it, and the data peer clears the record).
  bool outdated = false;
};
// A candidate asks for a vote. Once Primary, it fences the data peer it is not Connected to
// (OutdateRequest) before it acknowledges a write: a vote marks nobody, since the candidate may
// not promote after all.
struct VoteRequest {
  uint64_t token = 0;
};
struct VoteReply {
  uint64_t token = 0;
  bool granted = false;
  Refusal refusal = Refusal::kNone;
  NodeId supported = kNoNode;
};
// A Primary that lost its data peer asks the voters to record the peer Outdated before it
// acknowledges a write the peer lacks.
struct OutdateRequest {
  uint64_t token = 0;
  NodeId node = kNoNode;
};
struct OutdateReply {
  uint64_t token = 0;
  bool done = false;
  Refusal refusal = Refusal::kNone;
};
using Message = std::variant<Ping, Pong, VoteRequest, VoteReply, OutdateRequest, OutdateReply>;

}  // namespace repld::quorum
