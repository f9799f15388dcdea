// The UpToDate peer of a Primary whose disk failed under on_io_error = "detach" (the Primary goes
// on Diskless and writes through it, replica_diskless.cc). The peer holds the only good copy:
// before it applies the diskless Primary's first write it starts a new data generation (bitmap
// id = the old current id, a new current id, both persisted), and it marks every block it writes
// for that Primary. So the Primary's old disk, if it comes back still UpToDate on the old
// generation with the crash flag (its failure was never recorded), is the sync target of those
// blocks and never the source that would overwrite them.
#include <gtest/gtest.h>

#include <cerrno>
#include <optional>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 64 * kMiB;
constexpr uint64_t kX = 0x1000, kY = 0x2000, kOld = 0x4000;
const GenerationIds kAtX{kX, 0, {kOld, 0}};

ReplicaOptions Options(const char* me) {
  ReplicaOptions o;
  o.node_name = me;
  o.data_bytes = kData;
  o.resync_block_bytes = kMiB;
  o.on_io_error = OnIoError::kDetach;
  return o;
}

// The position of the first action of type T that `pred` accepts (none: nullopt).
template <typename T, typename Pred>
std::optional<size_t> IndexOf(const std::vector<Action>& actions, Pred pred) {
  for (size_t i = 0; i < actions.size(); ++i) {
    if (const T* t = std::get_if<T>(&actions[i]); t != nullptr && pred(*t)) return i;
  }
  return std::nullopt;
}
template <typename T>
std::optional<size_t> IndexOf(const std::vector<Action>& actions) {
  return IndexOf<T>(actions, [](const T&) { return true; });
}

void Append(std::vector<Action>& into, std::vector<Action> more) {
  into.insert(into.end(), more.begin(), more.end());
}

// Every block of [offset, offset+length) is marked in `bitmap`.
bool Marked(const Bitmap& bitmap, uint64_t offset, uint64_t length) {
  const uint64_t first = offset / kBitmapGrainBytes;
  const uint64_t last = (offset + length - 1) / kBitmapGrainBytes;
  return bitmap.FindNextClear(first) > last;
}

// alpha Primary, beta its UpToDate Secondary, both at generation X and in sync. The tests carry
// the frames between them by hand.
struct Pair {
  Pair()
      : alpha(MakeReplica(Options("alpha"), kAtX, {})),
        beta(MakeReplica(Options("beta"), kAtX, {})) {
    const PeerState a = alpha.LocalState(), b = beta.LocalState();
    alpha.PeerUp(Replica::Handshake{b, std::nullopt, false});
    beta.PeerUp(Replica::Handshake{a, std::nullopt, false});
    EXPECT_TRUE(alpha.Promote(false).ok());
    for (const SendState& s : All<SendState>(alpha.TakeActions())) beta.PeerStateChanged(s.state);
    (void)beta.TakeActions();
  }
  // alpha's disk fails (its superblock write: nothing on that disk records it): alpha is
  // Diskless and tells beta. Returns that State.
  PeerState AlphaDiskFails() {
    alpha.MetadataWriteFailed("writing the superblock", EIO);
    const std::vector<SendState> states = All<SendState>(alpha.TakeActions());
    EXPECT_FALSE(states.empty());
    EXPECT_EQ(alpha.disk(), DiskState::kDiskless);
    return states.empty() ? alpha.LocalState() : states.back().state;
  }
  // A client write on alpha: its frame's seq (alpha's activity log, if it asks, is written).
  uint64_t AlphaWrites(RequestId id, uint64_t offset, uint64_t length) {
    alpha.ClientWrite(id, offset, length, WriteKind::kData, false);
    std::vector<Action> actions = alpha.TakeActions();
    for (const WriteAl& al : All<WriteAl>(actions)) {
      alpha.AlWritten(al.plan.seq, 0);
      Append(actions, alpha.TakeActions());
    }
    for (const SubmitWrite& w : All<SubmitWrite>(actions)) alpha.LocalWriteDone(w.id, 0);
    const std::vector<SendData> sent = All<SendData>(actions);
    EXPECT_EQ(sent.size(), 1u);
    return sent.empty() ? 0 : sent[0].seq;
  }
  // beta applies the write whose frame is `seq` (kept as `key`) and acknowledges it to alpha.
  void BetaApplies(uint64_t key, uint64_t seq, uint64_t offset, uint64_t length) {
    ASSERT_TRUE(beta.PeerData(key, seq, offset, length, WriteKind::kData, false));
    std::vector<Action> actions = beta.TakeActions();
    ASSERT_TRUE(IndexOf<ApplyPeerWrite>(actions).has_value());
    beta.ApplyDone(key, 0);
    for (const SendAck& ack : All<SendAck>(beta.TakeActions())) {
      alpha.PeerAck(ack.kind, ack.seq, ack.error);
    }
    for (const SendState& s : All<SendState>(actions)) alpha.PeerStateChanged(s.state);
    (void)alpha.TakeActions();
  }
  Replica alpha;
  Replica beta;
};

// (a) The State that says the Primary is Diskless, then its first write, in one batch: the new
// generation is persisted before that write is applied, and so before it is acknowledged.
TEST(ReplicaDisklessPeer, StartsANewGenerationBeforeTheFirstWriteLands) {
  Pair p;
  const PeerState diskless = p.AlphaDiskFails();
  const uint64_t seq = p.AlphaWrites(1, 8 * kMiB, 4096);
  p.beta.PeerStateChanged(diskless);
  ASSERT_TRUE(p.beta.PeerData(7, seq, 8 * kMiB, 4096, WriteKind::kData, false));
  std::vector<Action> actions = p.beta.TakeActions();
  p.beta.ApplyDone(7, 0);
  Append(actions, p.beta.TakeActions());

  const GenerationIds& ids = p.beta.md().ids;
  EXPECT_NE(ids.current, kX);
  EXPECT_NE(ids.current, 0u);
  EXPECT_EQ(ids.bitmap, kX) << "the bitmap names the generation the old disk may claim";
  EXPECT_EQ(ids.history[0], kX);
  EXPECT_EQ(p.beta.disk(), DiskState::kUpToDate);
  const std::optional<size_t> persisted = IndexOf<PersistMd>(actions, [&](const PersistMd& m) {
    return m.md.ids == ids && m.md.disk == DiskState::kUpToDate;
  });
  const std::optional<size_t> bitmap = IndexOf<PersistBitmap>(actions);
  const std::optional<size_t> applied = IndexOf<ApplyPeerWrite>(actions);
  const std::optional<size_t> acked = IndexOf<SendAck>(
      actions, [&](const SendAck& a) { return a.kind == AckKind::kWritten && a.seq == seq; });
  ASSERT_TRUE(persisted.has_value()) << "the new generation is never persisted";
  ASSERT_TRUE(bitmap.has_value());
  ASSERT_TRUE(applied.has_value());
  ASSERT_TRUE(acked.has_value());
  EXPECT_LT(*persisted, *applied);
  EXPECT_LT(*bitmap, *applied);
  EXPECT_LT(*applied, *acked);
  EXPECT_EQ(acked.has_value() ? std::get<SendAck>(actions[*acked]).error : -1, 0);
  // The Primary hears of it (and follows it: the data it serves is beta's).
  const std::optional<size_t> told =
      IndexOf<SendState>(actions, [&](const SendState& s) { return s.state.ids == ids; });
  ASSERT_TRUE(told.has_value());
  p.alpha.PeerStateChanged(std::get<SendState>(actions[*told]).state);
  EXPECT_EQ(p.alpha.md().ids.current, ids.current);
  EXPECT_TRUE(p.beta.CheckInvariants().empty()) << p.beta.CheckInvariants();
  EXPECT_TRUE(p.alpha.CheckInvariants().empty()) << p.alpha.CheckInvariants();
}

// (a) The same when beta first hears of the diskless Primary in a handshake (the link broke
// before its State arrived, and the Primary connected again).
TEST(ReplicaDisklessPeer, StartsANewGenerationAtAHandshakeWithADisklessPrimary) {
  Pair p;
  p.alpha.MetadataWriteFailed("writing the superblock", EIO);
  p.alpha.PeerDown("link cut");
  p.beta.PeerDown("link cut");
  (void)p.alpha.TakeActions();
  (void)p.beta.TakeActions();
  ASSERT_EQ(p.beta.md().ids, kAtX);
  const PeerState a = p.alpha.LocalState(), b = p.beta.LocalState();
  p.alpha.PeerConnecting();
  p.beta.PeerConnecting();
  p.alpha.PeerUp(Replica::Handshake{b, std::nullopt, false});
  p.beta.PeerUp(Replica::Handshake{a, std::nullopt, false});
  EXPECT_EQ(p.alpha.conn(), ConnState::kConnected);
  ASSERT_EQ(p.beta.conn(), ConnState::kConnected);
  const std::vector<Action> actions = p.beta.TakeActions();
  EXPECT_EQ(p.beta.md().ids.bitmap, kX);
  EXPECT_NE(p.beta.md().ids.current, kX);
  EXPECT_TRUE(IndexOf<PersistMd>(actions, [&](const PersistMd& m) {
                return m.md.ids == p.beta.md().ids;
              }).has_value());
  // Its first write is marked (and persisted) before it is applied.
  const uint64_t seq = p.AlphaWrites(1, 0, 4096);
  ASSERT_TRUE(p.beta.PeerData(3, seq, 0, 4096, WriteKind::kData, false));
  const std::vector<Action> write = p.beta.TakeActions();
  ASSERT_TRUE(IndexOf<ApplyPeerWrite>(write).has_value());
  ASSERT_TRUE(IndexOf<PersistBitmap>(write).has_value());
  EXPECT_LT(*IndexOf<PersistBitmap>(write), *IndexOf<ApplyPeerWrite>(write));
  EXPECT_TRUE(Marked(p.beta.bitmap(), 0, 4096));
}

// (b) Every block beta writes for the diskless Primary is marked, and only those: a write of
// the Primary's from before its disk failed is on its old disk too.
TEST(ReplicaDisklessPeer, MarksTheBlocksItWritesForTheDisklessPrimary) {
  Pair p;
  const uint64_t before = p.AlphaWrites(1, 16 * kMiB, 4096);
  p.BetaApplies(1, before, 16 * kMiB, 4096);
  EXPECT_EQ(p.beta.Report().out_of_sync_bytes, 0u);

  p.beta.PeerStateChanged(p.AlphaDiskFails());
  const uint64_t s2 = p.AlphaWrites(2, 8 * kMiB, 4096);
  ASSERT_TRUE(p.beta.PeerData(2, s2, 8 * kMiB, 4096, WriteKind::kData, false));
  EXPECT_TRUE(Marked(p.beta.bitmap(), 8 * kMiB, 4096)) << "marked before it lands";
  EXPECT_TRUE(p.beta.CheckInvariants().empty()) << p.beta.CheckInvariants();
  const std::vector<Action> a2 = p.beta.TakeActions();
  p.beta.ApplyDone(2, 0);
  (void)p.beta.TakeActions();

  const uint64_t s3 = p.AlphaWrites(3, 40 * kMiB, 64 * 1024);
  p.BetaApplies(3, s3, 40 * kMiB, 64 * 1024);
  // The same block again: nothing new to mark, no bitmap write.
  const uint64_t s4 = p.AlphaWrites(4, 8 * kMiB, 4096);
  ASSERT_TRUE(p.beta.PeerData(4, s4, 8 * kMiB, 4096, WriteKind::kData, false));
  EXPECT_FALSE(IndexOf<PersistBitmap>(p.beta.TakeActions()).has_value());
  p.beta.ApplyDone(4, 0);
  (void)p.beta.TakeActions();

  EXPECT_TRUE(Marked(p.beta.bitmap(), 8 * kMiB, 4096));
  EXPECT_TRUE(Marked(p.beta.bitmap(), 40 * kMiB, 64 * 1024));
  EXPECT_FALSE(Marked(p.beta.bitmap(), 16 * kMiB, 4096));
  EXPECT_EQ(p.beta.Report().out_of_sync_bytes, 4096u + 64 * 1024);
  // The generation started once, for the first of them.
  EXPECT_EQ(p.beta.md().ids.bitmap, kX);
  EXPECT_EQ(p.beta.md().ids.history[0], kX);
  EXPECT_TRUE(p.beta.CheckInvariants().empty()) << p.beta.CheckInvariants();
}

// (c) The Primary's old disk comes back (a restart, or an attach of the same disk) UpToDate
// with the crash flag and the old generation: its superblock never learnt of the failure. beta
// is the sync source, the old disk the target of what beta wrote for the diskless Primary and
// of its own activity log's extents.
TEST(ReplicaDisklessPeer, TheOldDiskComingBackIsTheSyncTarget) {
  Pair p;
  p.beta.PeerStateChanged(p.AlphaDiskFails());
  const uint64_t s1 = p.AlphaWrites(1, 8 * kMiB, 4096);
  p.BetaApplies(1, s1, 8 * kMiB, 4096);
  const uint64_t s2 = p.AlphaWrites(2, 40 * kMiB, 64 * 1024);
  p.BetaApplies(2, s2, 40 * kMiB, 64 * 1024);
  p.beta.PeerDown("the diskless Primary stopped");
  (void)p.beta.TakeActions();

  MdState md;
  md.ids = kAtX;
  md.disk = DiskState::kUpToDate;
  md.primary = true;  // it crashed as Primary
  std::vector<uint32_t> al(16, kAlEmpty);
  al[0] = 0;  // extent 0, [0, 4 MiB), was hot
  Replica old(Options("alpha"), md, ActivityLog(al, 1), Bitmap(kData));
  ASSERT_TRUE(old.crashed_primary());
  ASSERT_GT(old.Report().out_of_sync_bytes, 0u);
  (void)old.TakeActions();

  const PeerState o = old.LocalState(), b = p.beta.LocalState();
  p.beta.PeerConnecting();
  old.PeerConnecting();
  p.beta.PeerUp(Replica::Handshake{o, std::nullopt, true});
  old.PeerUp(Replica::Handshake{b, std::nullopt, true});
  ASSERT_EQ(old.conn(), ConnState::kConnected) << old.Report().sync_decision;
  ASSERT_EQ(p.beta.conn(), ConnState::kConnected) << p.beta.Report().sync_decision;
  EXPECT_EQ(old.Report().repl, ReplState::kSyncTarget) << old.Report().sync_decision;
  EXPECT_EQ(old.disk(), DiskState::kInconsistent);
  EXPECT_EQ(p.beta.Report().repl, ReplState::kWFBitMapS) << p.beta.Report().sync_decision;
  EXPECT_EQ(old.Report().sync_decision.rfind("rule 40:", 0), 0u) << old.Report().sync_decision;

  // The target's bitmap (its activity log) goes to the source, the merged one comes back.
  for (const SendOutOfSync& f : All<SendOutOfSync>(old.TakeActions())) {
    p.beta.PeerOutOfSync(f.runs, f.last);
  }
  const std::vector<Action> source = p.beta.TakeActions();
  EXPECT_EQ(p.beta.Report().repl, ReplState::kSyncSource);
  for (const SendOutOfSync& f : All<SendOutOfSync>(source)) old.PeerOutOfSync(f.runs, f.last);
  for (const Bitmap* bm : {&p.beta.bitmap(), &old.bitmap()}) {
    EXPECT_TRUE(Marked(*bm, 8 * kMiB, 4096));
    EXPECT_TRUE(Marked(*bm, 40 * kMiB, 64 * 1024));
    EXPECT_TRUE(Marked(*bm, 0, 4 * kMiB));
  }
  // And the resync reads them here, to send them.
  const std::vector<ResyncRead> reads = All<ResyncRead>(source);
  auto read = [&](uint64_t offset, uint64_t length) {
    for (const ResyncRead& r : reads) {
      if (r.offset_bytes <= offset && offset + length <= r.offset_bytes + r.length_bytes) {
        return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(read(8 * kMiB, 4096));
  EXPECT_TRUE(read(40 * kMiB, 64 * 1024));
  EXPECT_TRUE(p.beta.CheckInvariants().empty()) << p.beta.CheckInvariants();
  EXPECT_TRUE(old.CheckInvariants().empty()) << old.CheckInvariants();
}

// The diskless Primary follows beta's new generation, so that after a link cut it connects
// again without a resync (rule 15), and beta starts no second generation for it.
TEST(ReplicaDisklessPeer, TheDisklessPrimaryReconnectsOnTheNewGeneration) {
  Pair p;
  p.beta.PeerStateChanged(p.AlphaDiskFails());
  const uint64_t s1 = p.AlphaWrites(1, 8 * kMiB, 4096);
  p.BetaApplies(1, s1, 8 * kMiB, 4096);
  const GenerationIds moved = p.beta.md().ids;
  ASSERT_NE(moved.current, kX);
  EXPECT_EQ(p.alpha.md().ids, moved);

  p.alpha.PeerDown("link cut");
  p.beta.PeerDown("link cut");
  (void)p.alpha.TakeActions();
  (void)p.beta.TakeActions();
  const PeerState a = p.alpha.LocalState(), b = p.beta.LocalState();
  p.alpha.PeerConnecting();
  p.beta.PeerConnecting();
  p.alpha.PeerUp(Replica::Handshake{b, std::nullopt, false});
  p.beta.PeerUp(Replica::Handshake{a, std::nullopt, false});
  EXPECT_EQ(p.alpha.conn(), ConnState::kConnected) << p.alpha.Report().sync_decision;
  EXPECT_EQ(p.beta.conn(), ConnState::kConnected) << p.beta.Report().sync_decision;
  EXPECT_EQ(p.beta.Report().sync_decision.rfind("rule 15:", 0), 0u)
      << p.beta.Report().sync_decision;
  EXPECT_EQ(p.beta.md().ids, moved);
  EXPECT_EQ(p.beta.Report().out_of_sync_bytes, 4096u);  // the marks stay
  // Served through beta again, and its writes still marked.
  const uint64_t s2 = p.AlphaWrites(2, 24 * kMiB, 4096);
  p.BetaApplies(2, s2, 24 * kMiB, 4096);
  EXPECT_TRUE(Marked(p.beta.bitmap(), 24 * kMiB, 4096));
  EXPECT_EQ(p.beta.md().ids, moved);
}

// A fast-failback Primary (beta's sync target, promoted during the resync) whose disk fails:
// beta's data is already a newer generation than the one that disk has (its bitmap id names
// it), so no new one starts; beta stops the resync and marks what it writes for the Primary,
// and the old disk back with the crash flag is the target of those blocks too.
TEST(ReplicaDisklessPeer, AFastFailbackPrimarysWritesAreMarkedOnTheSource) {
  const GenerationIds stayed{kX, 0, {kOld, 0}};
  const GenerationIds moved_on{kY, kX, {kX, kOld}};
  Replica target = MakeReplica(Options("alpha"), stayed, {});
  Replica source = MakeReplica(Options("beta"), moved_on, {{0, 4 * kMiB}});
  target.PeerUp(Replica::Handshake{source.LocalState(), std::nullopt, false});
  source.PeerUp(Replica::Handshake{target.LocalState(), std::nullopt, false});
  ExchangeBitmaps(target, source);
  ASSERT_TRUE(target.Promote(false).ok());
  for (const SendState& s : All<SendState>(target.TakeActions())) source.PeerStateChanged(s.state);
  (void)source.TakeActions();
  ASSERT_EQ(source.Report().repl, ReplState::kSyncSource);

  target.MetadataWriteFailed("writing the superblock", EIO);
  for (const SendState& s : All<SendState>(target.TakeActions())) source.PeerStateChanged(s.state);
  (void)source.TakeActions();
  EXPECT_EQ(source.Report().repl, ReplState::kEstablished);
  EXPECT_EQ(source.md().ids, moved_on);  // newer than the target's disk already

  target.ClientWrite(1, 8 * kMiB, 4096, WriteKind::kData, false);
  const std::vector<SendData> sent = All<SendData>(target.TakeActions());
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_TRUE(source.PeerData(1, sent[0].seq, 8 * kMiB, 4096, WriteKind::kData, false));
  (void)source.TakeActions();
  source.ApplyDone(1, 0);
  for (const SendAck& ack : All<SendAck>(source.TakeActions())) {
    target.PeerAck(ack.kind, ack.seq, ack.error);
  }
  EXPECT_TRUE(Marked(source.bitmap(), 8 * kMiB, 4096));
  EXPECT_EQ(target.md().ids.current, kY);  // it serves beta's generation
  source.PeerDown("the diskless Primary stopped");
  (void)source.TakeActions();

  MdState md;
  md.ids = stayed;
  md.disk = DiskState::kUpToDate;  // at worst: no record of the resync nor of the failure
  md.primary = true;
  Replica old(Options("alpha"), md, ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 1),
              Bitmap(kData));
  (void)old.TakeActions();
  const PeerState o = old.LocalState(), s = source.LocalState();
  source.PeerConnecting();
  source.PeerUp(Replica::Handshake{o, std::nullopt, true});
  old.PeerUp(Replica::Handshake{s, std::nullopt, true});
  EXPECT_EQ(old.Report().repl, ReplState::kSyncTarget) << old.Report().sync_decision;
  for (const SendOutOfSync& f : All<SendOutOfSync>(old.TakeActions())) {
    source.PeerOutOfSync(f.runs, f.last);
  }
  EXPECT_EQ(source.Report().repl, ReplState::kSyncSource) << source.Report().sync_decision;
  for (const SendOutOfSync& f : All<SendOutOfSync>(source.TakeActions())) {
    old.PeerOutOfSync(f.runs, f.last);
  }
  EXPECT_TRUE(Marked(old.bitmap(), 8 * kMiB, 4096));
  EXPECT_TRUE(source.CheckInvariants().empty()) << source.CheckInvariants();
}

}  // namespace
}  // namespace repld
