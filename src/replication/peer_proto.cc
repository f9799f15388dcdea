#include "replication/peer_proto.h"

#include <algorithm>
#include <cstdio>

#include "replication/crc32c.h"
#include "replication/peer_bytes.h"

namespace repld::peer {
namespace {

// Header offsets (docs/peer-protocol.md, "Frame").
constexpr size_t kAtMagic = 0;
constexpr size_t kAtType = 4;
constexpr size_t kAtFlags = 6;
constexpr size_t kAtPayloadBytes = 8;
constexpr size_t kAtPayloadCrc = 12;
constexpr size_t kAtReserved = 16;
constexpr size_t kAtHeaderCrc = 20;
static_assert(kAtHeaderCrc + 4 == kFrameHeaderBytes);

struct PayloadBounds {
  uint32_t min_bytes;
  uint32_t max_bytes;
};

// The payload length each known type allows; nullopt for a type this version does not know.
std::optional<PayloadBounds> BoundsOf(uint16_t type) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::kHello:
      return PayloadBounds{Hello::kBytesMin, Hello::kBytesMax};
    case MessageType::kAuth:
      return PayloadBounds{Auth::kBytes, Auth::kBytes};
    case MessageType::kState:
      return PayloadBounds{State::kBytes, State::kBytes};
    case MessageType::kError:
      return PayloadBounds{Error::kBytesMin, Error::kBytesMax};
    case MessageType::kPing:
    case MessageType::kPingAck:
    case MessageType::kRecvAck:
    case MessageType::kFlush:
    case MessageType::kPromoteRequest:
    case MessageType::kVoteRequest:
      return PayloadBounds{8, 8};
    case MessageType::kQuorumPing:
    case MessageType::kQuorumPong:
    case MessageType::kVoteReply:
    case MessageType::kOutdateRequest:
    case MessageType::kOutdateReply:
      return PayloadBounds{16, 16};
    case MessageType::kPromoteReply:
      return PayloadBounds{PromoteReply::kBytesMin, PromoteReply::kBytesMax};
    case MessageType::kWriteAck:
    case MessageType::kFlushAck:
    case MessageType::kReadError:
      return PayloadBounds{12, 12};
    case MessageType::kReadRequest:
      return PayloadBounds{ReadRequest::kBytes, ReadRequest::kBytes};
    case MessageType::kData:
      return PayloadBounds{Data::kHeadBytes, Data::kHeadBytes + kDataBytesMax};
    case MessageType::kOutOfSync:
      return PayloadBounds{OutOfSync::kBytesMin, OutOfSync::kBytesMax};
    case MessageType::kCsums:
      return PayloadBounds{Csums::kHeadBytes + 8, Csums::kBytesMax};
    case MessageType::kCsumReply:
      return PayloadBounds{CsumReply::kHeadBytes, CsumReply::kBytesMax};
  }
  return std::nullopt;
}
static_assert(Data::kHeadBytes + kDataBytesMax <= kPeerMaxPayload);
static_assert(Error::kBytesMax <= kPeerMaxPayload && Hello::kBytesMax <= kPeerMaxPayload);

std::string Hex(uint64_t v, int digits = 8) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%0*llx", digits, static_cast<unsigned long long>(v));
  return buf;
}

// What a stranger on our port probably is, from its first bytes.
std::string GuessOtherProtocol(std::span<const uint8_t> b) {
  const std::string_view s(reinterpret_cast<const char*>(b.data()), b.size());
  if (b.size() >= 2 && b[0] == 0x16 && b[1] == 0x03) return " (a TLS handshake?)";
  if (s.starts_with("NBDM")) return " (an NBD server?)";
  if (s.starts_with("SSH-")) return " (an SSH server?)";
  if (s.starts_with("GET ") || s.starts_with("POST") || s.starts_with("HTTP")) return " (HTTP?)";
  return "";
}

Status Malformed(MessageType type, const std::string& what) {
  return Status::Invalid("malformed " + std::string(MessageTypeName(type)) + " from peer: " + what);
}

Status CheckExactBytes(MessageType type, std::span<const uint8_t> payload, size_t bytes) {
  if (payload.size() == bytes) return Status::Ok();
  return Malformed(type, "payload is " + std::to_string(payload.size()) + " bytes, must be " +
                             std::to_string(bytes));
}

Status CheckAckError(MessageType type, int32_t error) {
  if (error >= 0 && error <= kAckErrorMax) return Status::Ok();
  return Malformed(type, "error " + std::to_string(error) + " is not 0 or an errno value");
}

template <size_t N>
std::array<uint8_t, kFrameHeaderBytes + N> FrameOf(MessageType type,
                                                   const std::array<uint8_t, N>& payload) {
  std::array<uint8_t, kFrameHeaderBytes + N> out{};
  const FrameHeaderBytes header =
      EncodeFrameHeader(type, 0, static_cast<uint32_t>(N), Crc32c(payload));
  std::copy(header.begin(), header.end(), out.begin());
  std::copy(payload.begin(), payload.end(), out.begin() + kFrameHeaderBytes);
  return out;
}

// Frames of the messages that are one u64 (seq or token).
template <typename M>
std::array<uint8_t, kFrameHeaderBytes + 8> EncodeU64(uint64_t v) {
  std::array<uint8_t, 8> p{};
  PutU64(p.data(), v);
  return FrameOf(M::kType, p);
}

template <typename M>
std::array<uint8_t, kFrameHeaderBytes + 12> EncodeU64I32(uint64_t v, int32_t error) {
  REPLD_CHECK(error >= 0 && error <= kAckErrorMax);
  std::array<uint8_t, 12> p{};
  PutU64(p.data(), v);
  PutU32(p.data() + 8, static_cast<uint32_t>(error));
  return FrameOf(M::kType, p);
}

uint8_t WireDiskState(DiskState d) {
  switch (d) {  // wire values are fixed forever; the enum's numbering is not
    case DiskState::kDiskless:
      return 0;
    case DiskState::kInconsistent:
      return 1;
    case DiskState::kOutdated:
      return 2;
    case DiskState::kUpToDate:
      return 3;
    case DiskState::kFailed:
      return 1;  // being detached: the peer reads it as Inconsistent (no data to take)
  }
  REPLD_CHECK(false);
}
std::optional<DiskState> DiskStateFromWire(uint8_t v) {
  constexpr DiskState kAll[] = {DiskState::kDiskless, DiskState::kInconsistent,
                                DiskState::kOutdated, DiskState::kUpToDate};
  for (DiskState d : kAll) {
    if (WireDiskState(d) == v) return d;
  }
  return std::nullopt;
}

uint8_t WireRole(Role r) {
  switch (r) {
    case Role::kSecondary:
      return 0;
    case Role::kPrimary:
      return 1;
  }
  REPLD_CHECK(false);
}

std::optional<Protocol> ProtocolFromLetter(uint8_t letter) {
  for (Protocol p : {Protocol::kA, Protocol::kB, Protocol::kC}) {
    if (static_cast<uint8_t>(ProtocolLetter(p)) == letter) return p;
  }
  return std::nullopt;
}

}  // namespace

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "Hello";
    case MessageType::kAuth:
      return "Auth";
    case MessageType::kState:
      return "State";
    case MessageType::kError:
      return "Error";
    case MessageType::kPing:
      return "Ping";
    case MessageType::kPingAck:
      return "PingAck";
    case MessageType::kPromoteRequest:
      return "PromoteRequest";
    case MessageType::kPromoteReply:
      return "PromoteReply";
    case MessageType::kData:
      return "Data";
    case MessageType::kRecvAck:
      return "RecvAck";
    case MessageType::kWriteAck:
      return "WriteAck";
    case MessageType::kFlush:
      return "Flush";
    case MessageType::kFlushAck:
      return "FlushAck";
    case MessageType::kOutOfSync:
      return "OutOfSync";
    case MessageType::kCsums:
      return "Csums";
    case MessageType::kCsumReply:
      return "CsumReply";
    case MessageType::kReadRequest:
      return "ReadRequest";
    case MessageType::kReadError:
      return "ReadError";
    case MessageType::kQuorumPing:
      return "QuorumPing";
    case MessageType::kQuorumPong:
      return "QuorumPong";
    case MessageType::kVoteRequest:
      return "VoteRequest";
    case MessageType::kVoteReply:
      return "VoteReply";
    case MessageType::kOutdateRequest:
      return "OutdateRequest";
    case MessageType::kOutdateReply:
      return "OutdateReply";
  }
  return "unknown message";
}

// ---- Frame ----------------------------------------------------------------------------------

FrameHeaderBytes EncodeFrameHeader(MessageType type, uint16_t flags, uint32_t payload_bytes,
                                   uint32_t payload_crc) {
  const std::optional<PayloadBounds> bounds = BoundsOf(static_cast<uint16_t>(type));
  REPLD_CHECK(bounds && payload_bytes >= bounds->min_bytes && payload_bytes <= bounds->max_bytes);
  REPLD_CHECK((flags & ~kFrameFlagsKnown) == 0);
  FrameHeaderBytes b{};
  PutU32(b.data() + kAtMagic, kFrameMagic);
  PutU16(b.data() + kAtType, static_cast<uint16_t>(type));
  PutU16(b.data() + kAtFlags, flags);
  PutU32(b.data() + kAtPayloadBytes, payload_bytes);
  PutU32(b.data() + kAtPayloadCrc, payload_crc);
  PutU32(b.data() + kAtReserved, 0);
  PutU32(b.data() + kAtHeaderCrc, Crc32c(std::span(b).first(kAtHeaderCrc)));
  return b;
}

Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> b) {
  if (b.size() != kFrameHeaderBytes) {
    return Status::Invalid("peer frame header must be " + std::to_string(kFrameHeaderBytes) +
                           " bytes, got " + std::to_string(b.size()));
  }
  const uint32_t magic = GetU32(b.data() + kAtMagic);
  if (magic != kFrameMagic) {
    std::string first;
    for (size_t i = 0; i < 8; ++i) first += (i ? " " : "") + Hex(b[i], 2);
    return Status::Invalid("peer speaks something else: first bytes " + first +
                           GuessOtherProtocol(b) + ", expected \"RPL1\"; is the address of the " +
                           "peer in the config the repld peer link of that node?");
  }
  const uint32_t header_crc = GetU32(b.data() + kAtHeaderCrc);
  const uint32_t computed = Crc32c(b.first(kAtHeaderCrc));
  if (header_crc != computed) {
    return Status::Invalid("peer frame header checksum mismatch (sent " + Hex(header_crc) +
                           ", computed " + Hex(computed) + "): corrupted on the way");
  }
  if (GetU32(b.data() + kAtReserved) != 0) {
    return Status::Invalid("peer frame header has reserved bytes set: a newer protocol?");
  }
  FrameHeader h;
  const uint16_t type = GetU16(b.data() + kAtType);
  h.flags = GetU16(b.data() + kAtFlags);
  h.payload_bytes = GetU32(b.data() + kAtPayloadBytes);
  h.payload_crc = GetU32(b.data() + kAtPayloadCrc);
  if ((h.flags & ~kFrameFlagsKnown) != 0) {
    return Status::Invalid("peer frame has unknown flags " + Hex(h.flags, 4));
  }
  const std::optional<PayloadBounds> bounds = BoundsOf(type);
  if (!bounds) {
    return Status::Invalid("peer sent unknown message type " + Hex(type, 4) +
                           ": a newer protocol it should not use with us");
  }
  h.type = static_cast<MessageType>(type);
  if (h.payload_bytes > kPeerMaxPayload) {
    return Status::Invalid("peer frame payload of " + std::to_string(h.payload_bytes) +
                           " bytes is over the limit of " + std::to_string(kPeerMaxPayload));
  }
  if (h.payload_bytes < bounds->min_bytes || h.payload_bytes > bounds->max_bytes) {
    return Status::Invalid("peer " + std::string(MessageTypeName(h.type)) + " payload of " +
                           std::to_string(h.payload_bytes) + " bytes is outside " +
                           std::to_string(bounds->min_bytes) + ".." +
                           std::to_string(bounds->max_bytes));
  }
  return h;
}

Status CheckPayloadCrc(const FrameHeader& header, uint32_t computed_crc) {
  if (header.payload_crc == computed_crc) return Status::Ok();
  return Status::Invalid("peer " + std::string(MessageTypeName(header.type)) + " payload of " +
                         std::to_string(header.payload_bytes) + " bytes: checksum mismatch (sent " +
                         Hex(header.payload_crc) + ", computed " + Hex(computed_crc) +
                         "): corrupted on the way");
}

std::vector<uint8_t> EncodeFrame(MessageType type, std::span<const uint8_t> payload) {
  std::vector<uint8_t> out(kFrameHeaderBytes + payload.size());
  const FrameHeaderBytes header =
      EncodeFrameHeader(type, 0, static_cast<uint32_t>(payload.size()), Crc32c(payload));
  std::copy(header.begin(), header.end(), out.begin());
  std::copy(payload.begin(), payload.end(), out.begin() + kFrameHeaderBytes);
  return out;
}

Result<FrameView> DecodeFrame(std::span<const uint8_t> frame) {
  if (frame.size() < kFrameHeaderBytes) {
    return Status::Invalid("peer frame truncated: " + std::to_string(frame.size()) +
                           " bytes, the header alone is " + std::to_string(kFrameHeaderBytes));
  }
  Result<FrameHeader> header = DecodeFrameHeader(frame.first(kFrameHeaderBytes));
  if (!header.ok()) return header.status();
  const std::span<const uint8_t> payload = frame.subspan(kFrameHeaderBytes);
  if (payload.size() != header->payload_bytes) {
    return Status::Invalid("peer " + std::string(MessageTypeName(header->type)) + " frame has " +
                           std::to_string(payload.size()) + " payload bytes, its header says " +
                           std::to_string(header->payload_bytes));
  }
  Status s = CheckPayloadCrc(header.value(), Crc32c(payload));
  if (!s.ok()) return s;
  return FrameView{header.value(), payload};
}

// ---- Handshake messages -----------------------------------------------------------------------

bool IsValidWireName(std::string_view name) {
  if (name.empty() || name.size() > kNameBytesMax) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::vector<uint8_t> Hello::Encode() const {
  REPLD_CHECK(version_min <= version_max);
  REPLD_CHECK(IsValidWireName(resource) && IsValidWireName(node) && IsValidWireName(peer_node));
  std::vector<uint8_t> p(kFixedBytes);
  PutU16(p.data() + 0, version_min);
  PutU16(p.data() + 2, version_max);
  p[4] = static_cast<uint8_t>(ProtocolLetter(protocol));
  // 5..7 reserved, zero
  PutU64(p.data() + 8, features);
  PutU64(p.data() + 16, data_bytes);
  std::copy(nonce.begin(), nonce.end(), p.begin() + 24);
  for (const std::string* s : {&resource, &node, &peer_node}) {
    p.push_back(static_cast<uint8_t>(s->size()));
    p.insert(p.end(), s->begin(), s->end());
  }
  return EncodeFrame(kType, p);
}

Result<Hello> Hello::Decode(std::span<const uint8_t> p) {
  if (p.size() < kBytesMin || p.size() > kBytesMax) {
    return Malformed(kType, "payload is " + std::to_string(p.size()) + " bytes, must be " +
                                std::to_string(kBytesMin) + ".." + std::to_string(kBytesMax));
  }
  Hello h;
  h.version_min = GetU16(p.data());
  h.version_max = GetU16(p.data() + 2);
  if (h.version_min == 0 || h.version_min > h.version_max) {
    return Malformed(kType, "version range " + std::to_string(h.version_min) + ".." +
                                std::to_string(h.version_max) + " is empty");
  }
  const std::optional<Protocol> protocol = ProtocolFromLetter(p[4]);
  if (!protocol)
    return Malformed(kType, "replication protocol " + Hex(p[4], 2) + " is not A, B or C");
  h.protocol = *protocol;
  if (p[5] != 0 || p[6] != 0 || p[7] != 0) return Malformed(kType, "reserved bytes are set");
  h.features = GetU64(p.data() + 8);
  h.data_bytes = GetU64(p.data() + 16);
  std::copy_n(p.begin() + 24, kNonceBytes, h.nonce.begin());
  size_t at = kFixedBytes;
  const char* const kWhat[] = {"resource name", "node name", "expected peer node name"};
  std::string* const fields[] = {&h.resource, &h.node, &h.peer_node};
  for (size_t i = 0; i < 3; ++i) {
    if (at >= p.size() || p.size() - at - 1 < p[at]) {
      return Malformed(kType, std::string(kWhat[i]) + " runs past the end of the payload");
    }
    const size_t bytes = p[at];
    fields[i]->assign(reinterpret_cast<const char*>(p.data() + at + 1), bytes);
    at += 1 + bytes;
    if (!IsValidWireName(*fields[i])) {
      return Malformed(kType, std::string(kWhat[i]) + " of " + std::to_string(bytes) +
                                  " bytes is not 1 to 64 of A-Z a-z 0-9 _ - .");
    }
  }
  if (at != p.size()) {
    return Malformed(kType, std::to_string(p.size() - at) + " bytes after the last name");
  }
  return h;
}

std::array<uint8_t, kFrameHeaderBytes + Auth::kBytes> Auth::Encode() const {
  return FrameOf(kType, response);
}

Result<Auth> Auth::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  Auth a;
  std::copy(p.begin(), p.end(), a.response.begin());
  return a;
}

std::array<uint8_t, kFrameHeaderBytes + State::kBytes> State::Encode() const {
  REPLD_CHECK((flags & ~kStateFlagsKnown) == 0 && out_of_sync_bytes <= data_bytes);
  std::array<uint8_t, kBytes> p{};
  p[0] = WireRole(role);
  p[1] = WireDiskState(disk);
  // 2..3 reserved, zero
  PutU32(p.data() + 4, flags);
  PutU64(p.data() + 8, data_bytes);
  PutU64(p.data() + 16, current_uuid);
  PutU64(p.data() + 24, bitmap_uuid);
  PutU64(p.data() + 32, history_uuids[0]);
  PutU64(p.data() + 40, history_uuids[1]);
  PutU64(p.data() + 48, out_of_sync_bytes);
  return FrameOf(kType, p);
}

Result<State> State::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  State st;
  if (p[0] > 1) return Malformed(kType, "role " + std::to_string(p[0]) + " is not 0 or 1");
  st.role = p[0] == 1 ? Role::kPrimary : Role::kSecondary;
  const std::optional<DiskState> disk = DiskStateFromWire(p[1]);
  if (!disk) return Malformed(kType, "disk state " + std::to_string(p[1]) + " is unknown");
  st.disk = *disk;
  if (p[2] != 0 || p[3] != 0) return Malformed(kType, "reserved bytes are set");
  st.flags = GetU32(p.data() + 4);
  if ((st.flags & ~kStateFlagsKnown) != 0) {
    return Malformed(kType, "unknown flags " + Hex(st.flags & ~kStateFlagsKnown));
  }
  st.data_bytes = GetU64(p.data() + 8);
  st.current_uuid = GetU64(p.data() + 16);
  st.bitmap_uuid = GetU64(p.data() + 24);
  st.history_uuids[0] = GetU64(p.data() + 32);
  st.history_uuids[1] = GetU64(p.data() + 40);
  st.out_of_sync_bytes = GetU64(p.data() + 48);
  if (st.out_of_sync_bytes > st.data_bytes) {
    return Malformed(kType, "out-of-sync " + std::to_string(st.out_of_sync_bytes) +
                                " bytes is more than the data size " +
                                std::to_string(st.data_bytes));
  }
  return st;
}

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUnspecified:
      return "unspecified";
    case ErrorCode::kProtocolVersion:
      return "protocol-version";
    case ErrorCode::kResource:
      return "resource";
    case ErrorCode::kNodeName:
      return "node-name";
    case ErrorCode::kReplicationProtocol:
      return "replication-protocol";
    case ErrorCode::kDataSize:
      return "data-size";
    case ErrorCode::kAuthFailed:
      return "auth-failed";
    case ErrorCode::kProtocolViolation:
      return "protocol-violation";
    case ErrorCode::kLoopback:
      return "loopback";
    case ErrorCode::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

namespace {

// A payload of `head_bytes` fixed bytes, then a u16 text length (at head_bytes - 2) and the
// text: cut to kErrorTextBytesMax, control characters sent as '?' (it ends up in a log).
std::vector<uint8_t> WithText(size_t head_bytes, const std::string& text) {
  const size_t text_bytes = std::min(text.size(), kErrorTextBytesMax);
  std::vector<uint8_t> p(head_bytes + text_bytes);
  PutU16(p.data() + head_bytes - 2, static_cast<uint16_t>(text_bytes));
  for (size_t i = 0; i < text_bytes; ++i) {
    const auto c = static_cast<uint8_t>(text[i]);
    p[head_bytes + i] = (c < 0x20 || c == 0x7f) ? '?' : c;
  }
  return p;
}

// The text of such a payload (whose size the caller checked): its length must match, and it
// must be printable.
Result<std::string> TextOf(MessageType type, std::span<const uint8_t> p, size_t head_bytes,
                           const char* what) {
  const size_t text_bytes = GetU16(p.data() + head_bytes - 2);
  if (text_bytes > kErrorTextBytesMax || p.size() != head_bytes + text_bytes) {
    return Malformed(type, std::string(what) + " length " + std::to_string(text_bytes) +
                               " does not match the " + std::to_string(p.size()) + "-byte payload");
  }
  for (uint8_t c : p.subspan(head_bytes)) {
    if (c < 0x20 || c == 0x7f) {
      return Malformed(type, std::string(what) + " holds control character " + Hex(c, 2));
    }
  }
  return std::string(reinterpret_cast<const char*>(p.data() + head_bytes), text_bytes);
}

Status CheckPayloadBounds(MessageType type, std::span<const uint8_t> p, size_t min_bytes,
                          size_t max_bytes) {
  if (p.size() >= min_bytes && p.size() <= max_bytes) return Status::Ok();
  return Malformed(type, "payload is " + std::to_string(p.size()) + " bytes, must be " +
                             std::to_string(min_bytes) + ".." + std::to_string(max_bytes));
}

}  // namespace

std::vector<uint8_t> Error::Encode() const {
  std::vector<uint8_t> p = WithText(kBytesMin, text);
  PutU32(p.data(), static_cast<uint32_t>(code));
  return EncodeFrame(kType, p);
}

Result<Error> Error::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckPayloadBounds(kType, p, kBytesMin, kBytesMax); !s.ok()) return s;
  Error e;
  e.code = static_cast<ErrorCode>(GetU32(p.data()));
  Result<std::string> text = TextOf(kType, p, kBytesMin, "text");
  if (!text.ok()) return text.status();
  e.text = std::move(text).value();
  return e;
}

namespace {

// Byte runs as OutOfSync and CsumReply carry them: non-empty, whole sectors, ascending, no overlap.
Status CheckRuns(MessageType type, const std::vector<OutOfSync::Run>& runs) {
  uint64_t end = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const OutOfSync::Run& run = runs[i];
    const std::string which = "run " + std::to_string(i) + " [" + std::to_string(run.offset_bytes) +
                              ", +" + std::to_string(run.length_bytes) + ")";
    if (run.length_bytes == 0 || run.offset_bytes % 512 != 0 || run.length_bytes % 512 != 0) {
      return Malformed(type, which + " is empty or not in whole 512-byte sectors");
    }
    if (run.length_bytes > UINT64_MAX - run.offset_bytes) {
      return Malformed(type, which + " wraps around");
    }
    if (i > 0 && run.offset_bytes < end) {
      return Malformed(type, which + " overlaps or precedes the run before it");
    }
    end = run.offset_bytes + run.length_bytes;
  }
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> OutOfSync::Encode() const {
  REPLD_CHECK(runs.size() <= kOutOfSyncRunsMax && (flags & ~kOutOfSyncFlagsKnown) == 0);
  std::vector<uint8_t> p(kBytesMin + runs.size() * kRunBytes);
  PutU32(p.data(), flags);
  PutU32(p.data() + 4, static_cast<uint32_t>(runs.size()));
  uint8_t* at = p.data() + kBytesMin;
  for (const Run& run : runs) {
    PutU64(at, run.offset_bytes);
    PutU64(at + 8, run.length_bytes);
    at += kRunBytes;
  }
  return EncodeFrame(kType, p);
}

Result<OutOfSync> OutOfSync::Decode(std::span<const uint8_t> p) {
  if (p.size() < kBytesMin || p.size() > kBytesMax) {
    return Malformed(kType, "payload is " + std::to_string(p.size()) + " bytes, must be " +
                                std::to_string(kBytesMin) + ".." + std::to_string(kBytesMax));
  }
  OutOfSync m;
  m.flags = GetU32(p.data());
  if ((m.flags & ~kOutOfSyncFlagsKnown) != 0) {
    return Malformed(kType, "unknown flags " + Hex(m.flags & ~kOutOfSyncFlagsKnown));
  }
  const uint32_t count = GetU32(p.data() + 4);
  if (count > kOutOfSyncRunsMax || p.size() != kBytesMin + size_t{count} * kRunBytes) {
    return Malformed(kType, "run count " + std::to_string(count) + " does not match the " +
                                std::to_string(p.size()) + "-byte payload");
  }
  m.runs.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* at = p.data() + kBytesMin + size_t{i} * kRunBytes;
    m.runs[i].offset_bytes = GetU64(at);
    m.runs[i].length_bytes = GetU64(at + 8);
  }
  if (Status s = CheckRuns(kType, m.runs); !s.ok()) return s;
  return m;
}

std::vector<uint8_t> Csums::Encode() const {
  REPLD_CHECK(length_bytes > 0 && length_bytes <= kCsumsBytesMax && length_bytes % 512 == 0);
  REPLD_CHECK(digests.size() == (length_bytes + 4095) / 4096);
  REPLD_CHECK((flags & ~kCsumsFlagsKnown) == 0);
  std::vector<uint8_t> p(kHeadBytes + digests.size() * 8);
  PutU64(p.data(), seq);
  PutU64(p.data() + 8, offset_bytes);
  PutU32(p.data() + 16, length_bytes);
  PutU32(p.data() + 20, flags);
  for (size_t i = 0; i < digests.size(); ++i) PutU64(p.data() + kHeadBytes + 8 * i, digests[i]);
  return EncodeFrame(kType, p);
}

Result<Csums> Csums::Decode(std::span<const uint8_t> p) {
  if (p.size() < kHeadBytes || p.size() > kBytesMax) {
    return Malformed(kType, "payload is " + std::to_string(p.size()) + " bytes, must be " +
                                std::to_string(kHeadBytes) + ".." + std::to_string(kBytesMax));
  }
  Csums m;
  m.seq = GetU64(p.data());
  m.offset_bytes = GetU64(p.data() + 8);
  m.length_bytes = GetU32(p.data() + 16);
  m.flags = GetU32(p.data() + 20);
  if ((m.flags & ~kCsumsFlagsKnown) != 0) {
    return Malformed(kType, "unknown flags " + Hex(m.flags & ~kCsumsFlagsKnown));
  }
  if (m.length_bytes == 0 || m.length_bytes > kCsumsBytesMax || m.length_bytes % 512 != 0 ||
      m.offset_bytes % 512 != 0) {
    return Malformed(kType, "range [" + std::to_string(m.offset_bytes) + ", +" +
                                std::to_string(m.length_bytes) +
                                ") is empty, over 4 MiB or not in whole 512-byte sectors");
  }
  if (m.length_bytes > UINT64_MAX - m.offset_bytes) return Malformed(kType, "range wraps around");
  const size_t count = (m.length_bytes + 4095) / 4096;
  if (p.size() != kHeadBytes + 8 * count) {
    return Malformed(kType, std::to_string(p.size() - kHeadBytes) + " bytes of digests for a " +
                                std::to_string(m.length_bytes) + "-byte range (" +
                                std::to_string(count) + " expected)");
  }
  m.digests.resize(count);
  for (size_t i = 0; i < count; ++i) m.digests[i] = GetU64(p.data() + kHeadBytes + 8 * i);
  return m;
}

std::vector<uint8_t> CsumReply::Encode() const {
  REPLD_CHECK(differing.size() <= kCsumReplyRunsMax);
  REPLD_CHECK(error >= 0 && error <= kAckErrorMax);
  std::vector<uint8_t> p(kHeadBytes + differing.size() * 16);
  PutU64(p.data(), seq);
  PutU32(p.data() + 8, static_cast<uint32_t>(error));
  PutU32(p.data() + 12, static_cast<uint32_t>(differing.size()));
  for (size_t i = 0; i < differing.size(); ++i) {
    PutU64(p.data() + kHeadBytes + 16 * i, differing[i].offset_bytes);
    PutU64(p.data() + kHeadBytes + 16 * i + 8, differing[i].length_bytes);
  }
  return EncodeFrame(kType, p);
}

Result<CsumReply> CsumReply::Decode(std::span<const uint8_t> p) {
  if (p.size() < kHeadBytes || p.size() > kBytesMax) {
    return Malformed(kType, "payload is " + std::to_string(p.size()) + " bytes, must be " +
                                std::to_string(kHeadBytes) + ".." + std::to_string(kBytesMax));
  }
  CsumReply m;
  m.seq = GetU64(p.data());
  m.error = static_cast<int32_t>(GetU32(p.data() + 8));
  if (Status s = CheckAckError(kType, m.error); !s.ok()) return s;
  const uint32_t count = GetU32(p.data() + 12);
  if (count > kCsumReplyRunsMax || p.size() != kHeadBytes + size_t{count} * 16) {
    return Malformed(kType, "run count " + std::to_string(count) + " does not match the " +
                                std::to_string(p.size()) + "-byte payload");
  }
  m.differing.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    m.differing[i].offset_bytes = GetU64(p.data() + kHeadBytes + 16 * size_t{i});
    m.differing[i].length_bytes = GetU64(p.data() + kHeadBytes + 16 * size_t{i} + 8);
  }
  if (Status s = CheckRuns(kType, m.differing); !s.ok()) return s;
  return m;
}

std::string DescribeRefusal(const Error& error, std::string_view peer_node) {
  return "peer '" + std::string(peer_node) + "' refused the connection (" +
         std::string(ErrorCodeName(error.code)) + "): " + error.text;
}

// ---- Replication messages ---------------------------------------------------------------------

namespace {

using DataHeadFrame = std::array<uint8_t, kFrameHeaderBytes + Data::kHeadBytes>;

// Checks `d` as DecodeHead would and that `data_bytes` of data go with it, writes the head after
// the frame header's place in `out`, and returns the head's CRC (the start of the payload CRC).
uint32_t PutDataHead(const Data& d, uint64_t data_bytes, DataHeadFrame& out) {
  REPLD_CHECK((d.flags & ~kDataFlagsKnown) == 0);
  REPLD_CHECK((d.flags & kDataFlagZeroes) == 0 || (d.flags & kDataFlagTrim) == 0);
  REPLD_CHECK((d.flags & kDataFlagReadReply) == 0 || d.flags == kDataFlagReadReply);
  REPLD_CHECK(d.length_bytes > 0 && IsAligned(d.length_bytes, kSectorBytes));
  REPLD_CHECK(IsAligned(d.offset_bytes, kSectorBytes) &&
              d.offset_bytes + d.length_bytes > d.offset_bytes);
  REPLD_CHECK(d.HasPayloadData() ? data_bytes == d.length_bytes && d.length_bytes <= kDataBytesMax
                                 : data_bytes == 0);
  uint8_t* head = out.data() + kFrameHeaderBytes;
  PutU64(head, d.seq);
  PutU64(head + 8, d.offset_bytes);
  PutU32(head + 16, d.length_bytes);
  PutU32(head + 20, d.flags);
  return Crc32c(std::span<const uint8_t>(head, Data::kHeadBytes));
}

void PutDataFrameHeader(const Data& d, uint32_t payload_crc, DataHeadFrame& out) {
  const FrameHeaderBytes header = EncodeFrameHeader(Data::kType, 0, d.PayloadBytes(), payload_crc);
  std::copy(header.begin(), header.end(), out.begin());
}

}  // namespace

std::array<uint8_t, kFrameHeaderBytes + Data::kHeadBytes> Data::EncodeHead(
    std::span<const uint8_t> data) const {
  DataHeadFrame out{};
  const uint32_t head_crc = PutDataHead(*this, data.size(), out);
  PutDataFrameHeader(*this, Crc32c(data, head_crc), out);
  return out;
}

std::array<uint8_t, kFrameHeaderBytes + Data::kHeadBytes> Data::EncodeHeadGathered(
    std::span<const iovec> data) const {
  uint64_t data_bytes = 0;
  for (const iovec& piece : data) data_bytes += piece.iov_len;
  DataHeadFrame out{};
  uint32_t crc = PutDataHead(*this, data_bytes, out);
  for (const iovec& piece : data) {
    crc = Crc32c(std::span(static_cast<const uint8_t*>(piece.iov_base), piece.iov_len), crc);
  }
  PutDataFrameHeader(*this, crc, out);
  return out;
}

Result<Data> Data::DecodeHead(std::span<const uint8_t> h, uint32_t payload_bytes) {
  if (Status s = CheckExactBytes(kType, h, kHeadBytes); !s.ok()) return s;
  Data d;
  d.seq = GetU64(h.data());
  d.offset_bytes = GetU64(h.data() + 8);
  d.length_bytes = GetU32(h.data() + 16);
  d.flags = GetU32(h.data() + 20);
  const std::string what = "write " + std::to_string(d.seq) + " ";
  if ((d.flags & ~kDataFlagsKnown) != 0) {
    return Malformed(kType, what + "has unknown flags " + Hex(d.flags & ~kDataFlagsKnown));
  }
  if ((d.flags & kDataFlagZeroes) != 0 && (d.flags & kDataFlagTrim) != 0) {
    return Malformed(kType, what + "is both ZEROES and TRIM");
  }
  if ((d.flags & kDataFlagReadReply) != 0 && d.flags != kDataFlagReadReply) {
    return Malformed(
        kType, what + "is a read reply with other flags " + Hex(d.flags & ~kDataFlagReadReply));
  }
  if (d.length_bytes == 0 || !IsAligned(d.length_bytes, kSectorBytes) ||
      !IsAligned(d.offset_bytes, kSectorBytes) ||
      d.offset_bytes + d.length_bytes < d.offset_bytes) {
    return Malformed(kType, what + "of " + std::to_string(d.length_bytes) + " bytes at " +
                                std::to_string(d.offset_bytes) +
                                " is not a non-empty range in whole 512-byte sectors");
  }
  if (d.HasPayloadData() && d.length_bytes > kDataBytesMax) {
    return Malformed(kType, what + "of " + std::to_string(d.length_bytes) +
                                " bytes is over the limit of " + std::to_string(kDataBytesMax));
  }
  if (payload_bytes != d.PayloadBytes()) {
    return Malformed(kType, what + "of " + std::to_string(d.length_bytes) +
                                " bytes needs a payload of " + std::to_string(d.PayloadBytes()) +
                                " bytes, the frame has " + std::to_string(payload_bytes));
  }
  return d;
}

Result<Data> Data::Decode(std::span<const uint8_t> payload) {
  if (payload.size() < kHeadBytes) {
    return Malformed(kType, "payload of " + std::to_string(payload.size()) +
                                " bytes is shorter than the " + std::to_string(kHeadBytes) +
                                "-byte head");
  }
  return DecodeHead(payload.first(kHeadBytes), static_cast<uint32_t>(payload.size()));
}

std::array<uint8_t, kFrameHeaderBytes + 8> RecvAck::Encode() const {
  return EncodeU64<RecvAck>(seq);
}
std::array<uint8_t, kFrameHeaderBytes + 8> Flush::Encode() const { return EncodeU64<Flush>(seq); }
std::array<uint8_t, kFrameHeaderBytes + 8> Ping::Encode() const { return EncodeU64<Ping>(token); }
std::array<uint8_t, kFrameHeaderBytes + 8> PingAck::Encode() const {
  return EncodeU64<PingAck>(token);
}
std::array<uint8_t, kFrameHeaderBytes + 12> WriteAck::Encode() const {
  return EncodeU64I32<WriteAck>(seq, error);
}
std::array<uint8_t, kFrameHeaderBytes + 12> FlushAck::Encode() const {
  return EncodeU64I32<FlushAck>(seq, error);
}

std::array<uint8_t, kFrameHeaderBytes + ReadRequest::kBytes> ReadRequest::Encode() const {
  REPLD_CHECK(length_bytes > 0 && length_bytes <= kDataBytesMax &&
              IsAligned(length_bytes, kSectorBytes) && IsAligned(offset_bytes, kSectorBytes) &&
              offset_bytes + length_bytes > offset_bytes);
  std::array<uint8_t, kBytes> p{};
  PutU64(p.data(), seq);
  PutU64(p.data() + 8, offset_bytes);
  PutU32(p.data() + 16, length_bytes);
  PutU32(p.data() + 20, 0);
  return FrameOf(kType, p);
}

Result<ReadRequest> ReadRequest::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  ReadRequest r{GetU64(p.data()), GetU64(p.data() + 8), GetU32(p.data() + 16)};
  const uint32_t flags = GetU32(p.data() + 20);
  const std::string what = "read " + std::to_string(r.seq) + " ";
  if (flags != 0) return Malformed(kType, what + "has unknown flags " + Hex(flags));
  if (r.length_bytes == 0 || r.length_bytes > kDataBytesMax ||
      !IsAligned(r.length_bytes, kSectorBytes) || !IsAligned(r.offset_bytes, kSectorBytes) ||
      r.offset_bytes + r.length_bytes < r.offset_bytes) {
    return Malformed(kType, what + "of " + std::to_string(r.length_bytes) + " bytes at " +
                                std::to_string(r.offset_bytes) + " is not a range of 1 to " +
                                std::to_string(kDataBytesMax / 512) + " whole 512-byte sectors");
  }
  return r;
}

std::array<uint8_t, kFrameHeaderBytes + 12> ReadError::Encode() const {
  REPLD_CHECK(error > 0);
  return EncodeU64I32<ReadError>(seq, error);
}

Result<ReadError> ReadError::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  const ReadError e{GetU64(p.data()), static_cast<int32_t>(GetU32(p.data() + 8))};
  if (Status s = CheckAckError(kType, e.error); !s.ok()) return s;
  if (e.error == 0)
    return Malformed(kType, "read " + std::to_string(e.seq) + " failed with error 0");
  return e;
}

std::array<uint8_t, kFrameHeaderBytes + 8> PromoteRequest::Encode() const {
  return EncodeU64<PromoteRequest>(token);
}

Result<PromoteRequest> PromoteRequest::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  return PromoteRequest{GetU64(p.data())};
}

std::vector<uint8_t> PromoteReply::Encode() const {
  std::vector<uint8_t> p = WithText(kBytesMin, reason);
  PutU64(p.data(), token);
  PutU32(p.data() + 8, granted ? 1 : 0);
  return EncodeFrame(kType, p);
}

Result<PromoteReply> PromoteReply::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckPayloadBounds(kType, p, kBytesMin, kBytesMax); !s.ok()) return s;
  PromoteReply r;
  r.token = GetU64(p.data());
  const uint32_t granted = GetU32(p.data() + 8);
  if (granted > 1)
    return Malformed(kType, "granted is " + std::to_string(granted) + ", not 0 or 1");
  r.granted = granted == 1;
  Result<std::string> reason = TextOf(kType, p, kBytesMin, "reason");
  if (!reason.ok()) return reason.status();
  r.reason = std::move(reason).value();
  return r;
}

Result<RecvAck> RecvAck::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  return RecvAck{GetU64(p.data())};
}
Result<Flush> Flush::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  return Flush{GetU64(p.data())};
}
Result<Ping> Ping::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  return Ping{GetU64(p.data())};
}
Result<PingAck> PingAck::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  return PingAck{GetU64(p.data())};
}
Result<WriteAck> WriteAck::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  const WriteAck a{GetU64(p.data()), static_cast<int32_t>(GetU32(p.data() + 8))};
  if (Status s = CheckAckError(kType, a.error); !s.ok()) return s;
  return a;
}
Result<FlushAck> FlushAck::Decode(std::span<const uint8_t> p) {
  if (Status s = CheckExactBytes(kType, p, kBytes); !s.ok()) return s;
  const FlushAck a{GetU64(p.data()), static_cast<int32_t>(GetU32(p.data() + 8))};
  if (Status s = CheckAckError(kType, a.error); !s.ok()) return s;
  return a;
}

}  // namespace repld::peer
