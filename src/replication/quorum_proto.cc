#include "replication/quorum_proto.h"

#include <array>
#include <string>

#include "replication/peer_bytes.h"

namespace repld::peer {
namespace {

using quorum::NodeId;
using quorum::Refusal;

constexpr size_t kSmallBytes = 16;  // every quorum payload but VoteRequest's
constexpr uint8_t kRefusalMax = static_cast<uint8_t>(Refusal::kWitnessNeverPrimary);
constexpr uint8_t kDiskStateMax = static_cast<uint8_t>(DiskState::kFailed);

Status Bad(MessageType type, const std::string& what) {
  return Status::Invalid("malformed " + std::string(MessageTypeName(type)) + " from peer: " + what);
}

// Reads the payload's one-byte fields in order, each checked against its range.
class Fields {
 public:
  Fields(MessageType type, std::span<const uint8_t> p, uint8_t members)
      : type_(type), p_(p), members_(members) {}
  uint64_t U64() {
    const uint64_t v = GetU64(p_.data() + at_);
    at_ += 8;
    return v;
  }
  bool Flag(const char* name) { return Byte(name, 1) == 1; }
  uint8_t Byte(const char* name, uint8_t max) {
    const uint8_t v = p_[at_++];
    if (v > max && status_.ok()) {
      status_ = Bad(type_, std::string(name) + " is " + std::to_string(v) + ", at most " +
                               std::to_string(max));
    }
    return v;
  }
  NodeId Node(const char* name) {
    const uint8_t v = p_[at_++];
    if (v != quorum::kNoNode && v >= members_ && status_.ok()) {
      status_ = Bad(type_, std::string(name) + " is node " + std::to_string(v) + " of " +
                               std::to_string(members_));
    }
    return v;
  }
  // The rest is reserved: zero.
  Status Finish() {
    for (; at_ < p_.size(); ++at_) {
      if (p_[at_] != 0 && status_.ok()) status_ = Bad(type_, "reserved bytes are not zero");
    }
    return status_;
  }

 private:
  MessageType type_;
  std::span<const uint8_t> p_;
  uint8_t members_;
  size_t at_ = 0;
  Status status_;
};

std::vector<uint8_t> Frame(MessageType type, std::span<const uint8_t> payload) {
  return EncodeFrame(type, payload);
}

}  // namespace

std::vector<uint8_t> EncodeQuorum(const quorum::Message& message) {
  std::array<uint8_t, kSmallBytes> p{};
  auto u8 = [](auto v) { return static_cast<uint8_t>(v); };
  if (const auto* m = std::get_if<quorum::Ping>(&message)) {
    PutU64(p.data(), m->seq);
    p[8] = u8(m->role);
    p[9] = u8(m->candidate);
    p[10] = u8(m->disk);
    p[11] = u8(m->data_peer_connected);
    p[12] = u8(m->data_peer_disk);
    return Frame(MessageType::kQuorumPing, p);
  }
  if (const auto* m = std::get_if<quorum::Pong>(&message)) {
    PutU64(p.data(), m->seq);
    p[8] = u8(m->supports);
    p[9] = u8(m->refusal);
    p[10] = m->supported;
    p[11] = u8(m->outdated);
    return Frame(MessageType::kQuorumPong, p);
  }
  if (const auto* m = std::get_if<quorum::VoteRequest>(&message)) {
    PutU64(p.data(), m->token);
    return Frame(MessageType::kVoteRequest, std::span(p).first(8));
  }
  if (const auto* m = std::get_if<quorum::VoteReply>(&message)) {
    PutU64(p.data(), m->token);
    p[8] = u8(m->granted);
    p[9] = u8(m->refusal);
    p[10] = m->supported;
    return Frame(MessageType::kVoteReply, p);
  }
  if (const auto* m = std::get_if<quorum::OutdateRequest>(&message)) {
    PutU64(p.data(), m->token);
    p[8] = m->node;
    return Frame(MessageType::kOutdateRequest, p);
  }
  const auto& m = std::get<quorum::OutdateReply>(message);
  PutU64(p.data(), m.token);
  p[8] = u8(m.done);
  p[9] = u8(m.refusal);
  return Frame(MessageType::kOutdateReply, p);
}

Result<quorum::Message> DecodeQuorum(MessageType type, std::span<const uint8_t> payload,
                                     uint8_t members) {
  const size_t want = type == MessageType::kVoteRequest ? 8 : kSmallBytes;
  if (!IsQuorumType(type)) return Bad(type, "not a quorum message");
  if (payload.size() != want) {
    return Bad(type, "payload is " + std::to_string(payload.size()) + " bytes, must be " +
                         std::to_string(want));
  }
  Fields f(type, payload, members);
  quorum::Message out;
  switch (type) {
    case MessageType::kQuorumPing: {
      quorum::Ping m{.seq = f.U64()};
      m.role = static_cast<Role>(f.Byte("role", 1));
      m.candidate = f.Flag("candidate");
      m.disk = static_cast<DiskState>(f.Byte("disk", kDiskStateMax));
      m.data_peer_connected = f.Flag("data_peer_connected");
      m.data_peer_disk = static_cast<DiskState>(f.Byte("data_peer_disk", kDiskStateMax));
      out = m;
      break;
    }
    case MessageType::kQuorumPong: {
      quorum::Pong m{.seq = f.U64()};
      m.supports = f.Flag("supports");
      m.refusal = static_cast<Refusal>(f.Byte("refusal", kRefusalMax));
      m.supported = f.Node("supported");
      m.outdated = f.Flag("outdated");
      out = m;
      break;
    }
    case MessageType::kVoteRequest:
      out = quorum::VoteRequest{.token = f.U64()};
      break;
    case MessageType::kVoteReply: {
      quorum::VoteReply m{.token = f.U64()};
      m.granted = f.Flag("granted");
      m.refusal = static_cast<Refusal>(f.Byte("refusal", kRefusalMax));
      m.supported = f.Node("supported");
      out = m;
      break;
    }
    case MessageType::kOutdateRequest: {
      quorum::OutdateRequest m{.token = f.U64()};
      m.node = f.Node("node");
      if (m.node == quorum::kNoNode) return Bad(type, "names no node");
      out = m;
      break;
    }
    default: {
      quorum::OutdateReply m{.token = f.U64()};
      m.done = f.Flag("done");
      m.refusal = static_cast<Refusal>(f.Byte("refusal", kRefusalMax));
      out = m;
      break;
    }
  }
  if (Status s = f.Finish(); !s.ok()) return s;
  return out;
}

}  // namespace repld::peer
