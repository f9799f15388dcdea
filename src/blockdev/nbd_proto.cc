#include "blockdev/nbd_proto.h"

namespace repld::nbd {

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void PutU32(uint8_t* p, uint32_t v) {
  PutU16(p, static_cast<uint16_t>(v >> 16));
  PutU16(p + 2, static_cast<uint16_t>(v));
}
void PutU64(uint8_t* p, uint64_t v) {
  PutU32(p, static_cast<uint32_t>(v >> 32));
  PutU32(p + 4, static_cast<uint32_t>(v));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t GetU32(const uint8_t* p) {
  return (static_cast<uint32_t>(GetU16(p)) << 16) | GetU16(p + 2);
}
uint64_t GetU64(const uint8_t* p) {
  return (static_cast<uint64_t>(GetU32(p)) << 32) | GetU32(p + 4);
}

OptionHeader DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderBytes> b) {
  return {GetU64(b.data()), GetU32(b.data() + 8), GetU32(b.data() + 12)};
}

std::vector<uint8_t> EncodeOptionReply(uint32_t option, uint32_t reply_type,
                                       std::span<const uint8_t> payload) {
  std::vector<uint8_t> out(kOptionReplyHeaderBytes + payload.size());
  PutU64(out.data(), kMagicOptReply);
  PutU32(out.data() + 8, option);
  PutU32(out.data() + 12, reply_type);
  PutU32(out.data() + 16, static_cast<uint32_t>(payload.size()));
  std::copy(payload.begin(), payload.end(), out.begin() + kOptionReplyHeaderBytes);
  return out;
}

std::optional<InfoRequest> DecodeInfoRequest(std::span<const uint8_t> payload) {
  // u32 name length, name, u16 count, count x u16 info type.
  if (payload.size() < 6) return std::nullopt;
  const uint32_t name_bytes = GetU32(payload.data());
  if (name_bytes > kStringBytesMax || payload.size() < 4ULL + name_bytes + 2) return std::nullopt;
  InfoRequest request;
  request.export_name.assign(reinterpret_cast<const char*>(payload.data() + 4), name_bytes);
  const size_t count_at = 4 + name_bytes;
  const uint16_t count = GetU16(payload.data() + count_at);
  if (payload.size() != count_at + 2 + 2ULL * count) return std::nullopt;
  for (uint16_t i = 0; i < count; ++i) {
    request.info_types.push_back(GetU16(payload.data() + count_at + 2 + 2 * i));
  }
  return request;
}

std::vector<uint8_t> EncodeInfoExport(uint64_t size_bytes, uint16_t transmission_flags) {
  std::vector<uint8_t> out(12);
  PutU16(out.data(), kInfoExport);
  PutU64(out.data() + 2, size_bytes);
  PutU16(out.data() + 10, transmission_flags);
  return out;
}

std::vector<uint8_t> EncodeInfoBlockSize(uint32_t minimum, uint32_t preferred, uint32_t maximum) {
  std::vector<uint8_t> out(14);
  PutU16(out.data(), kInfoBlockSize);
  PutU32(out.data() + 2, minimum);
  PutU32(out.data() + 6, preferred);
  PutU32(out.data() + 10, maximum);
  return out;
}

std::vector<uint8_t> EncodeInfoName(std::string_view name) {
  std::vector<uint8_t> out(2 + name.size());
  PutU16(out.data(), kInfoName);
  std::copy(name.begin(), name.end(), out.begin() + 2);
  return out;
}

std::vector<uint8_t> EncodeServerListEntry(std::string_view name) {
  std::vector<uint8_t> out(4 + name.size());
  PutU32(out.data(), static_cast<uint32_t>(name.size()));
  std::copy(name.begin(), name.end(), out.begin() + 4);
  return out;
}

Request DecodeRequest(std::span<const uint8_t, kRequestBytes> b) {
  return {GetU32(b.data()),     GetU16(b.data() + 4),  GetU16(b.data() + 6),
          GetU64(b.data() + 8), GetU64(b.data() + 16), GetU32(b.data() + 24)};
}

void EncodeRequest(const Request& r, std::span<uint8_t, kRequestBytes> out) {
  PutU32(out.data(), r.magic);
  PutU16(out.data() + 4, r.flags);
  PutU16(out.data() + 6, r.type);
  PutU64(out.data() + 8, r.cookie);
  PutU64(out.data() + 16, r.offset_bytes);
  PutU32(out.data() + 24, r.length_bytes);
}

void EncodeSimpleReply(uint32_t error, uint64_t cookie, std::span<uint8_t, kSimpleReplyBytes> out) {
  PutU32(out.data(), kMagicSimpleReply);
  PutU32(out.data() + 4, error);
  PutU64(out.data() + 8, cookie);
}

void EncodeStructuredReplyHeader(uint16_t flags, uint16_t type, uint64_t cookie,
                                 uint32_t length_bytes,
                                 std::span<uint8_t, kStructuredReplyHeaderBytes> out) {
  PutU32(out.data(), kMagicStructuredReply);
  PutU16(out.data() + 4, flags);
  PutU16(out.data() + 6, type);
  PutU64(out.data() + 8, cookie);
  PutU32(out.data() + 16, length_bytes);
}

std::string_view CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return "READ";
    case kCmdWrite:
      return "WRITE";
    case kCmdDisc:
      return "DISC";
    case kCmdFlush:
      return "FLUSH";
    case kCmdTrim:
      return "TRIM";
    case kCmdCache:
      return "CACHE";
    case kCmdWriteZeroes:
      return "WRITE_ZEROES";
    case kCmdBlockStatus:
      return "BLOCK_STATUS";
    default:
      return "UNKNOWN";
  }
}

std::string_view OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName:
      return "EXPORT_NAME";
    case kOptAbort:
      return "ABORT";
    case kOptList:
      return "LIST";
    case kOptStartTls:
      return "STARTTLS";
    case kOptInfo:
      return "INFO";
    case kOptGo:
      return "GO";
    case kOptStructuredReply:
      return "STRUCTURED_REPLY";
    case kOptListMetaContext:
      return "LIST_META_CONTEXT";
    case kOptSetMetaContext:
      return "SET_META_CONTEXT";
    case kOptExtendedHeaders:
      return "EXTENDED_HEADERS";
    default:
      return "UNKNOWN";
  }
}

}  // namespace repld::nbd
