#include "blockdev/nbd_proto.h"

#include <gtest/gtest.h>

#include <array>

namespace repld::nbd {
namespace {

TEST(NbdProto, MagicsAreTheProtocolsBytes) {
  std::array<uint8_t, 8> b{};
  PutU64(b.data(), kMagicNbd);
  EXPECT_EQ(std::string(b.begin(), b.end()), "NBDMAGIC");
  PutU64(b.data(), kMagicIHaveOpt);
  EXPECT_EQ(std::string(b.begin(), b.end()), "IHAVEOPT");
}

TEST(NbdProto, BigEndianRoundTrip) {
  std::array<uint8_t, 8> b{};
  PutU64(b.data(), 0x0102030405060708ULL);
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[7], 0x08);
  EXPECT_EQ(GetU64(b.data()), 0x0102030405060708ULL);
  PutU32(b.data(), 0xdeadbeef);
  EXPECT_EQ(GetU32(b.data()), 0xdeadbeefu);
  PutU16(b.data(), 0xbeef);
  EXPECT_EQ(GetU16(b.data()), 0xbeef);
}

TEST(NbdProto, RequestRoundTripAndLayout) {
  const Request r{kMagicRequest, kCmdFlagFua, kCmdWrite, 0x1122334455667788ULL, 1 << 20, 4096};
  std::array<uint8_t, kRequestBytes> b{};
  EncodeRequest(r, b);
  // magic(4) flags(2) type(2) cookie(8) offset(8) length(4)
  EXPECT_EQ(GetU32(b.data()), kMagicRequest);
  EXPECT_EQ(GetU16(b.data() + 4), kCmdFlagFua);
  EXPECT_EQ(GetU16(b.data() + 6), kCmdWrite);
  EXPECT_EQ(GetU64(b.data() + 8), 0x1122334455667788ULL);
  const Request d = DecodeRequest(b);
  EXPECT_EQ(d.cookie, r.cookie);
  EXPECT_EQ(d.offset_bytes, r.offset_bytes);
  EXPECT_EQ(d.length_bytes, r.length_bytes);
  EXPECT_EQ(d.type, r.type);
  EXPECT_EQ(d.flags, r.flags);
}

TEST(NbdProto, SimpleAndStructuredReplies) {
  std::array<uint8_t, kSimpleReplyBytes> s{};
  EncodeSimpleReply(kEinval, 42, s);
  EXPECT_EQ(GetU32(s.data()), kMagicSimpleReply);
  EXPECT_EQ(GetU32(s.data() + 4), kEinval);
  EXPECT_EQ(GetU64(s.data() + 8), 42u);
  std::array<uint8_t, kStructuredReplyHeaderBytes> h{};
  EncodeStructuredReplyHeader(kReplyFlagDone, kReplyTypeOffsetData, 7, 4104, h);
  EXPECT_EQ(GetU32(h.data()), kMagicStructuredReply);
  EXPECT_EQ(GetU16(h.data() + 4), kReplyFlagDone);
  EXPECT_EQ(GetU16(h.data() + 6), kReplyTypeOffsetData);
  EXPECT_EQ(GetU64(h.data() + 8), 7u);
  EXPECT_EQ(GetU32(h.data() + 16), 4104u);
}

TEST(NbdProto, OptionReplyCarriesPayload) {
  const std::array<uint8_t, 3> payload{1, 2, 3};
  const auto r = EncodeOptionReply(kOptGo, kRepInfo, payload);
  ASSERT_EQ(r.size(), kOptionReplyHeaderBytes + 3);
  EXPECT_EQ(GetU64(r.data()), kMagicOptReply);
  EXPECT_EQ(GetU32(r.data() + 8), static_cast<uint32_t>(kOptGo));
  EXPECT_EQ(GetU32(r.data() + 12), kRepInfo);
  EXPECT_EQ(GetU32(r.data() + 16), 3u);
  EXPECT_EQ(r[20], 1);
}

std::vector<uint8_t> InfoPayload(std::string_view name, std::vector<uint16_t> types) {
  std::vector<uint8_t> p(4 + name.size() + 2 + 2 * types.size());
  PutU32(p.data(), static_cast<uint32_t>(name.size()));
  std::copy(name.begin(), name.end(), p.begin() + 4);
  PutU16(p.data() + 4 + name.size(), static_cast<uint16_t>(types.size()));
  for (size_t i = 0; i < types.size(); ++i) PutU16(p.data() + 6 + name.size() + 2 * i, types[i]);
  return p;
}

TEST(NbdProto, InfoRequestDecodes) {
  const auto p = InfoPayload("www", {kInfoBlockSize, kInfoName});
  const auto r = DecodeInfoRequest(p);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->export_name, "www");
  ASSERT_EQ(r->info_types.size(), 2u);
  EXPECT_EQ(r->info_types[0], kInfoBlockSize);
}

TEST(NbdProto, InfoRequestRejectsBadLengths) {
  auto p = InfoPayload("www", {kInfoBlockSize});
  EXPECT_FALSE(DecodeInfoRequest(std::span(p).first(p.size() - 1)));  // truncated
  p.push_back(0);
  EXPECT_FALSE(DecodeInfoRequest(p));  // trailing garbage
  std::vector<uint8_t> huge(6);
  PutU32(huge.data(), 0xffffffff);  // name longer than the payload
  EXPECT_FALSE(DecodeInfoRequest(huge));
  EXPECT_FALSE(DecodeInfoRequest({}));
}

TEST(NbdProto, InfoEncodings) {
  const auto e = EncodeInfoExport(1ULL << 30, kTxHasFlags | kTxSendFlush);
  ASSERT_EQ(e.size(), 12u);
  EXPECT_EQ(GetU16(e.data()), kInfoExport);
  EXPECT_EQ(GetU64(e.data() + 2), 1ULL << 30);
  EXPECT_EQ(GetU16(e.data() + 10), kTxHasFlags | kTxSendFlush);
  const auto b = EncodeInfoBlockSize(512, 4096, 32 << 20);
  ASSERT_EQ(b.size(), 14u);
  EXPECT_EQ(GetU32(b.data() + 2), 512u);
  EXPECT_EQ(GetU32(b.data() + 10), 32u << 20);
  const auto l = EncodeServerListEntry("www");
  EXPECT_EQ(GetU32(l.data()), 3u);
  EXPECT_EQ(l.size(), 7u);
}

}  // namespace
}  // namespace repld::nbd
