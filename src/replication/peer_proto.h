// The wire protocol between two repld peers: frames, messages and the handshake's Hello check.
// Codec and logic only: no sockets, no clock, no randomness (docs/peer-protocol.md has every
// layout with offsets). Everything on the wire is little-endian, written byte by byte.
//
// A frame is a 24-byte header and a payload. The header carries its own CRC and the payload's
// CRC, so a receiver trusts the payload length before it reads the payload, and a data payload
// (up to 32 MiB) is checksummed where it lies: the sender computes the CRC over its own buffer
// and sends header and data with one gathered write; the receiver reads the data into its own
// buffer and checks the CRC there. Nothing copies it into or out of a frame.
//
// Receiving, in order:
//   1. read kFrameHeaderBytes, DecodeFrameHeader()       (magic, header CRC, type, length bounds)
//   2. read header.payload_bytes into a buffer
//        (a Data frame: read its kDataHeadBytes first, Data::DecodeHead(), then the data wherever
//         it belongs)
//   3. CheckPayloadCrc(header, Crc32c(payload))           (or the CRC chained over the pieces)
//   4. T::Decode(payload)                                  (exact lengths, limits, enum ranges)
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/units.h"
#include "replication/states.h"

namespace repld::peer {

// ---- Frame ----------------------------------------------------------------------------------

inline constexpr uint32_t kFrameMagic = 0x314C5052;  // bytes "RPL1" on the wire
inline constexpr size_t kFrameHeaderBytes = 24;
// The largest payload: a Data head and 32 MiB of data, with room to spare.
inline constexpr uint32_t kPeerMaxPayload = 32 * kMiB + 4 * kKiB;
inline constexpr uint32_t kDataBytesMax = 32 * kMiB;  // data in one replicated write
// Frame flags: none are defined in version 1; a set bit is rejected.
inline constexpr uint16_t kFrameFlagsKnown = 0;

// Protocol versions this build speaks (see "Versioning" in docs/peer-protocol.md).
inline constexpr uint16_t kProtocolVersionMin = 1;
inline constexpr uint16_t kProtocolVersionMax = 1;

// Message types. Numbers are grouped so later milestones add types without renumbering:
// 0x01..0x0F handshake and control, 0x10..0x1F replicated writes, 0x20..0x2F resync, 0x30..0x3F
// quorum and votes.
// A decoder rejects every number it does not know; a sender sends a new type only when the
// negotiated version or an agreed feature bit says the peer knows it.
enum class MessageType : uint16_t {
  kHello = 0x01,
  kAuth = 0x02,
  kState = 0x03,
  kError = 0x04,
  kPing = 0x05,
  kPingAck = 0x06,
  kPromoteRequest = 0x07,
  kPromoteReply = 0x08,
  kData = 0x10,
  kRecvAck = 0x11,
  kWriteAck = 0x12,
  kFlush = 0x13,
  kFlushAck = 0x14,
  kOutOfSync = 0x20,
  kCsums = 0x21,
  kCsumReply = 0x22,
  kReadRequest = 0x23,
  kReadError = 0x24,
  // Quorum and votes (replication/quorum_proto.h; kFeatureQuorum).
  kQuorumPing = 0x30,
  kQuorumPong = 0x31,
  kVoteRequest = 0x32,
  kVoteReply = 0x33,
  kOutdateRequest = 0x34,
  kOutdateReply = 0x35,
};
std::string_view MessageTypeName(MessageType type);

struct FrameHeader {
  MessageType type = MessageType::kPing;
  uint16_t flags = 0;
  uint32_t payload_bytes = 0;
  uint32_t payload_crc = 0;  // CRC32C of the payload; 0 for an empty payload
};
using FrameHeaderBytes = std::array<uint8_t, kFrameHeaderBytes>;

// `payload_crc` is Crc32c() of the payload, chained over its pieces if it is in several.
// Preconditions (checked): payload_bytes within the type's bounds, flags known.
FrameHeaderBytes EncodeFrameHeader(MessageType type, uint16_t flags, uint32_t payload_bytes,
                                   uint32_t payload_crc);
// Checks, in this order: size, magic, header CRC, reserved bytes, flags, type, payload length
// (kPeerMaxPayload and the type's own bounds). The payload is not read: see CheckPayloadCrc.
Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> bytes);
// `computed_crc` is what the receiver computed over the payload it read.
Status CheckPayloadCrc(const FrameHeader& header, uint32_t computed_crc);

// A whole small frame (header + payload) in one buffer: the handshake and tests use this. The
// data path does not (see Data).
std::vector<uint8_t> EncodeFrame(MessageType type, std::span<const uint8_t> payload);
struct FrameView {
  FrameHeader header;
  std::span<const uint8_t> payload;  // points into the decoded buffer
};
// `frame` must hold exactly one frame. Checks the header, the length and the payload CRC.
Result<FrameView> DecodeFrame(std::span<const uint8_t> frame);

// ---- Handshake messages -----------------------------------------------------------------------

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kAuthResponseBytes = 32;  // HMAC-SHA256
using Nonce = std::array<uint8_t, kNonceBytes>;
using AuthResponse = std::array<uint8_t, kAuthResponseBytes>;

// Names on the wire follow the config's rule: 1 to 64 of A-Z a-z 0-9 _ - .
inline constexpr size_t kNameBytesMax = 64;
bool IsValidWireName(std::string_view name);

// Feature bits (Hello.features). The agreed set is the AND of both sides' bits; unknown bits
// are ignored, which is what lets a newer peer offer more.
inline constexpr uint64_t kFeatureTrim = 1ull << 0;    // Data may carry kDataFlagTrim
inline constexpr uint64_t kFeatureZeroes = 1ull << 1;  // Data may carry kDataFlagZeroes
// Csums digests are CRC-64/XZ of each block, not the first 8 bytes of its SHA-256.
inline constexpr uint64_t kFeatureCrc64Digests = 1ull << 2;
// Promotion while connected is agreed with the peer (PromoteRequest / PromoteReply) first.
inline constexpr uint64_t kFeaturePromoteRequests = 1ull << 3;
// Quorum, votes and fencing (docs/quorum.md): the 0x30..0x35 frames. Not offered yet: the
// daemon does not carry them until the per-peer link lands.
inline constexpr uint64_t kFeatureQuorum = 1ull << 4;
inline constexpr uint64_t kFeaturesSupported =
    kFeatureTrim | kFeatureZeroes | kFeatureCrc64Digests | kFeaturePromoteRequests;

// The first message each side sends. Its layout is frozen for every protocol version: it is
// what two versions must both understand to agree on one.
struct Hello {
  static constexpr MessageType kType = MessageType::kHello;
  static constexpr size_t kFixedBytes = 56;
  static constexpr size_t kBytesMin = kFixedBytes + 3 * 2;
  static constexpr size_t kBytesMax = kFixedBytes + 3 * (1 + kNameBytesMax);

  uint16_t version_min = kProtocolVersionMin;
  uint16_t version_max = kProtocolVersionMax;
  uint64_t features = 0;
  Protocol protocol = Protocol::kC;  // on the wire as the ASCII letter 'A', 'B' or 'C'
  uint64_t data_bytes = 0;           // usable size of the replicated data; 0: diskless
  Nonce nonce{};                     // the sender's challenge
  std::string resource;
  std::string node;       // the sender's node name
  std::string peer_node;  // the node name the sender expects to be talking to

  // A whole frame. Precondition (checked): names valid, version_min <= version_max.
  std::vector<uint8_t> Encode() const;
  static Result<Hello> Decode(std::span<const uint8_t> payload);
};

// The answer to the peer's nonce: see peer_auth.h for how it is computed.
struct Auth {
  static constexpr MessageType kType = MessageType::kAuth;
  static constexpr size_t kBytes = kAuthResponseBytes;
  AuthResponse response{};

  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<Auth> Decode(std::span<const uint8_t> payload);
};

inline constexpr uint32_t kStateFlagCrashedPrimary = 1u << 0;  // was Primary, did not stop cleanly
// The sender is SyncSource and the peer has confirmed the last resync block (PeerState's
// resync_done): the SyncTarget may now call its data UpToDate.
inline constexpr uint32_t kStateFlagResyncDone = 1u << 1;
// The operator ran 'replctl connect --discard-my-data' on the sender (a split brain found on this
// connection drops the sender's changes).
inline constexpr uint32_t kStateFlagDiscardMyData = 1u << 2;
// The sender's bitmap id was taken when it lost the peer as Primary (discard-younger-primary).
inline constexpr uint32_t kStateFlagPrimaryAtSplit = 1u << 3;
inline constexpr uint32_t kStateFlagsKnown = kStateFlagCrashedPrimary | kStateFlagResyncDone |
                                             kStateFlagDiscardMyData | kStateFlagPrimaryAtSplit;

// Sent by both sides after authentication, and again whenever role or disk state changes.
struct State {
  static constexpr MessageType kType = MessageType::kState;
  static constexpr size_t kBytes = 56;

  Role role = Role::kSecondary;
  DiskState disk = DiskState::kDiskless;
  uint32_t flags = 0;
  uint64_t data_bytes = 0;
  uint64_t current_uuid = 0;  // generation identifiers (DRBD's current, bitmap, history)
  uint64_t bitmap_uuid = 0;
  std::array<uint64_t, 2> history_uuids{};
  uint64_t out_of_sync_bytes = 0;  // never more than data_bytes

  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<State> Decode(std::span<const uint8_t> payload);
};

// Error codes carried by Error. Decoding accepts any value: a refusal from a newer peer must
// still reach the log with its text.
enum class ErrorCode : uint32_t {
  kUnspecified = 0,
  kProtocolVersion = 1,
  kResource = 2,
  kNodeName = 3,
  kReplicationProtocol = 4,
  kDataSize = 5,
  kAuthFailed = 6,
  kProtocolViolation = 7,  // malformed or unexpected message
  kLoopback = 8,           // the connection leads back to the sender
  kShutdown = 9,
};
std::string_view ErrorCodeName(ErrorCode code);

inline constexpr size_t kErrorTextBytesMax = 512;

// Sent before closing on a refusal, so both nodes log the same reason.
struct Error {
  static constexpr MessageType kType = MessageType::kError;
  static constexpr size_t kBytesMin = 6;
  static constexpr size_t kBytesMax = 6 + kErrorTextBytesMax;

  ErrorCode code = ErrorCode::kUnspecified;
  std::string text;  // printable; Encode cuts it to kErrorTextBytesMax, control chars become '?'

  std::vector<uint8_t> Encode() const;
  // Rejects control characters: the text goes into the peer's log.
  static Result<Error> Decode(std::span<const uint8_t> payload);
};
// "peer 'alice' refused the connection (resource): <text>", for the receiver's log.
std::string DescribeRefusal(const Error& error, std::string_view peer_node);

// ---- Replication messages ---------------------------------------------------------------------

inline constexpr uint32_t kDataFlagFua = 1u << 0;     // durable on the peer before WriteAck
inline constexpr uint32_t kDataFlagZeroes = 1u << 1;  // the range reads as zeroes; no data
inline constexpr uint32_t kDataFlagTrim = 1u << 2;    // discard the range; no data
inline constexpr uint32_t kDataFlagResync = 1u << 3;  // resync traffic, not an application write
// The answer to ReadRequest `seq` (fast failback): the peer's data, not a write. Alone: no other
// flag goes with it.
inline constexpr uint32_t kDataFlagReadReply = 1u << 4;
inline constexpr uint32_t kDataFlagsKnown =
    kDataFlagFua | kDataFlagZeroes | kDataFlagTrim | kDataFlagResync | kDataFlagReadReply;

// A replicated write. Payload: a 24-byte head, then length_bytes of data for a plain write, or
// nothing for ZEROES and TRIM. Offset and length are multiples of 512 bytes.
struct Data {
  static constexpr MessageType kType = MessageType::kData;
  static constexpr size_t kHeadBytes = 24;

  uint64_t seq = 0;
  uint64_t offset_bytes = 0;
  uint32_t length_bytes = 0;
  uint32_t flags = 0;

  bool HasPayloadData() const { return (flags & (kDataFlagZeroes | kDataFlagTrim)) == 0; }
  uint32_t PayloadBytes() const {
    return static_cast<uint32_t>(kHeadBytes) + (HasPayloadData() ? length_bytes : 0);
  }

  // Frame header and head, with the CRC computed over head and `data` where `data` lies; send
  // these 48 bytes, then `data`. `data` is empty for ZEROES/TRIM, else length_bytes long (both
  // checked, like the ranges Decode checks).
  std::array<uint8_t, kFrameHeaderBytes + kHeadBytes> EncodeHead(
      std::span<const uint8_t> data) const;
  // The same for data in pieces, sent with one gathered write: the CRC is chained over the head
  // and then each piece in order. The pieces add up to length_bytes (none for ZEROES/TRIM).
  std::array<uint8_t, kFrameHeaderBytes + kHeadBytes> EncodeHeadGathered(
      std::span<const iovec> data) const;
  // The head alone, from a frame whose header said `payload_bytes`: for a receiver that reads
  // the data straight into its own buffer. The payload CRC is still the caller's to check.
  static Result<Data> DecodeHead(std::span<const uint8_t> head, uint32_t payload_bytes);
  // A whole payload in one buffer (head + data): the data is payload.subspan(kHeadBytes).
  static Result<Data> Decode(std::span<const uint8_t> payload);
};

// The peer received Data `seq` (protocol B completes on this).
struct RecvAck {
  static constexpr MessageType kType = MessageType::kRecvAck;
  static constexpr size_t kBytes = 8;
  uint64_t seq = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<RecvAck> Decode(std::span<const uint8_t> payload);
};

// Errors carried by acks: 0 or a positive errno value below this.
inline constexpr int32_t kAckErrorMax = 4095;

// The peer wrote Data `seq` to its disk (protocol C completes on this), or failed with `error`.
struct WriteAck {
  static constexpr MessageType kType = MessageType::kWriteAck;
  static constexpr size_t kBytes = 12;
  uint64_t seq = 0;
  int32_t error = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<WriteAck> Decode(std::span<const uint8_t> payload);
};

// A barrier: every Data sent before it must be durable on the peer before FlushAck `seq`.
struct Flush {
  static constexpr MessageType kType = MessageType::kFlush;
  static constexpr size_t kBytes = 8;
  uint64_t seq = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<Flush> Decode(std::span<const uint8_t> payload);
};

struct FlushAck {
  static constexpr MessageType kType = MessageType::kFlushAck;
  static constexpr size_t kBytes = 12;
  uint64_t seq = 0;
  int32_t error = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<FlushAck> Decode(std::span<const uint8_t> payload);
};

// ---- Resync messages ---------------------------------------------------------------------------

// The sync target's bitmap, sent right after a connect that made it the target, as byte runs
// (ascending, not overlapping) in as many frames as it takes; the source starts sending blocks
// after the frame with kOutOfSyncFlagLast. Payload: flags u32, run count u32, then per run
// offset u64 and length u64 (multiples of 512, length > 0).
inline constexpr uint32_t kOutOfSyncFlagLast = 1u << 0;
inline constexpr uint32_t kOutOfSyncFlagsKnown = kOutOfSyncFlagLast;
inline constexpr size_t kOutOfSyncRunsMax = 4096;

struct OutOfSync {
  static constexpr MessageType kType = MessageType::kOutOfSync;
  static constexpr size_t kBytesMin = 8;
  static constexpr size_t kRunBytes = 16;
  static constexpr size_t kBytesMax = kBytesMin + kOutOfSyncRunsMax * kRunBytes;
  struct Run {
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    bool operator==(const Run&) const = default;
  };
  uint32_t flags = 0;
  std::vector<Run> runs;  // at most kOutOfSyncRunsMax (checked)

  std::vector<uint8_t> Encode() const;
  // Checks the count against the length, each run's alignment and that runs ascend without
  // overlapping. Whether they fit the data is the receiver's to check (it knows the size).
  static Result<OutOfSync> Decode(std::span<const uint8_t> payload);
};

// A block's digests (one u64 per 4 KiB, replication/block_digest.h) instead of its data: the
// peer compares them with its own data and answers with CsumReply. Payload: seq u64, offset
// u64, length u32, flags u32, then ceil(length / 4096) digests u64.
inline constexpr uint32_t kCsumsFlagVerify = 1u << 0;  // online verify (else checksum resync)
inline constexpr uint32_t kCsumsFlagsKnown = kCsumsFlagVerify;
inline constexpr uint32_t kCsumsBytesMax = 4 * kMiB;  // the largest block one frame covers
// A sender has at most this many Csums unanswered; a receiver keeps twice as many waiting for
// its disk (old connections' among them) and drops a peer that sends more.
inline constexpr uint32_t kCsumsInFlightMax = 16;

struct Csums {
  static constexpr MessageType kType = MessageType::kCsums;
  static constexpr size_t kHeadBytes = 24;
  static constexpr size_t kBytesMax = kHeadBytes + (kCsumsBytesMax / 4096) * 8;
  uint64_t seq = 0;
  uint64_t offset_bytes = 0;
  uint32_t length_bytes = 0;  // > 0, a multiple of 512, at most kCsumsBytesMax
  uint32_t flags = 0;
  std::vector<uint64_t> digests;  // exactly ceil(length_bytes / 4096) (checked)

  std::vector<uint8_t> Encode() const;
  static Result<Csums> Decode(std::span<const uint8_t> payload);
};

// The answer: the 4 KiB blocks of the asked range whose digests differ, as byte runs (ascending,
// inside the range), or an error (errno, as in WriteAck) when the peer could not read.
inline constexpr size_t kCsumReplyRunsMax = kCsumsBytesMax / 4096 / 2 + 1;

struct CsumReply {
  static constexpr MessageType kType = MessageType::kCsumReply;
  static constexpr size_t kHeadBytes = 16;
  static constexpr size_t kBytesMax = kHeadBytes + kCsumReplyRunsMax * 16;
  uint64_t seq = 0;
  int32_t error = 0;
  std::vector<OutOfSync::Run> differing;

  std::vector<uint8_t> Encode() const;
  static Result<CsumReply> Decode(std::span<const uint8_t> payload);
};

// ---- Reads from the peer (fast failback) --------------------------------------------------------

// A Primary whose disk is still a sync target reads the blocks it lacks from its UpToDate peer.
// The peer answers with Data (kDataFlagReadReply, the same seq, offset and length) or ReadError.
// Payload: seq u64, offset u64, length u32, flags u32 (none defined: 0).
// A sender has at most this many unanswered; a receiver drops a peer with more than twice that.
inline constexpr uint32_t kReadsInFlightMax = 32;

struct ReadRequest {
  static constexpr MessageType kType = MessageType::kReadRequest;
  static constexpr size_t kBytes = 24;
  uint64_t seq = 0;
  uint64_t offset_bytes = 0;
  uint32_t length_bytes = 0;  // > 0, whole 512-byte sectors, at most kDataBytesMax
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<ReadRequest> Decode(std::span<const uint8_t> payload);
};

// The peer could not read for ReadRequest `seq`: error is an errno value (1..kAckErrorMax).
struct ReadError {
  static constexpr MessageType kType = MessageType::kReadError;
  static constexpr size_t kBytes = 12;
  uint64_t seq = 0;
  int32_t error = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<ReadError> Decode(std::span<const uint8_t> payload);
};

// ---- Promotion, agreed with the peer (kFeaturePromoteRequests) -------------------------------

// "May I become Primary?": a connected Secondary asks before it promotes. `token` names the
// request (the answer carries it back). Payload: token u64.
struct PromoteRequest {
  static constexpr MessageType kType = MessageType::kPromoteRequest;
  static constexpr size_t kBytes = 8;
  uint64_t token = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<PromoteRequest> Decode(std::span<const uint8_t> payload);
};

// The answer: granted (the sender now counts the asker as Primary and will not promote itself
// until it hears otherwise) or refused, with the reason for the operator. Payload: token u64,
// granted u32 (0 or 1), text length u16, text (printable, at most kErrorTextBytesMax).
struct PromoteReply {
  static constexpr MessageType kType = MessageType::kPromoteReply;
  static constexpr size_t kBytesMin = 14;
  static constexpr size_t kBytesMax = kBytesMin + kErrorTextBytesMax;
  uint64_t token = 0;
  bool granted = false;
  std::string reason;  // why refused; Encode cuts it and replaces control characters

  std::vector<uint8_t> Encode() const;
  static Result<PromoteReply> Decode(std::span<const uint8_t> payload);
};

struct Ping {
  static constexpr MessageType kType = MessageType::kPing;
  static constexpr size_t kBytes = 8;
  uint64_t token = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<Ping> Decode(std::span<const uint8_t> payload);
};

struct PingAck {
  static constexpr MessageType kType = MessageType::kPingAck;
  static constexpr size_t kBytes = 8;
  uint64_t token = 0;
  std::array<uint8_t, kFrameHeaderBytes + kBytes> Encode() const;
  static Result<PingAck> Decode(std::span<const uint8_t> payload);
};

// One whole frame that must be of message M: DecodeFrame, the type, then M::Decode.
template <typename M>
Result<M> DecodeMessage(std::span<const uint8_t> frame) {
  Result<FrameView> view = DecodeFrame(frame);
  if (!view.ok()) return view.status();
  if (view->header.type != M::kType) {
    return Status::Invalid("peer sent " + std::string(MessageTypeName(view->header.type)) +
                           " where " + std::string(MessageTypeName(M::kType)) + " was expected");
  }
  return M::Decode(view->payload);
}

}  // namespace repld::peer
