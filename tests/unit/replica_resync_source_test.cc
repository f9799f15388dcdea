// The sync source's failure paths. A resync block's reply clears its range only if nothing
// marked it since the block was read: a write that the peer failed after the read makes the
// block's data older than the mark, and the peer's "written" (or, with checksums, "equal")
// answer for the block must not clear it. A block this node fails to read stays marked, the
// pass is retried with backoff, and after five failed passes in a row the resync stops,
// visibly (log and status), with the peer left Inconsistent.
#include <gtest/gtest.h>

#include <cerrno>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kX = 0x1000, kY = 0x2000, kOld = 0x4000;

// A Primary whose bitmap marks [0, 1 MiB) syncs a peer that stayed at generation X.
struct Source {
  explicit Source(bool checksums, OnIoError on_io_error = OnIoError::kDetach)
      : r(MakeReplica(Options(checksums, on_io_error), GenerationIds{kY, kX, {kX, kOld}},
                      {{0, kMiB}})) {
    EXPECT_TRUE(r.Promote(/*force=*/false).ok());
    r.TakeActions();
    PeerState peer;
    peer.role = Role::kSecondary;
    peer.disk = DiskState::kUpToDate;
    peer.ids = GenerationIds{kX, 0, {kOld, 0}};
    peer.data_bytes = 64 * kMiB;
    r.PeerUp(peer);
    r.PeerOutOfSync({}, /*last=*/true);  // the target's bitmap: nothing of its own
    EXPECT_EQ(r.Report().repl, ReplState::kSyncSource);
  }
  static ReplicaOptions Options(bool checksums, OnIoError on_io_error = OnIoError::kDetach) {
    ReplicaOptions o;
    o.on_io_error = on_io_error;
    o.node_name = "alpha";
    o.data_bytes = 64 * kMiB;
    o.resync_block_bytes = kMiB;
    o.resync_checksums = checksums;
    return o;
  }
  // Reads the resync block and sends it (its data, or its digests): returns the frame's seq.
  uint64_t SendBlock() {
    const std::vector<ResyncRead> reads = All<ResyncRead>(r.TakeActions());
    EXPECT_EQ(reads.size(), 1u);
    if (reads.empty()) return 0;
    r.ResyncReadDone(reads[0].token, 0);
    const std::vector<Action> a = r.TakeActions();
    for (const SendResync& s : All<SendResync>(a)) return s.seq;
    for (const SendCsums& s : All<SendCsums>(a)) return s.seq;
    ADD_FAILURE() << "the block was not sent";
    return 0;
  }
  // A client write of [0, 4 KiB), after the block's read, that the peer fails (`peer_error`).
  void WriteAfterTheRead(int peer_error) {
    r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
    std::vector<Action> a = r.TakeActions();
    for (const WriteAl& al : All<WriteAl>(a)) {
      r.AlWritten(al.plan.seq, 0);
      a = r.TakeActions();
    }
    const std::vector<SendData> sent = All<SendData>(a);
    ASSERT_EQ(sent.size(), 1u) << "the block was read: the write does not wait";
    r.LocalWriteDone(1, 0);
    r.PeerAck(AckKind::kWritten, sent[0].seq, peer_error);
    r.TakeActions();
  }
  Replica r;
};

// The source's disk is flushed before its first block goes: what it sends may sit in its cache
// only (a diskless Primary wrote it through this node and kept no record of it), and the
// target's confirmations clear the only marks that say the two disks differ.
TEST(ReplicaResyncSource, TheSourceFlushesItsDiskBeforeTheFirstBlock) {
  Source s(/*checksums=*/false);  // connected, the bitmaps exchanged: the resync started
  const std::vector<Action> actions = s.r.TakeActions();
  size_t sync = actions.size(), read = actions.size();
  for (size_t i = 0; i < actions.size(); ++i) {
    if (std::holds_alternative<SyncDisk>(actions[i]) && sync == actions.size()) sync = i;
    if (std::holds_alternative<ResyncRead>(actions[i]) && read == actions.size()) read = i;
  }
  ASSERT_LT(sync, actions.size()) << "no SyncDisk";
  ASSERT_LT(read, actions.size()) << "no ResyncRead";
  EXPECT_LT(sync, read);
}

// A Secondary source whose flush fails: its disk failed (detached under the default policy).
TEST(ReplicaResyncSource, AFailedFlushBeforeTheResyncFailsTheDisk) {
  Source s(/*checksums=*/false);
  ASSERT_TRUE(s.r.Demote(0).ok());
  s.r.TakeActions();
  s.r.DiskSyncFailed("flushing before a resync from this disk", EIO);
  const std::vector<Action> actions = s.r.TakeActions();
  const std::vector<DiskFailed> failed = All<DiskFailed>(actions);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(failed[0].detach);
  EXPECT_EQ(s.r.disk(), DiskState::kFailed);
  // The resync stops at once: no confirmation may clear a mark of a disk that failed a flush.
  EXPECT_EQ(All<DropPeer>(actions).size(), 1u);
}

// A pass_on Primary keeps its disk, but its resync stops and the marks stay for the next one.
TEST(ReplicaResyncSource, APassOnPrimaryWhoseFlushFailsStopsTheResyncAndKeepsItsMarks) {
  Source s(/*checksums=*/false, OnIoError::kPassOn);
  Replica& r = s.r;
  r.TakeActions();
  r.DiskSyncFailed("flushing before a resync from this disk", EIO);
  const std::vector<DropPeer> drops = All<DropPeer>(r.TakeActions());
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_TRUE(drops[0].reconnect);
  EXPECT_EQ(r.disk(), DiskState::kUpToDate);
  r.PeerDown("dropped");
  EXPECT_EQ(r.Report().out_of_sync_bytes, kMiB);
}

TEST(ReplicaResyncSource, AConfirmedBlockClearsItsRange) {
  Source s(/*checksums=*/false);
  const uint64_t seq = s.SendBlock();
  s.WriteAfterTheRead(0);
  s.r.PeerAck(AckKind::kWritten, seq, 0);
  EXPECT_FALSE(s.r.bitmap().Test(0));
  EXPECT_EQ(s.r.Report().out_of_sync_bytes, 0u);
}

TEST(ReplicaResyncSource, AConfirmedBlockMarkedSinceItsReadStaysMarked) {
  Source s(/*checksums=*/false);
  const uint64_t seq = s.SendBlock();
  s.WriteAfterTheRead(EIO);
  s.r.PeerAck(AckKind::kWritten, seq, 0);
  EXPECT_TRUE(s.r.bitmap().Test(0)) << "the failed write's mark is newer than the block";
  EXPECT_EQ(s.r.Report().repl, ReplState::kSyncSource) << "not finished";
  EXPECT_EQ(All<ResyncRead>(s.r.TakeActions()).size(), 1u) << "the next pass sends it again";
}

TEST(ReplicaResyncSource, AnEqualBlockClearsItsRange) {
  Source s(/*checksums=*/true);
  const uint64_t seq = s.SendBlock();
  s.WriteAfterTheRead(0);
  s.r.PeerCsumReply(seq, {}, 0);
  EXPECT_FALSE(s.r.bitmap().Test(0));
}

TEST(ReplicaResyncSource, AnEqualBlockMarkedSinceItsReadStaysMarked) {
  Source s(/*checksums=*/true);
  const uint64_t seq = s.SendBlock();
  s.WriteAfterTheRead(EIO);
  s.r.PeerCsumReply(seq, {}, 0);
  EXPECT_TRUE(s.r.bitmap().Test(0)) << "equal when read, but a write failed since";
}

// Fails every resync read of `passes` passes (one 1 MiB block each); Tick starts the next.
// Returns the log lines seen.
std::vector<Log> FailReads(Source& s, int passes) {
  std::vector<Log> logs;
  for (int pass = 0; pass < passes; ++pass) {
    std::vector<Action> a = s.r.TakeActions();
    for (int tick = 0; All<ResyncRead>(a).empty() && tick < 100; ++tick) {
      s.r.Tick();  // the backoff: 1, 2, 4, 8 ... seconds
      a = s.r.TakeActions();
    }
    const std::vector<ResyncRead> reads = All<ResyncRead>(a);
    EXPECT_EQ(reads.size(), 1u) << "pass " << pass;
    if (reads.empty()) break;
    s.r.ResyncReadDone(reads[0].token, EIO);
    for (const Log& l : All<Log>(s.r.TakeActions())) logs.push_back(l);
  }
  return logs;
}

TEST(ReplicaResyncSource, AFailedReadIsRetriedAfterABackoffAndTheResyncFinishes) {
  Source s(/*checksums=*/false);
  const std::vector<Log> logs = FailReads(s, 1);
  EXPECT_TRUE(s.r.bitmap().Test(0)) << "not read: still out of sync";
  EXPECT_EQ(s.r.Report().repl, ReplState::kSyncSource) << "not stopped after one failure";
  EXPECT_TRUE(All<ResyncRead>(s.r.TakeActions()).empty()) << "not at once: after the backoff";
  bool named = false;
  for (const Log& l : logs)
    named = named || l.text.find("[0, +1048576): error 5") != std::string::npos;
  EXPECT_TRUE(named) << "the log names the range and the errno";
  s.r.Tick();
  const uint64_t seq = s.SendBlock();  // this time the disk reads it
  s.r.PeerAck(AckKind::kWritten, seq, 0);
  EXPECT_EQ(s.r.Report().out_of_sync_bytes, 0u);
  EXPECT_EQ(s.r.Report().resync_stopped_reason, "");
}

TEST(ReplicaResyncSource, FiveFailedPassesStopTheResyncVisibly) {
  Source s(/*checksums=*/false);
  std::vector<Log> logs = FailReads(s, 4);
  EXPECT_EQ(s.r.Report().repl, ReplState::kSyncSource) << "four failed passes: still trying";
  const std::vector<Log> last = FailReads(s, 1);
  logs.insert(logs.end(), last.begin(), last.end());
  const ReplicaStatus st = s.r.Report();
  EXPECT_EQ(st.repl, ReplState::kEstablished) << "the resync stopped";
  EXPECT_NE(st.resync_stopped_reason.find("[0, +1048576): error 5"), std::string::npos)
      << st.resync_stopped_reason;
  EXPECT_TRUE(s.r.bitmap().Test(0)) << "the block stays out of sync";
  bool error_logged = false;
  for (const Log& l : logs)
    error_logged =
        error_logged || (l.level == 2 && l.text.find("resync stopped") != std::string::npos);
  EXPECT_TRUE(error_logged);
  for (int tick = 0; tick < 100; ++tick) s.r.Tick();
  EXPECT_TRUE(All<ResyncRead>(s.r.TakeActions()).empty()) << "stopped: no more passes";
  EXPECT_EQ(All<SendState>(s.r.TakeActions()).size(), 0u)
      << "no resync_done: the peer stays Inconsistent";
}

}  // namespace
}  // namespace repld
