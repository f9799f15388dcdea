// Fast failback: a sync target promoted while connected to its UpToDate peer serves at once,
// reading the blocks it lacks from the peer, and its writes count only once the peer has them.
#include <gtest/gtest.h>

#include <cerrno>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 64 * kMiB;
constexpr uint64_t kX = 0x1000, kY = 0x2000, kOld = 0x4000;

ReplicaOptions Options(const char* me, Protocol protocol = Protocol::kC) {
  ReplicaOptions o;
  o.node_name = me;
  o.data_bytes = kData;
  o.resync_block_bytes = kMiB;
  o.protocol = protocol;
  o.remote_reads_window = 2;
  o.peer_reads_max = 4;
  return o;
}

// The target stayed at generation X; the source moved on and marked [0, 4 MiB).
const GenerationIds kStayed{kX, 0, {kOld, 0}};
const GenerationIds kMovedOn{kY, kX, {kX, kOld}};

// Two nodes connected and resyncing, the source Secondary (its Primary stepped down).
struct Pair {
  explicit Pair(Protocol protocol = Protocol::kC)
      : target(MakeReplica(Options("beta", protocol), kStayed, {})),
        source(MakeReplica(Options("alpha", protocol), kMovedOn, {{0, 4 * kMiB}})) {
    target.PeerUp(source.LocalState());
    source.PeerUp(target.LocalState());
    for (const SendOutOfSync& f : All<SendOutOfSync>(target.TakeActions())) {
      source.PeerOutOfSync(f.runs, f.last);
    }
    source_actions = source.TakeActions();
    for (const SendOutOfSync& f : All<SendOutOfSync>(source_actions)) {
      target.PeerOutOfSync(f.runs, f.last);  // the merged bitmap, back to the target
    }
    target.PeerStateChanged(source.LocalState());
    target.TakeActions();
  }
  // Fast failback: the target asks, the source agrees, the target is promoted; its State (to
  // the source) taken.
  bool PromoteTarget() {
    if (!target.Promote(false).ok()) return false;
    for (const SendPromoteRequest& q : All<SendPromoteRequest>(target.TakeActions())) {
      source.PeerPromoteRequest(q.token);
    }
    for (const SendPromoteReply& r : All<SendPromoteReply>(source.TakeActions())) {
      target.PeerPromoteReply(r.token, r.granted, r.reason);
    }
    promotion_states = All<SendState>(target.TakeActions()).size();
    return target.role() == Role::kPrimary;
  }
  size_t promotion_states = 0;  // States the promotion sent
  Replica target;
  Replica source;
  std::vector<Action> source_actions;
};

// A client write, through the activity log: returns the write's frame to the peer.
std::vector<SendData> Write(Replica& r, RequestId id, uint64_t offset, uint64_t length) {
  r.ClientWrite(id, offset, length, WriteKind::kData, false);
  std::vector<Action> a = r.TakeActions();
  for (const WriteAl& al : All<WriteAl>(a)) {
    r.AlWritten(al.plan.seq, 0);
    a = r.TakeActions();
  }
  return All<SendData>(a);
}

TEST(ReplicaFastFailback, ATargetConnectedToAnUpToDatePeerIsPromotedAndStaysInconsistent) {
  Pair p;
  ASSERT_EQ(p.target.Report().repl, ReplState::kSyncTarget);
  EXPECT_EQ(p.target.Report().out_of_sync_bytes, 4 * kMiB) << "the source's bitmap came back";
  Status forced = p.target.Promote(true);
  ASSERT_FALSE(forced.ok());
  EXPECT_NE(forced.message().find("Without --force it becomes Primary at once"), std::string::npos);
  ASSERT_TRUE(p.PromoteTarget());
  EXPECT_EQ(p.target.disk(), DiskState::kInconsistent);
  EXPECT_EQ(p.target.md().ids, kStayed) << "no new generation: the peer's data still counts";
  EXPECT_EQ(p.promotion_states, 1u);
  // The source, told the target is Primary, does not follow its (stale) generation.
  p.source.PeerStateChanged(p.target.LocalState());
  EXPECT_EQ(p.source.md().ids.current, kY);
}

TEST(ReplicaFastFailback, NotConnectedToAnUpToDatePeerTheTargetIsNotPromoted) {
  Pair p;
  p.target.PeerDown("link cut");
  p.target.TakeActions();
  Status s = p.target.Promote(false);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(p.target.role(), Role::kSecondary);
}

TEST(ReplicaFastFailback, ReadsOfBlocksNotSyncedGoToThePeerTheOthersStayLocal) {
  Pair p;
  ASSERT_TRUE(p.PromoteTarget());
  p.target.ClientRead(1, 8 * kMiB, 4096);  // in sync here
  p.target.ClientRead(2, kMiB, 8192);      // marked: the peer has it
  std::vector<Action> a = p.target.TakeActions();
  ASSERT_EQ(All<SubmitRead>(a).size(), 1u);
  EXPECT_EQ(All<SubmitRead>(a)[0].id, 1u);
  const auto asked = All<SendReadRequest>(a);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].id, 2u);
  EXPECT_EQ(asked[0].offset_bytes, kMiB);
  EXPECT_EQ(p.target.RemoteRead(asked[0].seq), std::optional<RequestId>(2));
  p.target.PeerReadReply(asked[0].seq, 0);
  const auto done = All<Complete>(p.target.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, 2u);
  EXPECT_EQ(done[0].error, 0);
  EXPECT_EQ(p.target.Report().counters.peer_read_bytes, 8192u);
  EXPECT_EQ(p.target.RemoteRead(asked[0].seq), std::nullopt);
}

TEST(ReplicaFastFailback, RemoteReadsAreWindowedAndFailWhenThePeerLeaves) {
  Pair p;
  ASSERT_TRUE(p.PromoteTarget());
  for (RequestId id = 1; id <= 3; ++id) p.target.ClientRead(id, 0, 4096);
  EXPECT_EQ(All<SendReadRequest>(p.target.TakeActions()).size(), 2u) << "the window is 2";
  p.target.PeerDown("link cut");
  const auto failed = All<Complete>(p.target.TakeActions());
  ASSERT_EQ(failed.size(), 3u) << "in flight and waiting alike";
  for (const Complete& c : failed) EXPECT_EQ(c.error, EIO);
  // Apart, a block not synced cannot be read, one in sync can; writes and flushes fail.
  p.target.ClientRead(4, 0, 4096);
  p.target.ClientRead(5, 8 * kMiB, 4096);
  p.target.ClientWrite(6, 8 * kMiB, 4096, WriteKind::kData, false);
  p.target.ClientFlush(7);
  std::vector<Action> a = p.target.TakeActions();
  EXPECT_EQ(All<SubmitRead>(a).size(), 1u);
  EXPECT_TRUE(All<SubmitWrite>(a).empty());
  const auto c = All<Complete>(a);
  ASSERT_EQ(c.size(), 3u);
  for (const Complete& x : c) EXPECT_EQ(x.error, EIO) << "request " << x.id;
  EXPECT_EQ(p.target.md().ids, kStayed) << "no new generation while apart either";
}

TEST(ReplicaFastFailback, WritesCompleteOnlyOnceThePeerHasThemEvenUnderProtocolA) {
  Pair p(Protocol::kA);
  ASSERT_TRUE(p.PromoteTarget());
  const auto sent = Write(p.target, 1, 8 * kMiB, 4096);
  ASSERT_EQ(sent.size(), 1u);
  p.target.LocalWriteDone(1, 0);
  p.target.PeerSent(sent[0].seq);
  EXPECT_TRUE(All<Complete>(p.target.TakeActions()).empty()) << "handed is not enough here";
  p.target.PeerAck(AckKind::kWritten, sent[0].seq, 0);
  const auto done = All<Complete>(p.target.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  // A write the peer never confirms fails: the local disk's copy does not count.
  ASSERT_EQ(Write(p.target, 2, 8 * kMiB, 4096).size(), 1u);
  p.target.LocalWriteDone(2, 0);
  p.target.PeerDown("link cut");
  const auto lost = All<Complete>(p.target.TakeActions());
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].error, EIO);
  EXPECT_GE(p.target.Report().out_of_sync_bytes, 4 * kMiB + 4096) << "and its block is marked";
}

TEST(ReplicaFastFailback, AResyncBlockOlderThanAnUnconfirmedWriteIsRefusedThenSentAgain) {
  Pair p;
  ASSERT_TRUE(p.PromoteTarget());
  const auto sent = Write(p.target, 1, kMiB, 4096);
  ASSERT_EQ(sent.size(), 1u);
  // The source's block [1 MiB, 2 MiB) was read before our write reached it.
  ASSERT_FALSE(p.target.PeerData(100, 900, kMiB, kMiB, WriteKind::kData, /*resync=*/true));
  auto acks = All<SendAck>(p.target.TakeActions());
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 900u);
  EXPECT_EQ(acks[0].error, EAGAIN);
  // A block that does not overlap lands.
  EXPECT_TRUE(p.target.PeerData(101, 901, 2 * kMiB, kMiB, WriteKind::kData, true));
  EXPECT_EQ(All<ApplyPeerWrite>(p.target.TakeActions()).size(), 1u);
  p.target.ApplyDone(101, 0);
  p.target.TakeActions();
  EXPECT_EQ(p.target.Report().out_of_sync_bytes, 3 * kMiB) << "the landed block is in sync";
  // Once the peer confirmed our write, the same block (read after it) lands.
  p.target.LocalWriteDone(1, 0);
  p.target.PeerAck(AckKind::kWritten, sent[0].seq, 0);
  p.target.TakeActions();
  EXPECT_EQ(p.target.Report().out_of_sync_bytes, 3 * kMiB - 4096)
      << "the block the write covered whole is in sync";
  EXPECT_TRUE(p.target.PeerData(102, 902, kMiB, kMiB, WriteKind::kData, true));
  EXPECT_EQ(All<ApplyPeerWrite>(p.target.TakeActions()).size(), 1u);

  // The source: the refused block stays marked and goes again; the others are done.
  const auto reads = All<ResyncRead>(p.source_actions);
  ASSERT_EQ(reads.size(), 4u);
  for (const ResyncRead& r : reads) p.source.ResyncReadDone(r.token, 0);
  const auto frames = All<SendResync>(p.source.TakeActions());
  ASSERT_EQ(frames.size(), 4u);
  for (size_t i = 0; i < frames.size(); ++i) {
    const bool refused = reads[i].offset_bytes == kMiB;
    p.source.PeerAck(AckKind::kWritten, frames[i].seq, refused ? EAGAIN : 0);
  }
  std::vector<Action> again = p.source.TakeActions();
  EXPECT_TRUE(All<Log>(again).empty()) << "a stale block is no failure worth a warning";
  const auto reread = All<ResyncRead>(again);
  ASSERT_EQ(reread.size(), 1u);
  EXPECT_EQ(reread[0].offset_bytes, kMiB);
  EXPECT_EQ(p.source.Report().out_of_sync_bytes, kMiB);
}

TEST(ReplicaFastFailback, TheSourceAppliesAWriteOnlyAfterTheResyncReadOfItsRange) {
  Pair p;
  const auto reads = All<ResyncRead>(p.source_actions);
  ASSERT_FALSE(reads.empty());
  const ResyncRead first = reads[0];  // [0, 1 MiB)
  ASSERT_EQ(first.offset_bytes, 0u);
  // The promoted target's write to that range arrives while the block is being read.
  ASSERT_TRUE(p.source.PeerData(7, 50, 4096, 4096, WriteKind::kData, false));
  EXPECT_TRUE(All<ApplyPeerWrite>(p.source.TakeActions()).empty()) << "waits for the read";
  p.source.ResyncReadDone(first.token, 0);
  std::vector<Action> a = p.source.TakeActions();
  size_t resync_at = a.size(), apply_at = a.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::holds_alternative<SendResync>(a[i]) && resync_at == a.size()) resync_at = i;
    if (std::holds_alternative<ApplyPeerWrite>(a[i])) apply_at = i;
  }
  ASSERT_LT(resync_at, a.size());
  ASSERT_LT(apply_at, a.size());
  EXPECT_LT(resync_at, apply_at) << "the old block goes out before the write's ack can";
}

TEST(ReplicaFastFailback, ThePeerReadsAfterTheWritesSentBeforeTheRequest) {
  Pair p;
  ASSERT_TRUE(p.source.PeerData(7, 50, 8 * kMiB, 4096, WriteKind::kData, false));
  const auto applies = All<ApplyPeerWrite>(p.source.TakeActions());
  ASSERT_EQ(applies.size(), 1u);
  ASSERT_TRUE(p.source.PeerReadRequest(20, 51, 8 * kMiB, 8192));
  ASSERT_TRUE(p.source.PeerReadRequest(21, 52, 16 * kMiB, 4096));
  auto started = All<ReadForPeer>(p.source.TakeActions());
  ASSERT_EQ(started.size(), 1u) << "the overlapping one waits for the write to land";
  EXPECT_EQ(started[0].key, 21u);
  p.source.ApplyDone(7, 0);
  started = All<ReadForPeer>(p.source.TakeActions());
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].key, 20u);
  p.source.ReadForPeerDone(20, 0);
  const auto replies = All<SendReadReply>(p.source.TakeActions());
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].seq, 51u);
  EXPECT_EQ(replies[0].error, 0);
  EXPECT_TRUE(replies[0].send);
}

TEST(ReplicaFastFailback, ThePeerRefusesReadsBeyondTheDataAndDropsAFlood) {
  Pair p;
  EXPECT_FALSE(p.source.PeerReadRequest(1, 60, kData, 4096));
  auto replies = All<SendReadReply>(p.source.TakeActions());
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].error, EINVAL);
  for (uint64_t key = 2; key < 6; ++key) {
    EXPECT_TRUE(p.source.PeerReadRequest(key, 60 + key, 0, 4096));
  }
  EXPECT_FALSE(p.source.PeerReadRequest(6, 66, 0, 4096)) << "peer_reads_max is 4";
  EXPECT_EQ(All<DropPeer>(p.source.TakeActions()).size(), 1u);
  // A read that finishes after its connection is gone is not answered.
  p.source.PeerDown("dropped");
  p.source.ReadForPeerDone(2, 0);
  replies = All<SendReadReply>(p.source.TakeActions());
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_FALSE(replies[0].send);
}

TEST(ReplicaFastFailback, AResyncBlockHeldBehindOurConfirmedWriteLandsWhenTheWriteDoes) {
  Pair p;
  ASSERT_TRUE(p.PromoteTarget());
  const auto sent = Write(p.target, 1, kMiB, 4096);
  ASSERT_EQ(sent.size(), 1u);
  p.target.PeerAck(AckKind::kWritten, sent[0].seq, 0);  // the peer has it; our disk not yet
  p.target.TakeActions();
  ASSERT_TRUE(p.target.PeerData(100, 900, kMiB, kMiB, WriteKind::kData, /*resync=*/true));
  EXPECT_TRUE(All<ApplyPeerWrite>(p.target.TakeActions()).empty()) << "behind our write";
  p.target.LocalWriteDone(1, 0);
  EXPECT_EQ(All<ApplyPeerWrite>(p.target.TakeActions()).size(), 1u) << "and not stuck there";
}

TEST(ReplicaFastFailback, AResyncBlockOfAnEarlierConnectionClearsNothing) {
  Pair p;
  ASSERT_TRUE(p.target.PeerData(100, 900, 0, kMiB, WriteKind::kData, /*resync=*/true));
  ASSERT_EQ(All<ApplyPeerWrite>(p.target.TakeActions()).size(), 1u);
  p.target.PeerDown("link cut");
  p.target.PeerUp(p.source.LocalState());  // a new connection, the target again
  p.target.TakeActions();
  const uint64_t marked = p.target.Report().out_of_sync_bytes;
  p.target.ApplyDone(100, 0);  // the old connection's block lands now
  p.target.TakeActions();
  EXPECT_EQ(p.target.Report().out_of_sync_bytes, marked);
}

TEST(ReplicaFastFailback, TheSourceNeedsNoResyncOfBlocksThePrimaryWroteWhole) {
  Pair p;
  ASSERT_EQ(p.source.Report().out_of_sync_bytes, 4 * kMiB);
  ASSERT_TRUE(p.source.PeerData(7, 50, 2 * kMiB + 512, 3 * 4096, WriteKind::kData, false));
  ASSERT_EQ(All<ApplyPeerWrite>(p.source.TakeActions()).size(), 0u) << "the resync reads it";
  for (const ResyncRead& r : All<ResyncRead>(p.source_actions)) p.source.ResyncReadDone(r.token, 0);
  ASSERT_EQ(All<ApplyPeerWrite>(p.source.TakeActions()).size(), 1u);
  p.source.ApplyDone(7, 0);
  p.source.TakeActions();
  EXPECT_EQ(p.source.Report().out_of_sync_bytes, 4 * kMiB - 2 * 4096)
      << "the two blocks covered whole, not the two partly covered";
}

TEST(ReplicaFastFailback, ThePeersReadsCountUntilTheirAnswerLeft) {
  Pair p;
  ReplicaOptions o = Options("alpha");
  o.peer_read_bytes_max = kMiB;
  Replica source = MakeReplica(o, kMovedOn, {});
  source.PeerUp(p.target.LocalState());
  source.TakeActions();
  ASSERT_TRUE(source.PeerReadRequest(1, 10, 0, kMiB));
  ASSERT_TRUE(source.PeerReadRequest(2, 11, 8 * kMiB, kMiB));
  ASSERT_EQ(All<ReadForPeer>(source.TakeActions()).size(), 1u) << "1 MiB at a time";
  source.ReadForPeerDone(1, 0);
  EXPECT_TRUE(All<ReadForPeer>(source.TakeActions()).empty()) << "its answer is still queued";
  source.ReadReplySent(1);
  const auto next = All<ReadForPeer>(source.TakeActions());
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].key, 2u);
}

TEST(ReplicaFastFailback, APrimaryWhoseDiskIsNotUpToDateReconnectsAsTheTarget) {
  SyncSide fast_failback{kStayed, DiskState::kInconsistent, Role::kPrimary, 4 * kMiB};
  SyncSide peer{kMovedOn, DiskState::kUpToDate, Role::kSecondary, 4 * kMiB};
  EXPECT_EQ(DecideSync(fast_failback, peer).plan, SyncPlan::kTarget);
  EXPECT_EQ(DecideSync(peer, fast_failback).plan, SyncPlan::kBitmapSource);
  SyncSide primary_up_to_date = fast_failback;
  primary_up_to_date.disk = DiskState::kUpToDate;
  primary_up_to_date.ids = kStayed;
  EXPECT_EQ(DecideSync(primary_up_to_date, peer).plan, SyncPlan::kRefuse);
}

}  // namespace
}  // namespace repld
