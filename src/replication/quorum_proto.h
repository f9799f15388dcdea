// The quorum frames on the peer link (types 0x30..0x35, feature bit kFeatureQuorum): encoding
// and strict decoding of quorum::Message (quorum_msgs.h). Layouts in docs/peer-protocol.md,
// "Quorum and votes". A node is its index in the resource's node names sorted bytewise, the
// same list on every node (kNoNode, 0xFF: none).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "replication/peer_proto.h"
#include "replication/quorum_msgs.h"

namespace repld::peer {

inline constexpr bool IsQuorumType(MessageType t) {
  return t >= MessageType::kQuorumPing && t <= MessageType::kOutdateReply;
}
// A whole frame (header and payload).
std::vector<uint8_t> EncodeQuorum(const quorum::Message& message);
// The payload of a frame whose header said `type` (IsQuorumType); `members`: the resource's
// node count, which bounds every node index.
Result<quorum::Message> DecodeQuorum(MessageType type, std::span<const uint8_t> payload,
                                     uint8_t members);

}  // namespace repld::peer
