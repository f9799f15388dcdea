// [disk] on_io_error: a Secondary whose disk fails the Primary's write (or a flush for it) never
// stays UpToDate. "detach" marks the disk Failed and asks for the detach; "pass_on" sends the
// error on, marks the disk Inconsistent and reconnects, and the handshake resyncs it from the
// Primary. Either way it is not promoted with that disk, before or after a restart.
#include <gtest/gtest.h>

#include <cerrno>
#include <map>

#include "replica_actions.h"
#include "replication/md_state.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 64 * kMiB;
const GenerationIds kAtX{0x1000, 0, {0x4000, 0}};

ReplicaOptions Options(const char* me, OnIoError on_io_error) {
  ReplicaOptions o;
  o.node_name = me;
  o.data_bytes = kData;
  o.resync_block_bytes = kMiB;
  o.on_io_error = on_io_error;
  return o;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Two connected nodes, both UpToDate at X, alpha Primary. Route() carries the actions of one
// to the other and completes every local I/O at once, successfully, until both are quiet.
struct Pair {
  explicit Pair(OnIoError on_io_error)
      : primary(MakeReplica(Options("alpha", on_io_error), kAtX, {})),
        secondary(MakeReplica(Options("beta", on_io_error), kAtX, {})) {
    Connect();
    EXPECT_TRUE(primary.Promote(false).ok());
    Route();
  }
  void Connect() {
    primary.PeerUp(secondary.LocalState());
    secondary.PeerUp(primary.LocalState());
  }
  // A client write on the Primary, routed until the Secondary has to write it: the key.
  uint64_t WriteUntilApply(RequestId id, uint64_t offset, uint64_t length) {
    primary.ClientWrite(id, offset, length, WriteKind::kData, false);
    Route();
    EXPECT_EQ(pending_applies.size(), 1u);
    const uint64_t key = pending_applies.begin()->first;
    pending_applies.clear();
    return key;
  }
  void Route(bool hold_applies = true) {
    for (int round = 0; round < 1000; ++round) {
      std::vector<Action> a = primary.TakeActions();
      std::vector<Action> b = secondary.TakeActions();
      if (a.empty() && b.empty()) return;
      for (Action& x : a) Carry(primary, secondary, x, hold_applies);
      for (Action& x : b) Carry(secondary, primary, x, hold_applies);
    }
    ADD_FAILURE() << "the two nodes never went quiet";
  }
  void Carry(Replica& from, Replica& to, Action& action, bool hold_applies) {
    if (auto* w = std::get_if<SubmitWrite>(&action)) from.LocalWriteDone(w->id, 0);
    if (auto* f = std::get_if<SubmitFlush>(&action)) from.LocalFlushDone(f->token, 0);
    if (auto* al = std::get_if<WriteAl>(&action)) from.AlWritten(al->plan.seq, 0);
    if (auto* d = std::get_if<SendData>(&action)) {
      const Write& w = writes.at(d->id);
      to.PeerData(next_key, d->seq, w.offset, w.length, WriteKind::kData, false);
      frames[next_key++] = {d->seq, w.offset, w.length};
    }
    if (auto* f = std::get_if<SendFlush>(&action)) to.PeerFlush(f->seq);
    if (auto* q = std::get_if<SendPromoteRequest>(&action)) to.PeerPromoteRequest(q->token);
    if (auto* r = std::get_if<SendPromoteReply>(&action)) {
      to.PeerPromoteReply(r->token, r->granted, r->reason);
    }
    if (auto* ap = std::get_if<ApplyPeerWrite>(&action)) {
      if (hold_applies) {
        pending_applies[ap->key] = true;
      } else {
        from.ApplyDone(ap->key, 0);
      }
    }
    if (auto* ack = std::get_if<SendAck>(&action)) to.PeerAck(ack->kind, ack->seq, ack->error);
    if (auto* r = std::get_if<ResyncRead>(&action)) {
      resync_reads[r->token] = {0, r->offset_bytes, r->length_bytes};
      from.ResyncReadDone(r->token, 0);
    }
    if (auto* s = std::get_if<SendResync>(&action)) {
      const Frame& r = resync_reads.at(s->token);
      to.PeerData(next_key++, s->seq, r.offset, r.length, WriteKind::kData, true);
    }
    if (auto* s = std::get_if<SendState>(&action)) to.PeerStateChanged(s->state);
    if (auto* o = std::get_if<SendOutOfSync>(&action)) to.PeerOutOfSync(o->runs, o->last);
    if (auto* f = std::get_if<DiskFailed>(&action)) failures.push_back(*f);
    if (auto* p = std::get_if<PersistMd>(&action)) {
      (&from == &secondary ? secondary_md : primary_md) = p->md;
    }
    if (auto* d = std::get_if<DropPeer>(&action)) drops.push_back(*d);
  }
  struct Write {
    uint64_t offset, length;
  };
  struct Frame {
    uint64_t seq, offset, length;
  };
  Replica primary;
  Replica secondary;
  std::map<RequestId, Write> writes;
  std::map<uint64_t, Frame> frames;
  std::map<uint64_t, Frame> resync_reads;
  std::map<uint64_t, bool> pending_applies;
  std::vector<DiskFailed> failures;
  std::vector<DropPeer> drops;
  std::optional<MdState> primary_md, secondary_md;
  uint64_t next_key = 1;
};

TEST(ReplicaIoError, UnderDetachAFailedApplyMarksTheDiskFailedAndAsksForTheDetach) {
  Pair p(OnIoError::kDetach);
  p.writes[1] = {4 * kMiB, 64 * 1024};
  const uint64_t key = p.WriteUntilApply(1, 4 * kMiB, 64 * 1024);
  p.secondary.ApplyDone(key, EIO);
  std::vector<Action> a = p.secondary.TakeActions();
  const auto acks = All<SendAck>(a);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].error, EIO) << "the Primary hears the error";
  const auto failed = All<DiskFailed>(a);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(failed[0].detach);
  EXPECT_EQ(failed[0].failure.error, EIO);
  EXPECT_TRUE(Contains(failed[0].failure.what, "at byte 4194304")) << failed[0].failure.what;
  EXPECT_EQ(p.secondary.disk(), DiskState::kFailed);
  const auto md = All<PersistMd>(a);
  ASSERT_FALSE(md.empty());
  EXPECT_EQ(md.back().md.disk, DiskState::kFailed);
  EXPECT_TRUE(md.back().md.io_error) << "recorded in the superblock where the disk takes it";
  EXPECT_TRUE(All<DropPeer>(a).empty()) << "the detach drops the peer, as replctl detach does";
  EXPECT_EQ(p.secondary.Report().out_of_sync_bytes, 64 * 1024u) << "its own bitmap marks it";
  ASSERT_TRUE(p.secondary.Report().disk_failure.has_value());

  // The Primary's client write succeeds (the local disk has it) and the block is marked.
  p.primary.PeerAck(AckKind::kWritten, p.frames.at(key).seq, EIO);
  const auto done = All<Complete>(p.primary.TakeActions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0);
  EXPECT_EQ(p.primary.Report().out_of_sync_bytes, 64 * 1024u);

  // A second failure while detaching asks for nothing more.
  p.secondary.PeerFlush(1000);
  for (const SubmitFlush& f : All<SubmitFlush>(p.secondary.TakeActions())) {
    p.secondary.LocalFlushDone(f.token, EIO);
  }
  EXPECT_TRUE(All<DiskFailed>(p.secondary.TakeActions()).empty());
}

TEST(ReplicaIoError, AFailedDiskIsNotPromotedEvenWithForceAndTheRefusalSaysWhy) {
  Pair p(OnIoError::kDetach);
  p.writes[1] = {0, 4096};
  const uint64_t key = p.WriteUntilApply(1, 0, 4096);
  p.secondary.ApplyDone(key, EIO);
  p.secondary.TakeActions();
  p.primary.PeerDown("killed");
  p.secondary.PeerDown("the Primary is gone");
  p.secondary.TakeActions();
  for (bool force : {false, true}) {
    Status s = p.secondary.Promote(force);
    ASSERT_FALSE(s.ok());
    EXPECT_TRUE(Contains(s.message(), "the disk failed a write of the peer's at byte 0"))
        << s.message();
    EXPECT_TRUE(Contains(s.message(), "replctl attach")) << s.message();
  }
  EXPECT_EQ(p.secondary.role(), Role::kSecondary);
}

TEST(ReplicaIoError, UnderDetachAFailedFlushForThePeerDetachesToo) {
  Pair p(OnIoError::kDetach);
  p.secondary.PeerFlush(77);
  const auto flushes = All<SubmitFlush>(p.secondary.TakeActions());
  ASSERT_EQ(flushes.size(), 1u);
  p.secondary.LocalFlushDone(flushes[0].token, EIO);
  std::vector<Action> a = p.secondary.TakeActions();
  const auto acks = All<SendAck>(a);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].kind, AckKind::kFlushed);
  EXPECT_EQ(acks[0].error, EIO);
  const auto failed = All<DiskFailed>(a);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(failed[0].detach);
  EXPECT_EQ(failed[0].failure.what, "flushing the peer's writes");
  EXPECT_EQ(p.secondary.disk(), DiskState::kFailed);
}

TEST(ReplicaIoError, AResyncWriteFailsOnAFullDiskWithoutDetachingButOnABadOneItDetaches) {
  for (int error : {ENOSPC, EIO}) {
    Replica source = MakeReplica(Options("alpha", OnIoError::kDetach), kAtX, {{0, kMiB}});
    MdState md;
    md.ids = kAtX;
    md.disk = DiskState::kInconsistent;
    Replica target(Options("beta", OnIoError::kDetach), md,
                   ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 0), Bitmap(kData));
    target.PeerUp(source.LocalState());
    ASSERT_EQ(target.Report().repl, ReplState::kSyncTarget);
    target.TakeActions();
    ASSERT_TRUE(target.PeerData(1, 10, 0, kMiB, WriteKind::kData, /*resync=*/true));
    target.TakeActions();
    target.ApplyDone(1, error);
    std::vector<Action> a = target.TakeActions();
    ASSERT_EQ(All<SendAck>(a).size(), 1u);
    EXPECT_EQ(All<SendAck>(a)[0].error, error);
    if (error == ENOSPC) {
      EXPECT_TRUE(All<DiskFailed>(a).empty()) << "the source tries again in its next pass";
      EXPECT_EQ(target.disk(), DiskState::kInconsistent);
    } else {
      ASSERT_EQ(All<DiskFailed>(a).size(), 1u);
      EXPECT_TRUE(Contains(All<DiskFailed>(a)[0].failure.what, "a resync write at byte 0"));
      EXPECT_EQ(target.disk(), DiskState::kFailed);
    }
  }
}

TEST(ReplicaIoError, UnderPassOnTheDiskBecomesInconsistentReconnectsAndIsResyncedFromThePrimary) {
  Pair p(OnIoError::kPassOn);
  p.writes[1] = {8 * kMiB, 8192};
  const uint64_t key = p.WriteUntilApply(1, 8 * kMiB, 8192);
  p.secondary.ApplyDone(key, EIO);
  std::vector<Action> a = p.secondary.TakeActions();
  ASSERT_EQ(All<SendAck>(a).size(), 1u);
  EXPECT_EQ(All<SendAck>(a)[0].error, EIO) << "passed on to the Primary";
  ASSERT_EQ(All<DiskFailed>(a).size(), 1u);
  EXPECT_FALSE(All<DiskFailed>(a)[0].detach);
  EXPECT_TRUE(All<DropPeer>(a).empty()) << "not before the error ack had time to leave";
  p.secondary.Tick();
  const auto drops = All<DropPeer>(p.secondary.TakeActions());
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_TRUE(drops[0].reconnect) << "the handshake that follows resyncs it";
  EXPECT_TRUE(Contains(drops[0].reason, "pass_on")) << drops[0].reason;
  p.secondary.Tick();
  EXPECT_TRUE(All<DropPeer>(p.secondary.TakeActions()).empty()) << "once per connection";
  EXPECT_EQ(p.secondary.disk(), DiskState::kInconsistent);
  const auto md = All<PersistMd>(a);
  ASSERT_FALSE(md.empty());
  EXPECT_EQ(md.back().md.disk, DiskState::kInconsistent) << "persisted";
  EXPECT_TRUE(md.back().md.io_error);
  EXPECT_EQ(p.secondary.Report().out_of_sync_bytes, 8192u) << "its own bitmap marks the range";

  // Not promotable in the meantime, with the reason.
  p.primary.PeerAck(AckKind::kWritten, p.frames.at(key).seq, EIO);
  p.primary.TakeActions();
  p.primary.PeerDown("dropped by the peer");
  p.secondary.PeerDown("dropped: pass_on");
  p.primary.TakeActions();
  p.secondary.TakeActions();
  Status refused = p.secondary.Promote(false);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.message(), "the disk failed a write of the peer's at byte 8388608"))
      << refused.message();

  // The reconnect: a resync from the UpToDate Primary, not a refusal; then UpToDate again.
  p.Connect();
  EXPECT_EQ(p.secondary.Report().repl, ReplState::kSyncTarget)
      << p.secondary.Report().sync_decision;
  p.Route(/*hold_applies=*/false);
  EXPECT_EQ(p.secondary.Report().repl, ReplState::kEstablished);
  EXPECT_EQ(p.secondary.disk(), DiskState::kUpToDate);
  EXPECT_FALSE(p.secondary.md().io_error) << "repaired: the record goes";
  EXPECT_EQ(p.primary.Report().out_of_sync_bytes, 0u);
  ASSERT_TRUE(p.secondary_md.has_value());
  EXPECT_FALSE(p.secondary_md->io_error);
}

TEST(ReplicaIoError, APassOnFailedFlushWithNothingMarkedStillGetsAResyncAtTheSameGeneration) {
  // The Primary kept its generation (it had a bitmap id already): the same current id on both.
  Pair p(OnIoError::kPassOn);
  p.secondary.PeerFlush(5);
  const auto flushes = All<SubmitFlush>(p.secondary.TakeActions());
  ASSERT_EQ(flushes.size(), 1u);
  p.secondary.LocalFlushDone(flushes[0].token, EIO);
  p.secondary.TakeActions();
  p.secondary.PeerDown("dropped: pass_on");
  p.secondary.TakeActions();
  EXPECT_EQ(p.secondary.Report().out_of_sync_bytes, 0u);
  PeerState primary = p.primary.LocalState();
  primary.ids = p.secondary.md().ids;
  p.secondary.PeerUp(primary);
  EXPECT_EQ(p.secondary.Report().repl, ReplState::kSyncTarget)
      << "never UpToDate on its own word: " << p.secondary.Report().sync_decision;
  EXPECT_EQ(p.secondary.disk(), DiskState::kInconsistent);
}

TEST(ReplicaIoError, AfterARestartTheMetadataStillSaysSoAndPromotionIsRefused) {
  // The superblock written when the disk failed, read back at the next start.
  MdState failed;
  failed.ids = kAtX;
  failed.disk = DiskState::kFailed;
  failed.io_error = true;
  Superblock sb;
  sb.flags = kMdConsistent | kMdWasUpToDate;
  const Superblock written = WithMdState(sb, failed);
  EXPECT_NE(written.flags & kMdIoError, 0u);
  EXPECT_EQ(written.flags & kMdConsistent, 0u);
  const MdState read = MdStateFromSuperblock(written);
  EXPECT_EQ(read.disk, DiskState::kInconsistent);
  EXPECT_TRUE(read.io_error);

  Replica r(Options("beta", OnIoError::kDetach), read,
            ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 0), Bitmap(kData));
  ASSERT_TRUE(r.Report().disk_failure.has_value());
  Status s = r.Promote(false);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.message(), "has not been repaired by a resync")) << s.message();
  EXPECT_EQ(r.role(), Role::kSecondary);
}

}  // namespace
}  // namespace repld
