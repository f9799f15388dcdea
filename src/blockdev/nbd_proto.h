// NBD wire protocol: constants and the codec for the fixed newstyle handshake and the
// transmission phase. Values are the protocol's facts (NetworkBlockDevice/nbd doc/proto.md),
// written here in our own words. Everything on the wire is big-endian. No I/O in this file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace repld::nbd {

// Handshake.
inline constexpr uint64_t kMagicNbd = 0x4e42444d41474943ULL;       // "NBDMAGIC"
inline constexpr uint64_t kMagicIHaveOpt = 0x49484156454f5054ULL;  // "IHAVEOPT"
inline constexpr uint64_t kMagicOptReply = 0x0003e889045565a9ULL;

inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1u << 1;

enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,
};

inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepFlagError = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepFlagError | 1;
inline constexpr uint32_t kRepErrPolicy = kRepFlagError | 2;
inline constexpr uint32_t kRepErrInvalid = kRepFlagError | 3;
inline constexpr uint32_t kRepErrPlatform = kRepFlagError | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepFlagError | 5;
inline constexpr uint32_t kRepErrUnknown = kRepFlagError | 6;
inline constexpr uint32_t kRepErrShutdown = kRepFlagError | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepFlagError | 8;
inline constexpr uint32_t kRepErrTooBig = kRepFlagError | 9;

inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags (per export).
inline constexpr uint16_t kTxHasFlags = 1u << 0;
inline constexpr uint16_t kTxReadOnly = 1u << 1;
inline constexpr uint16_t kTxSendFlush = 1u << 2;
inline constexpr uint16_t kTxSendFua = 1u << 3;
inline constexpr uint16_t kTxRotational = 1u << 4;
inline constexpr uint16_t kTxSendTrim = 1u << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kTxSendDf = 1u << 7;
inline constexpr uint16_t kTxCanMultiConn = 1u << 8;

// Transmission phase.
inline constexpr uint32_t kMagicRequest = 0x25609513;
inline constexpr uint32_t kMagicSimpleReply = 0x67446698;
inline constexpr uint32_t kMagicStructuredReply = 0x668e33ef;

inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};

inline constexpr uint16_t kReplyFlagDone = 1u << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeError = (1u << 15) | 1;

// Error values carried in replies (not the host's errno values, although they coincide on Linux).
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// Sizes of fixed-size messages.
inline constexpr size_t kServerGreetingBytes = 18;  // magic, IHAVEOPT, handshake flags
inline constexpr size_t kOptionHeaderBytes = 16;    // IHAVEOPT, option, length
inline constexpr size_t kOptionReplyHeaderBytes = 20;
inline constexpr size_t kRequestBytes = 28;
inline constexpr size_t kSimpleReplyBytes = 16;
inline constexpr size_t kStructuredReplyHeaderBytes = 20;
inline constexpr size_t kExportNameReplyBytes =
    10;  // size, flags (+124 zero bytes unless NO_ZEROES)
inline constexpr uint32_t kOptionDataBytesMax = 64 * 1024;  // our limit on option payloads
inline constexpr size_t kStringBytesMax = 4096;             // the spec's limit on strings

// Big-endian field access.
void PutU16(uint8_t* p, uint16_t v);
void PutU32(uint8_t* p, uint32_t v);
void PutU64(uint8_t* p, uint64_t v);
uint16_t GetU16(const uint8_t* p);
uint32_t GetU32(const uint8_t* p);
uint64_t GetU64(const uint8_t* p);

struct OptionHeader {
  uint64_t magic;
  uint32_t option;
  uint32_t length_bytes;
};
OptionHeader DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderBytes> bytes);

// Builds an option reply (header + payload) ready to send.
std::vector<uint8_t> EncodeOptionReply(uint32_t option, uint32_t reply_type,
                                       std::span<const uint8_t> payload = {});

// Payload of NBD_OPT_INFO / NBD_OPT_GO: export name and the information types requested.
struct InfoRequest {
  std::string export_name;
  std::vector<uint16_t> info_types;
};
// Returns nullopt if the payload is malformed (lengths that do not add up).
std::optional<InfoRequest> DecodeInfoRequest(std::span<const uint8_t> payload);

std::vector<uint8_t> EncodeInfoExport(uint64_t size_bytes, uint16_t transmission_flags);
std::vector<uint8_t> EncodeInfoBlockSize(uint32_t minimum, uint32_t preferred, uint32_t maximum);
std::vector<uint8_t> EncodeInfoName(std::string_view name);
// Payload of an NBD_REP_SERVER reply to NBD_OPT_LIST.
std::vector<uint8_t> EncodeServerListEntry(std::string_view name);

struct Request {
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset_bytes;
  uint32_t length_bytes;
};
Request DecodeRequest(std::span<const uint8_t, kRequestBytes> bytes);
void EncodeRequest(const Request& request, std::span<uint8_t, kRequestBytes> out);

void EncodeSimpleReply(uint32_t error, uint64_t cookie, std::span<uint8_t, kSimpleReplyBytes> out);
void EncodeStructuredReplyHeader(uint16_t flags, uint16_t type, uint64_t cookie,
                                 uint32_t length_bytes,
                                 std::span<uint8_t, kStructuredReplyHeaderBytes> out);

// Names for logs.
std::string_view CommandName(uint16_t type);
std::string_view OptionName(uint32_t option);

}  // namespace repld::nbd
