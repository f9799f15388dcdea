// Digests instead of data in the core: online verify marks what differs on both nodes; checksum
// resync sends data only for the blocks whose digests differ.
#include <gtest/gtest.h>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 8 * kMiB;
constexpr uint64_t kX = 0x1000, kOld = 0x4000;

Replica Make(bool checksums, GenerationIds ids, DiskState disk = DiskState::kUpToDate,
             uint32_t csums_window = 16) {
  ReplicaOptions o;
  o.csums_window = csums_window;
  o.node_name = "alpha";
  o.data_bytes = kData;
  o.resync_block_bytes = kMiB;
  o.resync_checksums = checksums;
  MdState md;
  md.ids = ids;
  md.disk = disk;
  return Replica(o, md, ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 0), Bitmap(kData));
}

const GenerationIds kAtX{kX, 0, {kOld, 0}};

// Two in-sync nodes; `r` is connected to a Secondary peer with the same data.
void ConnectInSync(Replica& r) {
  PeerState peer = r.LocalState();
  r.PeerUp(peer);
  r.TakeActions();
  ASSERT_EQ(r.Report().repl, ReplState::kEstablished);
}

TEST(ReplicaVerify, ComparesEveryBlockAndMarksWhatDiffers) {
  Replica r = Make(false, kAtX);
  EXPECT_FALSE(r.StartVerify().ok()) << "not connected";
  ConnectInSync(r);
  ASSERT_TRUE(r.StartVerify().ok());
  EXPECT_EQ(r.Report().repl, ReplState::kVerifyS);
  EXPECT_FALSE(r.StartVerify().ok()) << "already running";
  uint64_t compared = 0;
  for (int round = 0; round < 100; ++round) {
    std::vector<Action> actions = r.TakeActions();
    if (actions.empty()) break;
    for (Action& a : actions) {
      if (auto* read = std::get_if<ResyncRead>(&a)) {
        EXPECT_TRUE(read->digests);
        r.ResyncReadDone(read->token, 0);
      } else if (auto* csums = std::get_if<SendCsums>(&a)) {
        EXPECT_TRUE(csums->verify);
        // The peer finds one 4 KiB block different in the block at 3 MiB.
        std::vector<OutOfSyncRun> differing;
        if (compared == 3 * kMiB) differing.push_back({3 * kMiB + 8192, 4096});
        compared += kMiB;
        r.PeerCsumReply(csums->seq, differing, 0);
      }
    }
  }
  EXPECT_EQ(compared, kData);
  const ReplicaStatus s = r.Report();
  EXPECT_EQ(s.repl, ReplState::kEstablished);
  ASSERT_TRUE(s.verify.has_value());
  EXPECT_FALSE(s.verify->running);
  EXPECT_EQ(s.verify->done_bytes, kData);
  EXPECT_EQ(s.verify->differing_bytes, 4096u);
  EXPECT_EQ(s.out_of_sync_bytes, 4096u);
  EXPECT_TRUE(r.bitmap().Test((3 * kMiB + 8192) / 4096));
}

TEST(ReplicaVerify, ThePeerMarksWhatItFoundAndAnswers) {
  Replica r = Make(false, kAtX);
  ConnectInSync(r);
  ASSERT_TRUE(r.PeerCsums(/*key=*/5, /*seq=*/9, kMiB, kMiB, /*verify=*/true));
  ASSERT_EQ(All<CompareCsums>(r.TakeActions()).size(), 1u);
  r.CsumsCompared(5, {{kMiB, 8192}}, 0);
  const auto replies = All<SendCsumReply>(r.TakeActions());
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].seq, 9u);
  EXPECT_EQ(replies[0].differing, (std::vector<OutOfSyncRun>{{kMiB, 8192}}));
  EXPECT_EQ(r.Report().out_of_sync_bytes, 8192u);
  // A range beyond the data is answered with EINVAL, nothing compared.
  EXPECT_FALSE(r.PeerCsums(6, 10, kData - 4096, 8192, true));
  const auto bad = All<SendCsumReply>(r.TakeActions());
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].error, EINVAL);
}

TEST(ReplicaChecksumResync, OnlyBlocksWhoseDigestsDifferTravel) {
  Replica r = Make(true, kAtX);
  ASSERT_TRUE(r.Promote(false).ok());
  r.TakeActions();
  PeerState fresh;  // a new disk: full sync (rule 30)
  fresh.data_bytes = kData;
  r.PeerUp(fresh);
  r.PeerOutOfSync({}, true);
  uint64_t data_sent = 0, digests_sent = 0;
  for (int round = 0; round < 200; ++round) {
    std::vector<Action> actions = r.TakeActions();
    if (actions.empty()) break;
    for (Action& a : actions) {
      if (auto* read = std::get_if<ResyncRead>(&a)) {
        r.ResyncReadDone(read->token, 0);
      } else if (auto* csums = std::get_if<SendCsums>(&a)) {
        EXPECT_FALSE(csums->verify);
        // Everything equal but 12 KiB at 5 MiB.
        std::vector<OutOfSyncRun> differing;
        if (digests_sent == 5 * kMiB) differing.push_back({5 * kMiB, 12288});
        digests_sent += kMiB;
        r.PeerCsumReply(csums->seq, differing, 0);
      } else if (auto* send = std::get_if<SendResync>(&a)) {
        r.PeerAck(AckKind::kWritten, send->seq, 0);
      } else if (auto* flush = std::get_if<SendFlush>(&a)) {
        r.PeerAck(AckKind::kFlushed, flush->seq, 0);
      }
    }
  }
  const ReplicaStatus s = r.Report();
  EXPECT_EQ(digests_sent, kData);
  data_sent = s.counters.resync_bytes;
  EXPECT_EQ(data_sent, 12288u) << "only the differing blocks go as data";
  EXPECT_EQ(s.counters.resync_equal_bytes, kData - 12288);
  EXPECT_EQ(s.out_of_sync_bytes, 0u);
  EXPECT_EQ(s.repl, ReplState::kEstablished);
}

TEST(ReplicaVerify, DigestFramesInFlightStayWithinTheirWindow) {
  // The peer keeps only so many digest frames waiting: a wide resync window must not exceed it.
  Replica r = Make(false, kAtX, DiskState::kUpToDate, /*csums_window=*/3);
  ConnectInSync(r);
  ASSERT_TRUE(r.StartVerify().ok());
  EXPECT_EQ(All<ResyncRead>(r.TakeActions()).size(), 3u);
}

TEST(ReplicaVerify, AnAnswerOutsideTheBlockAskedDropsThePeerAndMarksNothing) {
  Replica r = Make(false, kAtX);
  ConnectInSync(r);
  ASSERT_TRUE(r.StartVerify().ok());
  uint64_t seq = 0;
  for (Action& a : r.TakeActions()) {
    if (auto* read = std::get_if<ResyncRead>(&a)) r.ResyncReadDone(read->token, 0);
  }
  for (Action& a : r.TakeActions()) {
    if (auto* csums = std::get_if<SendCsums>(&a)) seq = seq == 0 ? csums->seq : seq;
  }
  ASSERT_NE(seq, 0u);
  // Far beyond the block and the device: no wrap-around lets it through.
  r.PeerCsumReply(seq, {{~0ull - 8191, 4096}}, 0);
  const auto drops = All<DropPeer>(r.TakeActions());
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_NE(drops[0].reason.find("outside the block asked"), std::string::npos);
  EXPECT_EQ(r.bitmap().CountSet(), 0u);
}

}  // namespace
}  // namespace repld
