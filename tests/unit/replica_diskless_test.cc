// [disk] on_io_error = "detach" on a Primary: the disk that fails a data write, a read, an
// activity log write, a metadata write or a flush is Failed (a metadata or activity-log write
// under "pass_on" too), then the Primary goes on Diskless
// and serves through its connected UpToDate peer. The request that hit the error does not fail
// when the peer has the data; later reads go to the peer, later writes and flushes submit nothing
// locally and complete on the peer's acks. Without a peer the error reaches the client.
#include <gtest/gtest.h>

#include <cerrno>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 64 * kMiB;
const GenerationIds kAtX{0x1000, 0, {0x4000, 0}};

ReplicaOptions Options(const char* me, OnIoError on_io_error, uint32_t max_buffers = 2048) {
  ReplicaOptions o;
  o.max_buffers = max_buffers;
  o.node_name = me;
  o.data_bytes = kData;
  o.on_io_error = on_io_error;
  return o;
}

// A Primary connected to an UpToDate Secondary (which is not driven: the tests play its part).
struct Node {
  explicit Node(OnIoError on_io_error = OnIoError::kDetach, bool connected = true,
                uint32_t max_buffers = 2048)
      : primary(MakeReplica(Options("alpha", on_io_error, max_buffers), kAtX, {})) {
    if (connected) {
      PeerState peer;
      peer.disk = DiskState::kUpToDate;
      peer.ids = kAtX;
      peer.data_bytes = kData;
      primary.PeerUp(Replica::Handshake{peer, std::nullopt, false});
    }
    EXPECT_TRUE(primary.Promote(false).ok());
    (void)primary.TakeActions();
  }
  // A write that has reached the local disk and the peer: its frame's seq. The activity log's
  // transactions complete at once.
  uint64_t StartWrite(RequestId id, uint64_t offset) {
    primary.ClientWrite(id, offset, 4096, WriteKind::kData, false);
    std::vector<Action> actions = primary.TakeActions();
    for (const WriteAl& al : All<WriteAl>(actions)) {
      primary.AlWritten(al.plan.seq, 0);
      std::vector<Action> more = primary.TakeActions();
      actions.insert(actions.end(), more.begin(), more.end());
    }
    EXPECT_EQ(All<SubmitWrite>(actions).size(), 1u);
    const std::vector<SendData> sent = All<SendData>(actions);
    EXPECT_EQ(sent.size(), 1u);
    return sent.empty() ? 0 : sent[0].seq;
  }
  Replica primary;
};

std::vector<Complete> Completes(std::vector<Action> actions) {
  return All<Complete>(std::move(actions));
}

void ExpectDiskless(const Replica& r) {
  EXPECT_EQ(r.disk(), DiskState::kDiskless);
  EXPECT_TRUE(r.diskless_primary());
  EXPECT_TRUE(r.md().io_error);
  ASSERT_TRUE(r.Report().disk_failure.has_value());
  EXPECT_EQ(r.Report().disk_failure->error, EIO);
}

TEST(ReplicaDiskless, FailedWriteCompletesWhenThePeerWroteIt) {
  Node n;
  const uint64_t seq = n.StartWrite(1, 0);
  n.primary.PeerAck(AckKind::kWritten, seq, 0);
  EXPECT_TRUE(Completes(n.primary.TakeActions()).empty());  // the local write is still out
  n.primary.LocalWriteDone(1, EIO);
  const std::vector<Action> actions = n.primary.TakeActions();
  const std::vector<DiskFailed> failed = All<DiskFailed>(actions);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(failed[0].detach);
  EXPECT_TRUE(failed[0].primary);
  const std::vector<Complete> done = Completes(actions);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  // The peer hears that this node is Diskless; the failure is recorded in the metadata.
  const std::vector<SendState> states = All<SendState>(actions);
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back().state.disk, DiskState::kDiskless);
  bool recorded = false;
  for (const PersistMd& p : All<PersistMd>(actions)) {
    recorded = recorded || (p.md.io_error && p.md.disk == DiskState::kFailed);
  }
  EXPECT_TRUE(recorded);
  ExpectDiskless(n.primary);
  EXPECT_TRUE(n.primary.CheckInvariants().empty()) << n.primary.CheckInvariants();
}

TEST(ReplicaDiskless, FailedWriteWaitsForThePeerThenCompletes) {
  Node n;
  const uint64_t seq = n.StartWrite(1, 0);
  n.primary.LocalWriteDone(1, EIO);
  EXPECT_TRUE(Completes(n.primary.TakeActions()).empty());  // the peer has not written it yet
  n.primary.PeerAck(AckKind::kWritten, seq, 0);
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
}

TEST(ReplicaDiskless, FailedWriteFailsWhenThePeerLeaves) {
  Node n;
  n.StartWrite(1, 0);
  n.primary.LocalWriteDone(1, EIO);
  (void)n.primary.TakeActions();
  n.primary.PeerDown("gone");
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
  // And nothing is served any more: the only copy of the data is gone.
  n.primary.ClientRead(2, 0, 4096);
  n.primary.ClientWrite(3, 0, 4096, WriteKind::kData, false);
  n.primary.ClientFlush(4);
  const std::vector<Complete> later = Completes(n.primary.TakeActions());
  ASSERT_EQ(later.size(), 3u);
  for (const Complete& c : later) EXPECT_EQ(c.error, EIO);
}

TEST(ReplicaDiskless, LaterIoGoesToThePeerOnly) {
  Node n;
  const uint64_t seq = n.StartWrite(1, 0);
  n.primary.PeerAck(AckKind::kWritten, seq, 0);
  n.primary.LocalWriteDone(1, EIO);
  (void)n.primary.TakeActions();

  // A read: a ReadRequest to the peer, no local read.
  n.primary.ClientRead(2, 8192, 4096);
  std::vector<Action> actions = n.primary.TakeActions();
  EXPECT_TRUE(All<SubmitRead>(actions).empty());
  const std::vector<SendReadRequest> reads = All<SendReadRequest>(actions);
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0].offset_bytes, 8192u);
  EXPECT_EQ(n.primary.RemoteRead(reads[0].seq), std::optional<RequestId>(2));
  n.primary.PeerReadReply(reads[0].seq, 0);
  std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);

  // A write to a cold extent: no activity log, no local write, done on the peer's WriteAck.
  n.primary.ClientWrite(3, 40 * kMiB, 4096, WriteKind::kData, true);
  actions = n.primary.TakeActions();
  EXPECT_TRUE(All<SubmitWrite>(actions).empty());
  EXPECT_TRUE(All<WriteAl>(actions).empty());
  EXPECT_TRUE(All<PersistBitmap>(actions).empty());
  const std::vector<SendData> sent = All<SendData>(actions);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(Completes(actions).empty());
  n.primary.PeerAck(AckKind::kReceived, sent[0].seq, 0);
  EXPECT_TRUE(Completes(n.primary.TakeActions()).empty());  // not before it is written
  n.primary.PeerAck(AckKind::kWritten, sent[0].seq, 0);
  done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);

  // A flush: the peer's, none here.
  n.primary.ClientFlush(4);
  actions = n.primary.TakeActions();
  EXPECT_TRUE(All<SubmitFlush>(actions).empty());
  const std::vector<SendFlush> flushes = All<SendFlush>(actions);
  ASSERT_EQ(flushes.size(), 1u);
  EXPECT_TRUE(Completes(actions).empty());
  n.primary.PeerAck(AckKind::kFlushed, flushes[0].seq, 0);
  done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  EXPECT_TRUE(n.primary.CheckInvariants().empty()) << n.primary.CheckInvariants();
}

TEST(ReplicaDiskless, FailedReadIsRetriedFromThePeer) {
  Node n;
  n.primary.ClientRead(1, 4096, 4096);
  ASSERT_EQ(All<SubmitRead>(n.primary.TakeActions()).size(), 1u);
  n.primary.LocalReadDone(1, EIO);
  const std::vector<Action> actions = n.primary.TakeActions();
  EXPECT_TRUE(Completes(actions).empty());
  EXPECT_EQ(All<DiskFailed>(actions).size(), 1u);
  const std::vector<SendReadRequest> reads = All<SendReadRequest>(actions);
  ASSERT_EQ(reads.size(), 1u);
  n.primary.PeerReadReply(reads[0].seq, 0);
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  ExpectDiskless(n.primary);
}

TEST(ReplicaDiskless, FailedFlushCompletesOnThePeersFlush) {
  Node n;
  n.primary.ClientFlush(1);
  std::vector<Action> actions = n.primary.TakeActions();
  const std::vector<SubmitFlush> local = All<SubmitFlush>(actions);
  const std::vector<SendFlush> sent = All<SendFlush>(actions);
  ASSERT_EQ(local.size(), 1u);
  ASSERT_EQ(sent.size(), 1u);
  n.primary.LocalFlushDone(local[0].token, EIO);
  actions = n.primary.TakeActions();
  EXPECT_EQ(All<DiskFailed>(actions).size(), 1u);
  EXPECT_TRUE(Completes(actions).empty());
  n.primary.PeerAck(AckKind::kFlushed, sent[0].seq, 0);
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  ExpectDiskless(n.primary);
}

// A client write whose activity-log transaction fails: what the Primary does next.
std::vector<Action> FailTheActivityLogWrite(Node& n) {
  n.primary.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  const std::vector<WriteAl> al = All<WriteAl>(n.primary.TakeActions());
  EXPECT_EQ(al.size(), 1u);
  if (al.empty()) return {};
  n.primary.AlWritten(al[0].plan.seq, EIO);
  return n.primary.TakeActions();
}

TEST(ReplicaDiskless, FailedActivityLogWriteSendsTheWritesToThePeer) {
  Node n;
  std::vector<Action> actions = FailTheActivityLogWrite(n);
  EXPECT_EQ(All<DiskFailed>(actions).size(), 1u);
  EXPECT_TRUE(All<SubmitWrite>(actions).empty());
  const std::vector<SendData> sent = All<SendData>(actions);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(Completes(actions).empty());
  n.primary.PeerAck(AckKind::kWritten, sent[0].seq, 0);
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  ExpectDiskless(n.primary);
}

TEST(ReplicaDiskless, FailedMetadataWriteGoesDiskless) {
  Node n;
  n.primary.MetadataWriteFailed("writing the superblock", EIO);
  const std::vector<Action> actions = n.primary.TakeActions();
  ASSERT_EQ(All<DiskFailed>(actions).size(), 1u);
  ExpectDiskless(n.primary);
  EXPECT_EQ(n.primary.Report().disk_failure->what, "writing the superblock");
  // No metadata write is asked of a disk that is gone.
  n.primary.Tick();
  n.primary.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  const std::vector<Action> later = n.primary.TakeActions();
  EXPECT_TRUE(All<PersistMd>(later).empty());
  EXPECT_TRUE(All<PersistBitmap>(later).empty());
  EXPECT_TRUE(All<WriteAl>(later).empty());
}

TEST(ReplicaDiskless, WithoutAPeerTheFailedWriteGetsTheError) {
  Node n(OnIoError::kDetach, /*connected=*/false);
  n.primary.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  std::vector<Action> actions = n.primary.TakeActions();
  for (const WriteAl& al : All<WriteAl>(actions)) n.primary.AlWritten(al.plan.seq, 0);
  (void)n.primary.TakeActions();
  n.primary.LocalWriteDone(1, EIO);
  actions = n.primary.TakeActions();
  EXPECT_EQ(All<DiskFailed>(actions).size(), 1u);
  std::vector<Complete> done = Completes(actions);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
  ExpectDiskless(n.primary);
  n.primary.ClientRead(2, 0, 4096);
  done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
}

TEST(ReplicaDiskless, PassOnReturnsTheErrorAndKeepsTheDisk) {
  Node n(OnIoError::kPassOn);
  const uint64_t seq = n.StartWrite(1, 0);
  n.primary.PeerAck(AckKind::kWritten, seq, 0);
  n.primary.LocalWriteDone(1, EIO);
  const std::vector<Action> actions = n.primary.TakeActions();
  EXPECT_TRUE(All<DiskFailed>(actions).empty());
  const std::vector<Complete> done = Completes(actions);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
  EXPECT_EQ(n.primary.disk(), DiskState::kUpToDate);
  EXPECT_GT(n.primary.bitmap().OutOfSyncBytes(), 0u);  // the block differs: marked
}

// Under pass_on a Primary's failed metadata write keeps its disk (the caller refuses further
// metadata changes), and an activity-log write that fails fails the writes that needed it.
TEST(ReplicaDiskless, PassOnKeepsTheDiskOnAFailedMetadataWrite) {
  Node n(OnIoError::kPassOn);
  n.primary.MetadataWriteFailed("writing the bitmap", EIO);
  EXPECT_TRUE(All<DiskFailed>(n.primary.TakeActions()).empty());
  EXPECT_EQ(n.primary.disk(), DiskState::kUpToDate);
  std::vector<Action> actions = FailTheActivityLogWrite(n);
  EXPECT_TRUE(All<DiskFailed>(actions).empty());
  EXPECT_TRUE(All<SendData>(actions).empty());
  const std::vector<Complete> done = Completes(actions);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
  EXPECT_EQ(n.primary.disk(), DiskState::kUpToDate);
}

// A fast-failback Primary (a sync target, promoted while its UpToDate peer syncs it) whose
// disk fails: it goes Diskless and leaves the resync; the source stops sending it and keeps
// answering its reads.
TEST(ReplicaDiskless, AFastFailbackPrimaryLeavesTheResync) {
  const GenerationIds stayed{0x1000, 0, {0x4000, 0}};
  const GenerationIds moved_on{0x2000, 0x1000, {0x1000, 0x4000}};
  Replica target = MakeReplica(Options("beta", OnIoError::kDetach), stayed, {});
  Replica source = MakeReplica(Options("alpha", OnIoError::kDetach), moved_on, {{0, 4 * kMiB}});
  target.PeerUp(Replica::Handshake{source.LocalState(), std::nullopt, false});
  source.PeerUp(Replica::Handshake{target.LocalState(), std::nullopt, false});
  ExchangeBitmaps(target, source);
  ASSERT_EQ(source.Report().repl, ReplState::kSyncSource);
  ASSERT_TRUE(target.Promote(false).ok());
  (void)target.TakeActions();
  ASSERT_EQ(target.role(), Role::kPrimary);
  // A read of a block in sync on the target is local; it fails.
  target.ClientRead(1, 8 * kMiB, 4096);
  ASSERT_EQ(All<SubmitRead>(target.TakeActions()).size(), 1u);
  target.LocalReadDone(1, EIO);
  std::vector<Action> actions = target.TakeActions();
  EXPECT_EQ(target.disk(), DiskState::kDiskless);
  EXPECT_NE(target.Report().repl, ReplState::kSyncTarget);
  const std::vector<SendReadRequest> reads = All<SendReadRequest>(actions);
  ASSERT_EQ(reads.size(), 1u);
  for (const SendState& st : All<SendState>(actions)) source.PeerStateChanged(st.state);
  EXPECT_EQ(source.Report().repl, ReplState::kEstablished);
  EXPECT_GT(source.bitmap().OutOfSyncBytes(), 0u);  // what the target's next disk lacks
  EXPECT_TRUE(source.PeerReadRequest(1, reads[0].seq, reads[0].offset_bytes, 4096));
  EXPECT_EQ(All<ReadForPeer>(source.TakeActions()).size(), 1u);
}

// The peer back on the same generation (nothing was written meanwhile: a diskless Primary
// without its peer serves nothing): in sync, and served through it again.
TEST(ReplicaDiskless, ADisklessPrimaryReconnectedInSyncServesAgain) {
  Node n;
  n.primary.MetadataWriteFailed("writing the superblock", EIO);
  n.primary.PeerDown("gone");
  (void)n.primary.TakeActions();
  n.primary.ClientRead(1, 0, 4096);
  std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
  PeerState peer;
  peer.disk = DiskState::kUpToDate;
  peer.ids = kAtX;
  peer.data_bytes = kData;
  n.primary.PeerConnecting();
  n.primary.PeerUp(Replica::Handshake{peer, std::nullopt, false});
  const std::vector<Action> actions = n.primary.TakeActions();
  EXPECT_TRUE(All<DropPeer>(actions).empty());
  EXPECT_TRUE(All<ResyncRead>(actions).empty());
  EXPECT_EQ(n.primary.conn(), ConnState::kConnected);
  EXPECT_EQ(n.primary.Report().repl, ReplState::kEstablished);
  n.primary.ClientRead(2, 0, 4096);
  EXPECT_EQ(All<SendReadRequest>(n.primary.TakeActions()).size(), 1u);
}

// A connect that would resync (the peer on another generation) is refused: a diskless node
// can neither send nor receive one.
TEST(ReplicaDiskless, ADisklessPrimaryRefusesAConnectThatWantsAResync) {
  Node n;
  n.primary.MetadataWriteFailed("writing the superblock", EIO);
  n.primary.PeerDown("gone");
  (void)n.primary.TakeActions();
  PeerState peer;
  peer.disk = DiskState::kUpToDate;
  peer.ids = GenerationIds{0x2000, 0x1000, {0x1000, 0x4000}};
  peer.data_bytes = kData;
  n.primary.PeerConnecting();
  n.primary.PeerUp(Replica::Handshake{peer, std::nullopt, false});
  const std::vector<Action> actions = n.primary.TakeActions();
  EXPECT_TRUE(All<ResyncRead>(actions).empty());
  EXPECT_TRUE(All<SendOutOfSync>(actions).empty());
  EXPECT_EQ(n.primary.conn(), ConnState::kStandAlone);
  const std::vector<DropPeer> drops = All<DropPeer>(actions);
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_NE(drops[0].reason.find("no disk"), std::string::npos) << drops[0].reason;
  EXPECT_FALSE(drops[0].reconnect);
}

// A write waiting for room in the peer's window when the peer goes: it fails too (there is
// no local write to complete it).
TEST(ReplicaDiskless, AWaitingWriteFailsWhenThePeerGoes) {
  Node n(OnIoError::kDetach, true, /*max_buffers=*/1);
  n.primary.MetadataWriteFailed("writing the superblock", EIO);
  (void)n.primary.TakeActions();
  n.primary.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  n.primary.ClientWrite(2, 8192, 4096, WriteKind::kData, false);
  std::vector<Action> actions = n.primary.TakeActions();
  ASSERT_EQ(All<SendData>(actions).size(), 1u);  // the second waits: the window is full
  n.primary.PeerDown("gone");
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 2u);
  for (const Complete& c : done) EXPECT_EQ(c.error, EIO);
  EXPECT_TRUE(n.primary.CheckInvariants().empty()) << n.primary.CheckInvariants();
}

// Review findings: a diskless node is never promoted, not even with --force (its "data" is no
// disk at all, and the peer's is the only copy).
TEST(ReplicaDiskless, ADemotedDisklessPrimaryIsNotPromotedEvenWithForce) {
  Node n(OnIoError::kDetach, /*connected=*/false);
  n.primary.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  for (const WriteAl& al : All<WriteAl>(n.primary.TakeActions()))
    n.primary.AlWritten(al.plan.seq, 0);
  (void)n.primary.TakeActions();
  n.primary.LocalWriteDone(1, EIO);
  (void)n.primary.TakeActions();
  ASSERT_EQ(n.primary.disk(), DiskState::kDiskless);
  ASSERT_TRUE(n.primary.Demote(0).ok());
  for (bool force : {false, true}) {
    const Status s = n.primary.Promote(force);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("no disk"), std::string::npos) << s.message();
  }
}

// A Primary whose peer failed a write (the block is marked: only this disk had it) cannot go on
// through that peer when its own disk fails: the peer's copy of the block is stale.
TEST(ReplicaDiskless, APrimaryWithBlocksOnlyItsDiskHadDoesNotServeFromThePeer) {
  Node n;
  const uint64_t seq = n.StartWrite(1, 0);
  n.primary.LocalWriteDone(1, 0);
  n.primary.PeerAck(AckKind::kWritten, seq, EIO);  // the peer failed it: marked here
  (void)n.primary.TakeActions();
  ASSERT_GT(n.primary.Report().out_of_sync_bytes, 0u);
  const uint64_t seq2 = n.StartWrite(2, 8 * kMiB);
  n.primary.PeerAck(AckKind::kWritten, seq2, 0);
  n.primary.LocalWriteDone(2, EIO);
  const std::vector<Action> actions = n.primary.TakeActions();
  const std::vector<DropPeer> drops = All<DropPeer>(actions);
  ASSERT_EQ(drops.size(), 1u) << "no serving through a stale peer";
  EXPECT_FALSE(drops[0].reconnect);
  n.primary.PeerDown("dropped");
  n.primary.ClientRead(3, 0, 4096);
  const std::vector<Complete> done = Completes(n.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, EIO);
  // StandAlone, as it shows: 'replctl connect' connects it again.
  EXPECT_EQ(n.primary.Report().conn, ConnState::kStandAlone);
  const Result<bool> connect = n.primary.Connect(false);
  ASSERT_TRUE(connect.ok());
  EXPECT_TRUE(connect.value());
}

// A node without a disk answers the peer's writes with EIO (the sender marks them) instead of
// submitting them to a failed disk.
TEST(ReplicaDiskless, ADisklessNodeAnswersThePeersWritesWithAnError) {
  Node n;
  const uint64_t seq = n.StartWrite(1, 0);
  n.primary.PeerAck(AckKind::kWritten, seq, 0);
  n.primary.LocalWriteDone(1, EIO);  // Diskless, serving through the peer
  (void)n.primary.TakeActions();
  ASSERT_TRUE(n.primary.diskless_primary());
  ASSERT_EQ(n.primary.conn(), ConnState::kConnected);
  ASSERT_TRUE(n.primary.Demote(0).ok());  // the peer takes over; this node stays connected
  (void)n.primary.TakeActions();
  EXPECT_FALSE(n.primary.PeerData(7, 1, 0, 4096, WriteKind::kData, false));
  const std::vector<SendAck> acks = All<SendAck>(n.primary.TakeActions());
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].error, EIO);
}

// A disk whose metadata records a failure is resynced whole from the peer when it is attached
// again: writes it missed while failed (a diskless Primary's) are recorded nowhere else.
TEST(ReplicaDiskless, ADiskThatFailedIsResyncedWholeWhenAttachedAgain) {
  MdState md;
  md.ids = kAtX;
  md.disk = DiskState::kFailed;
  md.io_error = true;
  Replica r(Options("alpha", OnIoError::kDetach), md,
            ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 0), Bitmap(kData));
  EXPECT_EQ(r.disk(), DiskState::kInconsistent);
  EXPECT_EQ(r.Report().out_of_sync_bytes, kData);
}

}  // namespace
}  // namespace repld
