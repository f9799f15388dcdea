#include "replication/peer_proto.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "replication/crc32c.h"

namespace repld::peer {
namespace {

using ::testing::HasSubstr;

// The test's own little-endian writer, so the layout is checked against an independent reading
// of docs/peer-protocol.md rather than against the codec itself.
void Le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t GetLe(std::span<const uint8_t> b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | b[at + i];
  return v;
}

// A frame built by hand: any type, flags and claimed length, with correct checksums.
std::vector<uint8_t> RawFrame(uint16_t type, std::vector<uint8_t> payload, uint16_t flags = 0,
                              std::optional<uint32_t> claimed_bytes = std::nullopt,
                              uint32_t reserved = 0) {
  std::vector<uint8_t> f;
  Le(f, 0x314C5052, 4);
  Le(f, type, 2);
  Le(f, flags, 2);
  Le(f, claimed_bytes.value_or(static_cast<uint32_t>(payload.size())), 4);
  Le(f, Crc32c(payload), 4);
  Le(f, reserved, 4);
  Le(f, Crc32c(f), 4);
  f.insert(f.end(), payload.begin(), payload.end());
  return f;
}

std::span<const uint8_t> HeaderOf(const std::vector<uint8_t>& f) {
  return std::span(f).first(kFrameHeaderBytes);
}

template <typename M>
M RoundTrip(const M& m) {
  const auto frame = m.Encode();
  Result<M> back = DecodeMessage<M>(std::span<const uint8_t>(frame.data(), frame.size()));
  EXPECT_TRUE(back.ok()) << back.status().message();
  return back.value();
}

Hello SampleHello() {
  Hello h;
  h.version_min = 1;
  h.version_max = 3;
  h.features = 0x8000000000000003ull;
  h.protocol = Protocol::kB;
  h.data_bytes = 10 * kGiB;
  for (size_t i = 0; i < kNonceBytes; ++i) h.nonce[i] = static_cast<uint8_t>(i * 7 + 1);
  h.resource = "mysql";
  h.node = "alice";
  h.peer_node = "bob.example-1_x";
  return h;
}

TEST(PeerProto, FrameHeaderLayoutIsLittleEndianRpl1) {
  const FrameHeaderBytes h = EncodeFrameHeader(MessageType::kPing, 0, 8, 0xA1B2C3D4);
  EXPECT_EQ(std::string(h.begin(), h.begin() + 4), "RPL1");
  EXPECT_EQ(GetLe(h, 4, 2), 0x05u);  // type
  EXPECT_EQ(GetLe(h, 6, 2), 0u);     // flags
  EXPECT_EQ(GetLe(h, 8, 4), 8u);     // payload bytes
  EXPECT_EQ(GetLe(h, 12, 4), 0xA1B2C3D4u);
  EXPECT_EQ(GetLe(h, 16, 4), 0u);  // reserved
  EXPECT_EQ(GetLe(h, 20, 4), Crc32c(std::span(h).first(20)));
  Result<FrameHeader> d = DecodeFrameHeader(h);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->type, MessageType::kPing);
  EXPECT_EQ(d->payload_bytes, 8u);
  EXPECT_EQ(d->payload_crc, 0xA1B2C3D4u);
  // The hand-built frame and the codec agree byte for byte.
  std::vector<uint8_t> payload(8, 0);
  payload[0] = 42;
  const auto ping = Ping{42}.Encode();
  EXPECT_EQ(RawFrame(0x05, payload), std::vector<uint8_t>(ping.begin(), ping.end()));
}

TEST(PeerProto, HelloRoundTrip) {
  const Hello h = SampleHello();
  const Hello d = RoundTrip(h);
  EXPECT_EQ(d.version_min, 1);
  EXPECT_EQ(d.version_max, 3);
  EXPECT_EQ(d.features, h.features);
  EXPECT_EQ(d.protocol, Protocol::kB);
  EXPECT_EQ(d.data_bytes, h.data_bytes);
  EXPECT_EQ(d.nonce, h.nonce);
  EXPECT_EQ(d.resource, "mysql");
  EXPECT_EQ(d.node, "alice");
  EXPECT_EQ(d.peer_node, "bob.example-1_x");
  // The protocol travels as its ASCII letter.
  const std::vector<uint8_t> f = h.Encode();
  EXPECT_EQ(f[kFrameHeaderBytes + 4], 'B');
}

TEST(PeerProto, HelloWithLongestNamesRoundTrips) {
  Hello h = SampleHello();
  h.resource = std::string(kNameBytesMax, 'r');
  h.node = std::string(kNameBytesMax, 'n');
  h.peer_node = std::string(kNameBytesMax, 'p');
  EXPECT_EQ(h.Encode().size(), kFrameHeaderBytes + Hello::kBytesMax);
  EXPECT_EQ(RoundTrip(h).peer_node, h.peer_node);
}

TEST(PeerProto, AuthStateAndSmallMessagesRoundTrip) {
  Auth a;
  for (size_t i = 0; i < a.response.size(); ++i) a.response[i] = static_cast<uint8_t>(255 - i);
  EXPECT_EQ(RoundTrip(a).response, a.response);

  State s;
  s.role = Role::kPrimary;
  s.disk = DiskState::kOutdated;
  s.flags = kStateFlagCrashedPrimary;
  s.data_bytes = 1ull << 40;
  s.current_uuid = 0x1111222233334444ull;
  s.bitmap_uuid = 0x5555666677778888ull;
  s.history_uuids = {0x9999aaaabbbbccccull, 0xddddeeeeffff0001ull};
  s.out_of_sync_bytes = 4096 * 3;
  const State sd = RoundTrip(s);
  EXPECT_EQ(sd.role, Role::kPrimary);
  EXPECT_EQ(sd.disk, DiskState::kOutdated);
  EXPECT_EQ(sd.flags, kStateFlagCrashedPrimary);
  EXPECT_EQ(sd.data_bytes, s.data_bytes);
  EXPECT_EQ(sd.current_uuid, s.current_uuid);
  EXPECT_EQ(sd.bitmap_uuid, s.bitmap_uuid);
  EXPECT_EQ(sd.history_uuids, s.history_uuids);
  EXPECT_EQ(sd.out_of_sync_bytes, s.out_of_sync_bytes);
  for (DiskState d : {DiskState::kDiskless, DiskState::kInconsistent, DiskState::kUpToDate}) {
    s.disk = d;
    EXPECT_EQ(RoundTrip(s).disk, d);
  }

  EXPECT_EQ(RoundTrip(RecvAck{0xfedcba9876543210ull}).seq, 0xfedcba9876543210ull);
  EXPECT_EQ(RoundTrip(Flush{77}).seq, 77u);
  EXPECT_EQ(RoundTrip(Ping{5}).token, 5u);
  EXPECT_EQ(RoundTrip(PingAck{6}).token, 6u);
  const WriteAck w = RoundTrip(WriteAck{9, 5});
  EXPECT_EQ(w.seq, 9u);
  EXPECT_EQ(w.error, 5);
  const FlushAck fa = RoundTrip(FlushAck{10, 0});
  EXPECT_EQ(fa.seq, 10u);
  EXPECT_EQ(fa.error, 0);

  const Error e = RoundTrip(Error{ErrorCode::kDataSize, "sizes differ: 1 GiB vs 2 GiB"});
  EXPECT_EQ(e.code, ErrorCode::kDataSize);
  EXPECT_EQ(e.text, "sizes differ: 1 GiB vs 2 GiB");
}

TEST(PeerProto, DataWithPayloadIsChecksummedWhereItLies) {
  std::vector<uint8_t> data(8192);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31);
  const Data w{.seq = 123, .offset_bytes = 1 << 20, .length_bytes = 8192, .flags = kDataFlagFua};
  const auto head = w.EncodeHead(data);

  // The receiver's streaming path: header, head, data into its own buffer, CRC chained.
  Result<FrameHeader> h = DecodeFrameHeader(std::span(head).first(kFrameHeaderBytes));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->type, MessageType::kData);
  EXPECT_EQ(h->payload_bytes, Data::kHeadBytes + 8192);
  const auto head_bytes = std::span(head).subspan(kFrameHeaderBytes);
  Result<Data> d = Data::DecodeHead(head_bytes, h->payload_bytes);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->seq, 123u);
  EXPECT_EQ(d->offset_bytes, 1u << 20);
  EXPECT_EQ(d->length_bytes, 8192u);
  EXPECT_EQ(d->flags, kDataFlagFua);
  EXPECT_TRUE(CheckPayloadCrc(h.value(), Crc32c(data, Crc32c(head_bytes))).ok());

  // The same bytes as one frame decode too.
  std::vector<uint8_t> whole(head.begin(), head.end());
  whole.insert(whole.end(), data.begin(), data.end());
  Result<Data> d2 = DecodeMessage<Data>(whole);
  ASSERT_TRUE(d2.ok()) << d2.status().message();
  EXPECT_EQ(d2->seq, 123u);

  // One flipped data bit is caught.
  data[4000] ^= 0x10;
  Status bad = CheckPayloadCrc(h.value(), Crc32c(data, Crc32c(head_bytes)));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("checksum mismatch"));
  EXPECT_THAT(bad.message(), HasSubstr("Data"));
}

TEST(PeerProto, GatheredDataHeadMatchesTheContiguousOne) {
  std::vector<uint8_t> data(3 * 4096 + 512);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13 + 5);
  const Data w{.seq = 9,
               .offset_bytes = 8192,
               .length_bytes = static_cast<uint32_t>(data.size()),
               .flags = kDataFlagFua | kDataFlagResync};
  // Uneven pieces, one of them empty: only the bytes and their order count.
  const size_t cuts[] = {0, 1000, 1000, 5000, data.size()};
  std::vector<iovec> pieces;
  for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
    pieces.push_back(iovec{data.data() + cuts[i], cuts[i + 1] - cuts[i]});
  }
  EXPECT_EQ(w.EncodeHeadGathered(pieces), w.EncodeHead(data));

  // The pieces really are checksummed: a changed byte in the last one changes the frame.
  const auto before = w.EncodeHeadGathered(pieces);
  data.back() ^= 1;
  EXPECT_NE(w.EncodeHeadGathered(pieces), before);

  const Data z{.seq = 10, .offset_bytes = 0, .length_bytes = 1 << 20, .flags = kDataFlagZeroes};
  EXPECT_EQ(z.EncodeHeadGathered({}), z.EncodeHead({}));
}

TEST(PeerProto, StateCarriesItsFlags) {
  State s;
  s.disk = DiskState::kUpToDate;
  s.flags = kStateFlagResyncDone | kStateFlagCrashedPrimary | kStateFlagDiscardMyData |
            kStateFlagPrimaryAtSplit;
  s.data_bytes = kGiB;
  EXPECT_EQ(RoundTrip(s).flags, s.flags);
  const auto frame = s.Encode();
  EXPECT_EQ(GetLe(frame, kFrameHeaderBytes + 4, 4), 15u);  // flags at payload offset 4

  // A bit beyond the known ones is still refused.
  std::vector<uint8_t> payload(frame.begin() + kFrameHeaderBytes, frame.end());
  payload[4] |= 1u << 4;
  Result<State> bad = State::Decode(payload);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown flags"));
}

TEST(PeerProto, ZeroesAndTrimCarryNoData) {
  for (uint32_t flag : {kDataFlagZeroes, kDataFlagTrim, kDataFlagZeroes | kDataFlagResync}) {
    const Data w{.seq = 1, .offset_bytes = 0, .length_bytes = 0x80000000u, .flags = flag};
    EXPECT_FALSE(w.HasPayloadData());
    const auto head = w.EncodeHead({});
    Result<Data> d = DecodeMessage<Data>(std::span<const uint8_t>(head));
    ASSERT_TRUE(d.ok()) << d.status().message();
    EXPECT_EQ(d->length_bytes, 0x80000000u);
    EXPECT_EQ(d->flags, flag);
  }
}

TEST(PeerProto, LargestDataFrameIsAllowed) {
  std::vector<uint8_t> data(kDataBytesMax, 0xab);
  const Data w{.seq = 2, .offset_bytes = 4096, .length_bytes = kDataBytesMax};
  const auto head = w.EncodeHead(data);
  Result<FrameHeader> h = DecodeFrameHeader(std::span(head).first(kFrameHeaderBytes));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_LE(h->payload_bytes, kPeerMaxPayload);
}

// ---- Frame errors -----------------------------------------------------------------------------

TEST(PeerProto, TruncatedFramesAreRejected) {
  const auto ping = Ping{1}.Encode();
  EXPECT_FALSE(DecodeFrameHeader(std::span(ping).first(kFrameHeaderBytes - 1)).ok());
  Result<FrameView> v = DecodeFrame(std::span(ping).first(kFrameHeaderBytes - 1));
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.status().message(), HasSubstr("truncated"));
  v = DecodeFrame(std::span(ping).first(ping.size() - 1));
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.status().message(), HasSubstr("7 payload bytes, its header says 8"));
}

TEST(PeerProto, BadMagicSaysWhatThePeerSeemsToSpeak) {
  std::vector<uint8_t> tls = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01};
  tls.resize(kFrameHeaderBytes, 0);
  Result<FrameHeader> h = DecodeFrameHeader(tls);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(),
              HasSubstr("peer speaks something else: first bytes 0x16 0x03 0x01 0x02"));
  EXPECT_THAT(h.status().message(), HasSubstr("TLS"));

  std::string nbd = "NBDMAGICIHAVEOPT";
  nbd.resize(kFrameHeaderBytes, '\0');
  h = DecodeFrameHeader(std::span(reinterpret_cast<const uint8_t*>(nbd.data()), nbd.size()));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("0x4e 0x42 0x44 0x4d"));
  EXPECT_THAT(h.status().message(), HasSubstr("NBD"));
}

TEST(PeerProto, BadHeaderCrcIsRejected) {
  for (size_t byte : {4, 8, 12, 20}) {  // type, length, payload CRC, the CRC itself
    auto f = Ping{1}.Encode();
    f[byte] ^= 0x01;
    Result<FrameHeader> h = DecodeFrameHeader(std::span(f).first(kFrameHeaderBytes));
    ASSERT_FALSE(h.ok()) << byte;
    EXPECT_THAT(h.status().message(), HasSubstr("header checksum mismatch")) << byte;
  }
}

TEST(PeerProto, BadPayloadCrcIsRejected) {
  auto f = State{}.Encode();
  f[kFrameHeaderBytes + 20] ^= 0x80;
  Result<State> s = DecodeMessage<State>(std::span<const uint8_t>(f));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("State payload of 56 bytes: checksum mismatch"));
}

TEST(PeerProto, OversizeUnknownAndOutOfBoundsLengthsAreRejected) {
  Result<FrameHeader> h = DecodeFrameHeader(HeaderOf(RawFrame(0x10, {}, 0, kPeerMaxPayload + 1)));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(),
              HasSubstr("over the limit of " + std::to_string(kPeerMaxPayload)));

  h = DecodeFrameHeader(HeaderOf(RawFrame(0x2F, std::vector<uint8_t>(8))));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("unknown message type 0x002f"));
  EXPECT_FALSE(DecodeFrameHeader(HeaderOf(RawFrame(0, {}))).ok());

  // A Ping of 9 bytes is refused before its payload is read.
  h = DecodeFrameHeader(HeaderOf(RawFrame(0x05, std::vector<uint8_t>(9))));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("Ping payload of 9 bytes is outside 8..8"));
  // A Data frame cannot claim more than its head and 32 MiB.
  h = DecodeFrameHeader(HeaderOf(RawFrame(0x10, {}, 0, Data::kHeadBytes + kDataBytesMax + 512)));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("Data payload"));
}

TEST(PeerProto, UnknownFrameFlagsAndReservedBytesAreRejected) {
  Result<FrameHeader> h = DecodeFrameHeader(HeaderOf(RawFrame(0x05, std::vector<uint8_t>(8), 1)));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("unknown flags"));
  h = DecodeFrameHeader(HeaderOf(RawFrame(0x05, std::vector<uint8_t>(8), 0, std::nullopt, 7)));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("reserved"));
}

TEST(PeerProto, WrongMessageTypeIsNamed) {
  const auto f = Ping{1}.Encode();
  Result<PingAck> r = DecodeMessage<PingAck>(std::span<const uint8_t>(f));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "peer sent Ping where PingAck was expected");
}

// ---- Message errors ---------------------------------------------------------------------------

// The payload of SampleHello(), to corrupt by hand.
std::vector<uint8_t> HelloPayload() {
  const std::vector<uint8_t> f = SampleHello().Encode();
  return {f.begin() + kFrameHeaderBytes, f.end()};
}

std::string HelloError(const std::vector<uint8_t>& payload) {
  Result<Hello> h = DecodeMessage<Hello>(RawFrame(0x01, payload));
  return h.ok() ? "decoded" : h.status().message();
}

TEST(PeerProto, HelloDecodeErrors) {
  std::vector<uint8_t> p = HelloPayload();
  p[4] = 'D';
  EXPECT_THAT(HelloError(p), HasSubstr("replication protocol 0x44 is not A, B or C"));

  p = HelloPayload();
  p[0] = 4;  // min 4 > max 3
  EXPECT_THAT(HelloError(p), HasSubstr("version range 4..3 is empty"));

  p = HelloPayload();
  p[6] = 1;
  EXPECT_THAT(HelloError(p), HasSubstr("reserved"));

  // A name of 65 bytes.
  p = HelloPayload();
  p.resize(Hello::kFixedBytes);
  for (size_t len : {65, 5, 3}) {
    p.push_back(static_cast<uint8_t>(len));
    p.insert(p.end(), len, 'a');
  }
  EXPECT_THAT(HelloError(p), HasSubstr("resource name of 65 bytes is not 1 to 64"));

  // An empty name, and a name with a character the config would never allow.
  p = HelloPayload();
  p[Hello::kFixedBytes] = 0;
  EXPECT_THAT(HelloError(p), HasSubstr("resource name"));
  p = HelloPayload();
  p[Hello::kFixedBytes + 1 + 5 + 1] = '\n';  // first byte of the node name
  EXPECT_THAT(HelloError(p), HasSubstr("node name of 5 bytes"));

  // A length that runs past the end, and bytes after the last name.
  p = HelloPayload();
  p[Hello::kFixedBytes + 1 + 5 + 1 + 5] = 60;
  EXPECT_THAT(HelloError(p), HasSubstr("expected peer node name runs past the end"));
  p = HelloPayload();
  p.push_back('x');
  EXPECT_THAT(HelloError(p), HasSubstr("1 bytes after the last name"));

  // Truncated to less than the fixed part.
  p = HelloPayload();
  p.resize(Hello::kBytesMin - 1);
  EXPECT_FALSE(DecodeFrameHeader(HeaderOf(RawFrame(0x01, p))).ok());
  EXPECT_FALSE(Hello::Decode(p).ok());
}

std::vector<uint8_t> StatePayload() {
  State s;
  s.data_bytes = 1 << 20;
  const auto f = s.Encode();
  return {f.begin() + kFrameHeaderBytes, f.end()};
}

TEST(PeerProto, StateDecodeErrors) {
  std::vector<uint8_t> p = StatePayload();
  p[0] = 2;
  EXPECT_THAT(State::Decode(p).status().message(), HasSubstr("role 2 is not 0 or 1"));
  p = StatePayload();
  p[1] = 4;
  EXPECT_THAT(State::Decode(p).status().message(), HasSubstr("disk state 4 is unknown"));
  p = StatePayload();
  p[4] = 0x10;  // bits 0..3 are defined
  EXPECT_THAT(State::Decode(p).status().message(), HasSubstr("unknown flags 0x00000010"));
  p = StatePayload();
  p[3] = 1;
  EXPECT_THAT(State::Decode(p).status().message(), HasSubstr("reserved"));
  p = StatePayload();
  p[48 + 3] = 1;  // out of sync 16 MiB > data 1 MiB
  EXPECT_THAT(State::Decode(p).status().message(), HasSubstr("more than the data size"));
  p = StatePayload();
  p.pop_back();
  EXPECT_THAT(State::Decode(p).status().message(), HasSubstr("payload is 55 bytes, must be 56"));
}

TEST(PeerProto, OutOfSyncRoundTripsAndItsLargestFrameFits) {
  OutOfSync m;
  m.flags = kOutOfSyncFlagLast;
  m.runs = {{0, 4096}, {1 << 20, 8192}, {(1ull << 40) - 4096, 4096}};
  Result<OutOfSync> back = DecodeMessage<OutOfSync>(m.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->flags, kOutOfSyncFlagLast);
  EXPECT_EQ(back->runs, m.runs);
  OutOfSync full;
  for (uint64_t i = 0; i < kOutOfSyncRunsMax; ++i) full.runs.push_back({i * 8192, 4096});
  back = DecodeMessage<OutOfSync>(full.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->runs.size(), kOutOfSyncRunsMax);
  EXPECT_EQ(back->flags, 0u);
}

std::string OutOfSyncError(uint32_t flags, uint32_t count,
                           std::vector<std::pair<uint64_t, uint64_t>> runs) {
  std::vector<uint8_t> p;
  Le(p, flags, 4);
  Le(p, count, 4);
  for (auto [offset, length] : runs) {
    Le(p, offset, 8);
    Le(p, length, 8);
  }
  Result<OutOfSync> m = OutOfSync::Decode(p);
  return m.ok() ? "decoded" : m.status().message();
}

TEST(PeerProto, OutOfSyncDecodeErrors) {
  EXPECT_EQ(OutOfSyncError(1, 1, {{0, 4096}}), "decoded");
  EXPECT_THAT(OutOfSyncError(2, 1, {{0, 4096}}), HasSubstr("unknown flags 0x00000002"));
  EXPECT_THAT(OutOfSyncError(0, 2, {{0, 4096}}), HasSubstr("run count 2 does not match"));
  EXPECT_THAT(OutOfSyncError(0, 1, {{0, 0}}), HasSubstr("empty or not in whole 512-byte"));
  EXPECT_THAT(OutOfSyncError(0, 1, {{100, 4096}}), HasSubstr("empty or not in whole 512-byte"));
  EXPECT_THAT(OutOfSyncError(0, 1, {{~0ull - 511, 1024}}), HasSubstr("wraps around"));
  EXPECT_THAT(OutOfSyncError(0, 2, {{8192, 4096}, {4096, 4096}}),
              HasSubstr("run 1 [4096, +4096) overlaps or precedes"));
  EXPECT_THAT(OutOfSyncError(0, 2, {{0, 8192}, {4096, 4096}}), HasSubstr("overlaps"));
  // A frame that claims more runs than a frame may hold is refused by its header already.
  Result<FrameHeader> h =
      DecodeFrameHeader(HeaderOf(RawFrame(0x20, {}, 0, OutOfSync::kBytesMax + 16)));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("OutOfSync payload"));
}

TEST(PeerProto, CsumsAndCsumReplyRoundTrip) {
  Csums c;
  c.seq = 42;
  c.offset_bytes = 8 * kMiB;
  c.length_bytes = kCsumsBytesMax;
  c.flags = kCsumsFlagVerify;
  for (uint64_t i = 0; i < kCsumsBytesMax / 4096; ++i) c.digests.push_back(i * 0x9E3779B97F4A7C15);
  Result<Csums> back = DecodeMessage<Csums>(c.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->digests, c.digests);
  EXPECT_EQ(back->flags, kCsumsFlagVerify);
  c.length_bytes = 4096 + 512;  // a partial last block has its own digest
  c.digests = {1, 2};
  back = DecodeMessage<Csums>(c.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->length_bytes, 4608u);

  CsumReply r;
  r.seq = 42;
  r.differing = {{8 * kMiB, 4096}, {8 * kMiB + 16384, 8192}};
  Result<CsumReply> rb = DecodeMessage<CsumReply>(r.Encode());
  ASSERT_TRUE(rb.ok()) << rb.status().message();
  EXPECT_EQ(rb->differing, r.differing);
  r.differing.clear();
  r.error = 5;
  rb = DecodeMessage<CsumReply>(r.Encode());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->error, 5);
}

TEST(PeerProto, CsumsDecodeErrors) {
  auto payload = [](uint32_t length, uint32_t flags, size_t digests) {
    std::vector<uint8_t> p;
    Le(p, 1, 8);
    Le(p, 0, 8);
    Le(p, length, 4);
    Le(p, flags, 4);
    for (size_t i = 0; i < digests; ++i) Le(p, i, 8);
    return p;
  };
  EXPECT_TRUE(Csums::Decode(payload(8192, 0, 2)).ok());
  EXPECT_THAT(Csums::Decode(payload(8192, 0, 3)).status().message(), HasSubstr("2 expected"));
  EXPECT_THAT(Csums::Decode(payload(8192, 2, 2)).status().message(), HasSubstr("unknown flags"));
  EXPECT_THAT(Csums::Decode(payload(100, 0, 1)).status().message(), HasSubstr("512-byte"));
  std::vector<uint8_t> reply;
  Le(reply, 1, 8);
  Le(reply, 4096, 4);  // an errno beyond 4095
  Le(reply, 0, 4);
  EXPECT_FALSE(CsumReply::Decode(reply).ok());
}

TEST(PeerProto, ReadRequestAndReadErrorRoundTrip) {
  const ReadRequest r{77, 8 * kMiB + 512, kDataBytesMax};
  Result<ReadRequest> back = DecodeMessage<ReadRequest>(r.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->seq, 77u);
  EXPECT_EQ(back->offset_bytes, 8 * kMiB + 512);
  EXPECT_EQ(back->length_bytes, kDataBytesMax);
  Result<ReadError> e = DecodeMessage<ReadError>(ReadError{77, 5}.Encode());
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->seq, 77u);
  EXPECT_EQ(e->error, 5);
  EXPECT_EQ(MessageTypeName(MessageType::kReadRequest), "ReadRequest");
}

TEST(PeerProto, ReadRequestAndReadErrorDecodeErrors) {
  auto request = [](uint64_t offset, uint32_t length, uint32_t flags) {
    std::vector<uint8_t> p;
    Le(p, 9, 8);
    Le(p, offset, 8);
    Le(p, length, 4);
    Le(p, flags, 4);
    Result<ReadRequest> r = ReadRequest::Decode(p);
    return r.ok() ? std::string("decoded") : r.status().message();
  };
  EXPECT_EQ(request(4096, 4096, 0), "decoded");
  EXPECT_THAT(request(4096, 4096, 1), HasSubstr("unknown flags"));
  EXPECT_THAT(request(4096, 0, 0), HasSubstr("not a range of 1 to 65536 whole 512-byte"));
  EXPECT_THAT(request(100, 4096, 0), HasSubstr("whole 512-byte sectors"));
  EXPECT_THAT(request(0, kDataBytesMax + 512, 0), HasSubstr("whole 512-byte sectors"));
  EXPECT_THAT(request(~0ull - 511, 4096, 0), HasSubstr("whole 512-byte sectors"));
  EXPECT_FALSE(ReadRequest::Decode(std::vector<uint8_t>(23)).ok());
  auto error = [](int32_t code) {
    std::vector<uint8_t> p;
    Le(p, 9, 8);
    Le(p, static_cast<uint32_t>(code), 4);
    Result<ReadError> r = ReadError::Decode(p);
    return r.ok() ? std::string("decoded") : r.status().message();
  };
  EXPECT_EQ(error(5), "decoded");
  EXPECT_THAT(error(0), HasSubstr("failed with error 0"));
  EXPECT_THAT(error(-1), HasSubstr("not 0 or an errno"));
}

TEST(PeerProto, PromoteRequestAndReplyRoundTrip) {
  Result<PromoteRequest> q = DecodeMessage<PromoteRequest>(PromoteRequest{0xFEEDFACE}.Encode());
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ(q->token, 0xFEEDFACEu);
  const PromoteReply refused{.token = 9, .granted = false, .reason = "'beta' is Primary\n"};
  Result<PromoteReply> r = DecodeMessage<PromoteReply>(refused.Encode());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->token, 9u);
  EXPECT_FALSE(r->granted);
  EXPECT_EQ(r->reason, "'beta' is Primary?") << "control characters never reach the log";
  Result<PromoteReply> g =
      DecodeMessage<PromoteReply>(PromoteReply{.token = 10, .granted = true, .reason = ""}.Encode());
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_TRUE(g->granted);
  EXPECT_EQ(g->reason, "");
  // A reason longer than the limit is cut, not refused.
  const PromoteReply longer{.token = 1, .granted = false, .reason = std::string(2000, 'x')};
  Result<PromoteReply> cut = DecodeMessage<PromoteReply>(longer.Encode());
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->reason.size(), kErrorTextBytesMax);
  EXPECT_EQ(MessageTypeName(MessageType::kPromoteReply), "PromoteReply");
  EXPECT_NE(kFeaturesSupported & kFeaturePromoteRequests, 0u);
}

TEST(PeerProto, PromoteReplyDecodeErrors) {
  auto reply = [](uint32_t granted, uint16_t length, std::string text) {
    std::vector<uint8_t> p;
    Le(p, 9, 8);
    Le(p, granted, 4);
    Le(p, length, 2);
    p.insert(p.end(), text.begin(), text.end());
    Result<PromoteReply> r = PromoteReply::Decode(p);
    return r.ok() ? std::string("decoded") : r.status().message();
  };
  EXPECT_EQ(reply(0, 3, "abc"), "decoded");
  EXPECT_THAT(reply(2, 0, ""), HasSubstr("not 0 or 1"));
  EXPECT_THAT(reply(0, 4, "abc"), HasSubstr("does not match"));
  EXPECT_THAT(reply(0, 3, "a\x01" "c"), HasSubstr("control character"));
  EXPECT_FALSE(PromoteRequest::Decode(std::vector<uint8_t>(9)).ok());
  EXPECT_FALSE(PromoteReply::Decode(std::vector<uint8_t>(13)).ok());
}

std::vector<uint8_t> DataHead(uint64_t offset, uint32_t length, uint32_t flags) {
  std::vector<uint8_t> h;
  Le(h, 7, 8);
  Le(h, offset, 8);
  Le(h, length, 4);
  Le(h, flags, 4);
  return h;
}

std::string DataError(uint64_t offset, uint32_t length, uint32_t flags, uint32_t payload_bytes) {
  Result<Data> d = Data::DecodeHead(DataHead(offset, length, flags), payload_bytes);
  return d.ok() ? "decoded" : d.status().message();
}

TEST(PeerProto, DataDecodeErrors) {
  EXPECT_EQ(DataError(0, 4096, 0, 24 + 4096), "decoded");
  EXPECT_THAT(DataError(0, 4096, 1u << 5, 24 + 4096), HasSubstr("unknown flags 0x00000020"));
  EXPECT_EQ(DataError(0, 4096, kDataFlagReadReply, 24 + 4096), "decoded");
  EXPECT_THAT(DataError(0, 4096, kDataFlagReadReply | kDataFlagResync, 24 + 4096),
              HasSubstr("read reply with other flags 0x00000008"));
  EXPECT_THAT(DataError(0, 4096, kDataFlagReadReply | kDataFlagZeroes, 24),
              HasSubstr("read reply with other flags"));
  EXPECT_THAT(DataError(0, 4096, kDataFlagZeroes | kDataFlagTrim, 24),
              HasSubstr("both ZEROES and TRIM"));
  EXPECT_THAT(DataError(0, 0, 0, 24), HasSubstr("not a non-empty range"));
  EXPECT_THAT(DataError(100, 4096, 0, 24 + 4096), HasSubstr("not a non-empty range"));
  EXPECT_THAT(DataError(0, 1000, 0, 24 + 1000), HasSubstr("not a non-empty range"));
  EXPECT_THAT(DataError(~0ull - 511, 4096, kDataFlagTrim, 24), HasSubstr("not a non-empty"));
  EXPECT_THAT(DataError(0, kDataBytesMax + 512, 0, 24 + kDataBytesMax + 512),
              HasSubstr("over the limit"));
  EXPECT_THAT(DataError(0, 4096, 0, 24 + 512),
              HasSubstr("needs a payload of 4120 bytes, the frame has 536"));
  EXPECT_THAT(DataError(0, 4096, kDataFlagTrim, 24 + 4096), HasSubstr("needs a payload of 24"));
  EXPECT_FALSE(Data::Decode(std::vector<uint8_t>(23)).ok());
}

TEST(PeerProto, AckAndSmallMessageDecodeErrors) {
  std::vector<uint8_t> p;
  Le(p, 1, 8);
  Le(p, static_cast<uint32_t>(-5), 4);
  EXPECT_THAT(WriteAck::Decode(p).status().message(), HasSubstr("error -5 is not 0 or an errno"));
  EXPECT_FALSE(FlushAck::Decode(p).ok());
  p.resize(8);
  Le(p, 4096, 4);
  EXPECT_FALSE(WriteAck::Decode(p).ok());
  for (size_t n : {0, 7, 9}) {
    const std::vector<uint8_t> q(n);
    EXPECT_FALSE(Ping::Decode(q).ok());
    EXPECT_FALSE(PingAck::Decode(q).ok());
    EXPECT_FALSE(RecvAck::Decode(q).ok());
    EXPECT_FALSE(Flush::Decode(q).ok());
    EXPECT_FALSE(Auth::Decode(q).ok());
  }
}

TEST(PeerProto, ErrorMessageLimitsAndUnknownCodes) {
  // Encode cuts the text and neutralises control characters.
  const Error e{ErrorCode::kResource, "line one\nline two" + std::string(600, 'x')};
  const Error d = RoundTrip(e);
  EXPECT_EQ(d.text.size(), kErrorTextBytesMax);
  EXPECT_EQ(d.text.substr(0, 17), "line one?line two");

  // A newer peer's code still reaches the log.
  std::vector<uint8_t> p;
  Le(p, 999, 4);
  Le(p, 3, 2);
  p.insert(p.end(), {'n', 'e', 'w'});
  Result<Error> r = Error::Decode(p);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(ErrorCodeName(r->code), "unknown");
  EXPECT_EQ(DescribeRefusal(r.value(), "bob"), "peer 'bob' refused the connection (unknown): new");

  p[6] = 0x1b;  // ESC
  EXPECT_THAT(Error::Decode(p).status().message(), HasSubstr("control character 0x1b"));
  p[4] = 4;  // claims 4 bytes of text, has 3
  EXPECT_THAT(Error::Decode(p).status().message(), HasSubstr("text length 4"));
  std::vector<uint8_t> big;
  Le(big, 1, 4);
  Le(big, 513, 2);
  big.resize(6 + 513, 'a');
  EXPECT_FALSE(Error::Decode(big).ok());
  EXPECT_FALSE(DecodeFrameHeader(HeaderOf(RawFrame(0x04, big))).ok());
}

}  // namespace
}  // namespace repld::peer
