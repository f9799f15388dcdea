// When a client's write or flush completes under protocols A, B and C (docs/replication.md):
// A: local done + handed to the socket; B: local done + the peer received it; C: local done +
// the peer wrote it. A FLUSH under C waits for the peer's flush too; under A and B it does not.
// Each test checks "not yet" right before the event that must complete the request, so a moved
// completion point fails it.
#include <gtest/gtest.h>

#include <cerrno>
#include <optional>

#include "replica_actions.h"
#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// A Primary connected to an in-sync Secondary.
Replica Connected(Protocol protocol) {
  ReplicaOptions o;
  o.node_name = "alpha";
  o.data_bytes = 64 * kMiB;
  o.protocol = protocol;
  Replica r = MakeReplica(o, GenerationIds{0x1000, 0, {0, 0}}, {});
  EXPECT_TRUE(r.Promote(/*force=*/false).ok());
  PeerState peer = r.LocalState();
  peer.role = Role::kSecondary;
  r.PeerUp(peer);
  r.TakeActions();
  EXPECT_EQ(r.Report().repl, ReplState::kEstablished);
  return r;
}

// What the replica asked for since the last call (activity log writes answered at once).
struct Seen {
  std::optional<RequestId> submitted;   // SubmitWrite
  std::optional<uint64_t> data_seq;     // SendData
  std::optional<uint64_t> flush_seq;    // SendFlush
  std::optional<uint64_t> flush_token;  // SubmitFlush
  std::optional<int> completed;         // Complete: its error
};

Seen Take(Replica& r) {
  Seen s;
  for (std::vector<Action> actions = r.TakeActions(); !actions.empty(); actions = r.TakeActions()) {
    for (Action& a : actions) {
      if (auto* al = std::get_if<WriteAl>(&a)) r.AlWritten(al->plan.seq, 0);
      if (auto* w = std::get_if<SubmitWrite>(&a)) s.submitted = w->id;
      if (auto* d = std::get_if<SendData>(&a)) s.data_seq = d->seq;
      if (auto* f = std::get_if<SendFlush>(&a)) s.flush_seq = f->seq;
      if (auto* f = std::get_if<SubmitFlush>(&a)) s.flush_token = f->token;
      if (auto* c = std::get_if<Complete>(&a)) s.completed = c->error;
    }
  }
  return s;
}

// A 4 KiB write started and sent: returns its frame's seq.
uint64_t StartWrite(Replica& r) {
  r.ClientWrite(1, 0, 4096, WriteKind::kData, false);
  const Seen s = Take(r);
  EXPECT_EQ(s.submitted, RequestId{1});
  EXPECT_TRUE(s.data_seq.has_value());
  EXPECT_FALSE(s.completed.has_value());
  return s.data_seq.value_or(0);
}

TEST(ReplicaCompletion, ProtocolAWriteCompletesOnceLocalDoneAndHandedToTheSocket) {
  Replica r = Connected(Protocol::kA);
  const uint64_t seq = StartWrite(r);
  r.LocalWriteDone(1, 0);
  EXPECT_FALSE(Take(r).completed) << "not yet on the socket";
  r.PeerSent(seq);
  EXPECT_EQ(Take(r).completed, 0) << "no peer ack needed under A";
}

TEST(ReplicaCompletion, ProtocolBWriteCompletesOnceThePeerReceivedIt) {
  Replica r = Connected(Protocol::kB);
  const uint64_t seq = StartWrite(r);
  r.LocalWriteDone(1, 0);
  r.PeerSent(seq);
  EXPECT_FALSE(Take(r).completed) << "handed to the socket is not enough under B";
  r.PeerAck(AckKind::kReceived, seq, 0);
  EXPECT_EQ(Take(r).completed, 0) << "the peer's RecvAck completes it";
}

TEST(ReplicaCompletion, ProtocolCWriteCompletesOnceThePeerWroteIt) {
  Replica r = Connected(Protocol::kC);
  const uint64_t seq = StartWrite(r);
  r.LocalWriteDone(1, 0);
  r.PeerSent(seq);
  r.PeerAck(AckKind::kReceived, seq, 0);
  EXPECT_FALSE(Take(r).completed) << "received is not written under C";
  r.PeerAck(AckKind::kWritten, seq, 0);
  EXPECT_EQ(Take(r).completed, 0) << "the peer's WriteAck completes it";
}

// Under every protocol the peer's acks, all of them, do not complete a write whose local disk
// has not answered yet.
TEST(ReplicaCompletion, AWriteWaitsForTheLocalDiskUnderEveryProtocol) {
  for (Protocol protocol : {Protocol::kA, Protocol::kB, Protocol::kC}) {
    SCOPED_TRACE(std::string("protocol ") + ProtocolLetter(protocol));
    Replica r = Connected(protocol);
    const uint64_t seq = StartWrite(r);
    r.PeerSent(seq);
    r.PeerAck(AckKind::kReceived, seq, 0);
    r.PeerAck(AckKind::kWritten, seq, 0);
    EXPECT_FALSE(Take(r).completed) << "the local write is not done";
    r.LocalWriteDone(1, 0);
    EXPECT_EQ(Take(r).completed, 0);
  }
}

// A client flush: returns what it asked for (a local flush, and a flush frame to the peer).
Seen StartFlush(Replica& r) {
  r.ClientFlush(7);
  const Seen s = Take(r);
  EXPECT_TRUE(s.flush_token.has_value());
  EXPECT_TRUE(s.flush_seq.has_value()) << "connected: the peer flushes too";
  EXPECT_FALSE(s.completed.has_value());
  return s;
}

TEST(ReplicaCompletion, ProtocolCFlushWaitsForThePeersFlush) {
  Replica r = Connected(Protocol::kC);
  const Seen f = StartFlush(r);
  r.LocalFlushDone(*f.flush_token, 0);
  r.PeerAck(AckKind::kReceived, *f.flush_seq, 0);
  EXPECT_FALSE(Take(r).completed) << "the peer has not flushed";
  r.PeerAck(AckKind::kFlushed, *f.flush_seq, 0);
  EXPECT_EQ(Take(r).completed, 0);
}

TEST(ReplicaCompletion, ProtocolCFlushWaitsForTheLocalFlush) {
  Replica r = Connected(Protocol::kC);
  const Seen f = StartFlush(r);
  r.PeerAck(AckKind::kFlushed, *f.flush_seq, 0);
  EXPECT_FALSE(Take(r).completed) << "the local flush is not done";
  r.LocalFlushDone(*f.flush_token, 0);
  EXPECT_EQ(Take(r).completed, 0);
}

TEST(ReplicaCompletion, ProtocolsAAndBFlushDoesNotWaitForThePeer) {
  for (Protocol p : {Protocol::kA, Protocol::kB}) {
    Replica r = Connected(p);
    const Seen f = StartFlush(r);
    r.PeerSent(*f.flush_seq);
    EXPECT_FALSE(Take(r).completed) << ProtocolLetter(p) << ": the local flush is not done";
    r.LocalFlushDone(*f.flush_token, 0);
    EXPECT_EQ(Take(r).completed, 0) << ProtocolLetter(p) << ": the peer flushes on its own time";
  }
}

// The peer's flush fails under C: the client's flush still completes with the local result
// (the data is durable here, as DRBD does), but every write the peer confirmed before it is
// marked out of sync, the bitmap persisted, and a later successful flush does not clear it.
TEST(ReplicaCompletion, ProtocolCFlushWhosePeerFlushFailedCompletesAndMarksTheWritesItCovered) {
  Replica r = Connected(Protocol::kC);
  const uint64_t seq = StartWrite(r);
  r.LocalWriteDone(1, 0);
  r.PeerAck(AckKind::kWritten, seq, 0);
  ASSERT_EQ(Take(r).completed, 0);
  const Seen f = StartFlush(r);
  r.LocalFlushDone(*f.flush_token, 0);
  r.PeerAck(AckKind::kFlushed, *f.flush_seq, EIO);
  std::vector<Action> actions = r.TakeActions();
  EXPECT_EQ(All<PersistBitmap>(actions).size(), 1u) << "the marks go to disk";
  const std::vector<Complete> done = All<Complete>(actions);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].error, 0) << "the local flush succeeded";
  EXPECT_TRUE(r.bitmap().Test(0)) << "the peer may have lost the write";
  // A later flush that succeeds covers nothing it could clear.
  r.ClientFlush(8);
  const Seen g = Take(r);
  r.LocalFlushDone(*g.flush_token, 0);
  r.PeerAck(AckKind::kFlushed, *g.flush_seq, 0);
  EXPECT_EQ(Take(r).completed, 0);
  EXPECT_TRUE(r.bitmap().Test(0)) << "still marked: resynced at the next connect";
}

// A failed barrier (the core's own flush) marks the writes it covered, and their extents leave
// the log only after the marks are persisted.
TEST(ReplicaCompletion, AFailedBarrierMarksTheWritesItCovered) {
  Replica r = Connected(Protocol::kC);
  const uint64_t seq = StartWrite(r);
  r.LocalWriteDone(1, 0);
  r.PeerAck(AckKind::kWritten, seq, 0);
  ASSERT_EQ(Take(r).completed, 0);
  r.Tick();
  const Seen b = Take(r);
  ASSERT_TRUE(b.flush_seq) << "Tick sends a barrier for the unflushed write";
  EXPECT_FALSE(b.flush_token) << "a barrier flushes the peer only";
  r.PeerAck(AckKind::kFlushed, *b.flush_seq, EIO);
  EXPECT_EQ(All<PersistBitmap>(r.TakeActions()).size(), 1u);
  EXPECT_TRUE(r.bitmap().Test(0));
  r.Tick();
  EXPECT_FALSE(Take(r).flush_seq) << "nothing is left unflushed: no barrier";
}

}  // namespace
}  // namespace repld
