// The quorum frames (replication/quorum_proto.h): every message round-trips, and the decoder
// refuses what a hostile or broken peer could send.
#include "replication/quorum_proto.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace repld::peer {
namespace {

using ::testing::HasSubstr;

// Encodes, then decodes the frame as the link does: header, payload CRC, payload.
quorum::Message RoundTrip(const quorum::Message& m) {
  const std::vector<uint8_t> frame = EncodeQuorum(m);
  Result<FrameView> view = DecodeFrame(frame);
  EXPECT_TRUE(view.ok()) << view.status().message();
  Result<quorum::Message> back = DecodeQuorum(view->header.type, view->payload, 3);
  EXPECT_TRUE(back.ok()) << back.status().message();
  return std::move(back).value();
}

TEST(QuorumProto, EveryMessageRoundTrips) {
  quorum::Ping ping{.seq = 0x1122334455667788,
                    .role = Role::kPrimary,
                    .candidate = true,
                    .disk = DiskState::kUpToDate,
                    .data_peer_connected = true,
                    .data_peer_disk = DiskState::kOutdated};
  auto p = std::get<quorum::Ping>(RoundTrip(ping));
  EXPECT_EQ(p.seq, ping.seq);
  EXPECT_EQ(p.role, Role::kPrimary);
  EXPECT_TRUE(p.candidate);
  EXPECT_EQ(p.disk, DiskState::kUpToDate);
  EXPECT_TRUE(p.data_peer_connected);
  EXPECT_EQ(p.data_peer_disk, DiskState::kOutdated);

  auto pong =
      std::get<quorum::Pong>(RoundTrip(quorum::Pong{.seq = 7,
                                                    .supports = true,
                                                    .refusal = quorum::Refusal::kStartupWait,
                                                    .supported = 2,
                                                    .outdated = true}));
  EXPECT_EQ(pong.seq, 7u);
  EXPECT_TRUE(pong.supports);
  EXPECT_EQ(pong.refusal, quorum::Refusal::kStartupWait);
  EXPECT_EQ(pong.supported, 2);
  EXPECT_TRUE(pong.outdated);

  EXPECT_EQ(std::get<quorum::VoteRequest>(RoundTrip(quorum::VoteRequest{.token = 99})).token, 99u);
  auto vr =
      std::get<quorum::VoteReply>(RoundTrip(quorum::VoteReply{.token = 5,
                                                              .granted = false,
                                                              .refusal = quorum::Refusal::kOutdated,
                                                              .supported = quorum::kNoNode}));
  EXPECT_EQ(vr.token, 5u);
  EXPECT_FALSE(vr.granted);
  EXPECT_EQ(vr.refusal, quorum::Refusal::kOutdated);
  EXPECT_EQ(vr.supported, quorum::kNoNode);
  auto orq =
      std::get<quorum::OutdateRequest>(RoundTrip(quorum::OutdateRequest{.token = 3, .node = 1}));
  EXPECT_EQ(orq.token, 3u);
  EXPECT_EQ(orq.node, 1);
  auto orp = std::get<quorum::OutdateReply>(
      RoundTrip(quorum::OutdateReply{.token = 4, .done = true, .refusal = quorum::Refusal::kNone}));
  EXPECT_TRUE(orp.done);
}

// The payload of `m`'s frame with byte `at` set to `value`, decoded.
Status DecodeWith(const quorum::Message& m, size_t at, uint8_t value, uint8_t members = 3) {
  std::vector<uint8_t> frame = EncodeQuorum(m);
  Result<FrameView> view = DecodeFrame(frame);
  std::vector<uint8_t> payload(view->payload.begin(), view->payload.end());
  payload[at] = value;
  return DecodeQuorum(view->header.type, payload, members).status();
}

TEST(QuorumProto, RefusesValuesOutOfRange) {
  EXPECT_THAT(DecodeWith(quorum::Ping{}, 8, 2).message(), HasSubstr("role is 2, at most 1"));
  EXPECT_THAT(DecodeWith(quorum::Ping{}, 9, 7).message(), HasSubstr("candidate is 7"));
  EXPECT_THAT(DecodeWith(quorum::Ping{}, 10, 5).message(), HasSubstr("disk is 5, at most 4"));
  EXPECT_THAT(DecodeWith(quorum::Ping{}, 13, 1).message(), HasSubstr("reserved bytes"));
  EXPECT_THAT(DecodeWith(quorum::Pong{}, 9, 7).message(), HasSubstr("refusal is 7"));
  EXPECT_THAT(DecodeWith(quorum::Pong{}, 10, 3).message(), HasSubstr("supported is node 3 of 3"));
  EXPECT_THAT(DecodeWith(quorum::OutdateRequest{.node = 1}, 8, 2, 2).message(),
              HasSubstr("node is node 2 of 2"));
  EXPECT_THAT(DecodeWith(quorum::OutdateRequest{.node = 1}, 8, 0xFF).message(),
              HasSubstr("names no node"));
  EXPECT_THAT(DecodeWith(quorum::VoteReply{}, 8, 2).message(), HasSubstr("granted is 2"));
}

TEST(QuorumProto, RefusesWrongLengths) {
  const std::vector<uint8_t> nine(9, 0);
  EXPECT_THAT(DecodeQuorum(MessageType::kVoteRequest, nine, 3).status().message(),
              HasSubstr("payload is 9 bytes, must be 8"));
  EXPECT_THAT(DecodeQuorum(MessageType::kQuorumPing, nine, 3).status().message(),
              HasSubstr("must be 16"));
}

}  // namespace
}  // namespace repld::peer
