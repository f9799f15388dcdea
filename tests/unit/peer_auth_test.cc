#include "replication/peer_auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace repld::peer {
namespace {

using ::testing::HasSubstr;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string ToHex(std::span<const uint8_t> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s += kDigits[c >> 4];
    s += kDigits[c & 15];
  }
  return s;
}

Nonce NonceOf(uint8_t seed) {
  Nonce n{};
  for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(seed * 31 + i);
  return n;
}

HelloExpectations Node(std::string node, std::string peer, uint8_t seed) {
  HelloExpectations e;
  e.resource = "www";
  e.node = std::move(node);
  e.peer_node = std::move(peer);
  e.protocol = Protocol::kC;
  e.data_bytes = 8 * kGiB;
  e.nonce = NonceOf(seed);
  return e;
}

TEST(PeerAuth, HmacSha256KnownAnswers) {
  // RFC 4231, test case 2.
  Result<Sha256Digest> mac = HmacSha256(Bytes("Jefe"), Bytes("what do ya want for nothing?"));
  ASSERT_TRUE(mac.ok()) << mac.status().message();
  EXPECT_EQ(ToHex(mac.value()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // RFC 4231, test case 1.
  const std::string key(20, '\x0b');
  mac = HmacSha256(Bytes(key), Bytes("Hi There"));
  ASSERT_TRUE(mac.ok());
  EXPECT_EQ(ToHex(mac.value()), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

// Both directions of one handshake: alice connected to bob.
struct Handshake {
  HelloExpectations alice = Node("alice", "bob", 1);
  HelloExpectations bob = Node("bob", "alice", 2);
  Hello alice_hello = alice.ToHello();
  Hello bob_hello = bob.ToHello();

  AuthResponse AliceAnswers(std::string_view secret) const {
    Result<AuthResponse> r = ComputeAuthResponse(
        secret, OurAnswerTranscript(HandshakeSide::kConnector, alice, bob_hello));
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.value();
  }
  AuthResponse BobAnswers(std::string_view secret) const {
    Result<AuthResponse> r = ComputeAuthResponse(
        secret, OurAnswerTranscript(HandshakeSide::kAcceptor, bob, alice_hello));
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.value();
  }
  bool BobAccepts(std::string_view secret, const AuthResponse& r) const {
    return VerifyAuthResponse(secret,
                              TheirAnswerTranscript(HandshakeSide::kAcceptor, bob, alice_hello), r);
  }
  bool AliceAccepts(std::string_view secret, const AuthResponse& r) const {
    return VerifyAuthResponse(
        secret, TheirAnswerTranscript(HandshakeSide::kConnector, alice, bob_hello), r);
  }
};

TEST(PeerAuth, ResponsesVerifyInBothDirections) {
  const Handshake h;
  EXPECT_TRUE(
      h.BobAccepts("correct horse battery staple", h.AliceAnswers("correct horse battery staple")));
  EXPECT_TRUE(
      h.AliceAccepts("correct horse battery staple", h.BobAnswers("correct horse battery staple")));
  EXPECT_NE(h.AliceAnswers("k"), h.BobAnswers("k"));
}

TEST(PeerAuth, WrongSecretDoesNotVerify) {
  const Handshake h;
  EXPECT_FALSE(h.BobAccepts("shared-secret", h.AliceAnswers("shared-secreT")));
  EXPECT_FALSE(h.AliceAccepts("shared-secret", h.BobAnswers("other")));
}

TEST(PeerAuth, ReflectedResponseDoesNotVerify) {
  const Handshake h;
  // Bob's own answer sent back to him as if it were alice's.
  EXPECT_FALSE(h.BobAccepts("s3cret", h.BobAnswers("s3cret")));
  EXPECT_FALSE(h.AliceAccepts("s3cret", h.AliceAnswers("s3cret")));
  // The same names and nonces with the sides swapped: a response for the other direction.
  AuthTranscript t = TheirAnswerTranscript(HandshakeSide::kAcceptor, h.bob, h.alice_hello);
  t.responder_side = Opposite(t.responder_side);
  Result<AuthResponse> swapped = ComputeAuthResponse("s3cret", t);
  ASSERT_TRUE(swapped.ok());
  EXPECT_FALSE(h.BobAccepts("s3cret", swapped.value()));
}

TEST(PeerAuth, ReplayedResponseFromAnotherSessionDoesNotVerify) {
  const Handshake old_session;
  const AuthResponse recorded = old_session.AliceAnswers("s3cret");
  ASSERT_TRUE(old_session.BobAccepts("s3cret", recorded));

  // Bob draws a fresh nonce; the attacker replays alice's old Hello and answer.
  Handshake replay;
  replay.bob.nonce = NonceOf(9);
  replay.bob_hello = replay.bob.ToHello();
  EXPECT_FALSE(replay.BobAccepts("s3cret", recorded));
  // An answer to the right challenge bound to a different responder nonce fails as well.
  AuthTranscript t =
      TheirAnswerTranscript(HandshakeSide::kAcceptor, replay.bob, replay.alice_hello);
  t.responder_nonce = NonceOf(3);
  EXPECT_FALSE(replay.BobAccepts("s3cret", ComputeAuthResponse("s3cret", t).value()));
}

TEST(PeerAuth, EveryTranscriptFieldMatters) {
  const Handshake h;
  const AuthTranscript base = OurAnswerTranscript(HandshakeSide::kConnector, h.alice, h.bob_hello);
  const AuthResponse r = ComputeAuthResponse("k", base).value();
  EXPECT_TRUE(VerifyAuthResponse("k", base, r));
  AuthTranscript t = base;
  t.resource = "mysql";
  EXPECT_FALSE(VerifyAuthResponse("k", t, r));
  t = base;
  t.responder_node = "bob";
  t.challenger_node = "alice";
  EXPECT_FALSE(VerifyAuthResponse("k", t, r));
  // Lengths are part of the message: moving a byte from one name to the next changes it.
  t = base;
  t.responder_node = "alic";
  t.challenger_node = "ebob";
  EXPECT_NE(ComputeAuthResponse("k", t).value(), r);
  AuthResponse flipped = r;
  flipped[31] ^= 1;
  EXPECT_FALSE(VerifyAuthResponse("k", base, flipped));
}

TEST(PeerAuth, EmptySecretAndBadNamesAreErrors) {
  const Handshake h;
  const AuthTranscript t = OurAnswerTranscript(HandshakeSide::kConnector, h.alice, h.bob_hello);
  Result<AuthResponse> r = ComputeAuthResponse("", t);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("net.secret"));
  EXPECT_FALSE(VerifyAuthResponse("", t, AuthResponse{}));
  AuthTranscript bad = t;
  const std::string too_long(300, 'x');  // the transcript holds views: keep the string alive
  bad.resource = too_long;
  EXPECT_FALSE(ComputeAuthResponse("k", bad).ok());
  EXPECT_THAT(AuthRefusal(h.bob).text, HasSubstr("'bob' could not verify the HMAC response of "
                                                 "'alice'"));
  EXPECT_EQ(AuthRefusal(h.bob).code, ErrorCode::kAuthFailed);
}

TEST(PeerAuth, RandomBytesAreRandom) {
  Nonce a{}, b{};
  ASSERT_TRUE(RandomBytes(a).ok());
  ASSERT_TRUE(RandomBytes(b).ok());
  EXPECT_NE(a, b);
  EXPECT_NE(a, Nonce{});
}

// ---- CheckHello -------------------------------------------------------------------------------

std::string Refusal(const Hello& theirs, const HelloExpectations& mine) {
  Status s = CheckHello(theirs, mine);
  return s.ok() ? "accepted" : s.message();
}

TEST(PeerHello, MatchingPeersAgree) {
  HelloExpectations alice = Node("alice", "bob", 1);
  HelloExpectations bob = Node("bob", "alice", 2);
  alice.version_max = 3;
  bob.features = kFeatureZeroes | (1ull << 40);
  Result<HelloAgreement> a = NegotiateHello(bob.ToHello(), alice);
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->version, 1);
  EXPECT_EQ(a->features, kFeatureZeroes);
  EXPECT_EQ(a->data_bytes, 8 * kGiB);
  EXPECT_TRUE(CheckHello(alice.ToHello(), bob).ok());
  // A diskless node takes the peer's size.
  bob.data_bytes = 0;
  a = NegotiateHello(bob.ToHello(), alice);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->data_bytes, 8 * kGiB);
  a = NegotiateHello(alice.ToHello(), bob);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->data_bytes, 8 * kGiB);
}

TEST(PeerHello, VersionMismatchNamesBothRanges) {
  const HelloExpectations alice = Node("alice", "bob", 1);
  HelloExpectations bob = Node("bob", "alice", 2);
  bob.version_min = 2;
  bob.version_max = 3;
  EXPECT_EQ(Refusal(bob.ToHello(), alice),
            "protocol version mismatch on resource 'www': peer 'bob' speaks protocol versions "
            "2..3, we ('alice') speak 1..1; upgrade the older node");
  EXPECT_EQ(FindHelloRefusal(bob.ToHello(), alice)->code, ErrorCode::kProtocolVersion);
}

TEST(PeerHello, ResourceMismatch) {
  const HelloExpectations alice = Node("alice", "bob", 1);
  HelloExpectations bob = Node("bob", "alice", 2);
  bob.resource = "mysql";
  EXPECT_EQ(Refusal(bob.ToHello(), alice),
            "resource mismatch: peer 'bob' connected for resource 'mysql', we ('alice') serve "
            "resource 'www'; check the node addresses in both configs");
}

TEST(PeerHello, NodeNameMismatchBothWays) {
  const HelloExpectations alice = Node("alice", "bob", 1);
  EXPECT_EQ(Refusal(Node("carol", "alice", 2).ToHello(), alice),
            "node name mismatch on resource 'www': peer says it is 'carol', config of 'alice' "
            "says the peer is 'bob'");
  EXPECT_EQ(Refusal(Node("bob", "dave", 2).ToHello(), alice),
            "node name mismatch on resource 'www': peer 'bob' expects to reach node 'dave', but "
            "this is node 'alice'");
  EXPECT_EQ(FindHelloRefusal(Node("bob", "dave", 2).ToHello(), alice)->code, ErrorCode::kNodeName);
}

TEST(PeerHello, ReflectedHelloIsALoopback) {
  const HelloExpectations alice = Node("alice", "bob", 1);
  const HelloExpectations bob_with_alices_nonce = Node("bob", "alice", 1);
  const std::optional<Error> e = FindHelloRefusal(bob_with_alices_nonce.ToHello(), alice);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, ErrorCode::kLoopback);
  EXPECT_THAT(e->text, HasSubstr("sent the nonce of 'alice' back"));
}

TEST(PeerHello, ReplicationProtocolMismatch) {
  const HelloExpectations alice = Node("alice", "bob", 1);
  HelloExpectations bob = Node("bob", "alice", 2);
  bob.protocol = Protocol::kA;
  EXPECT_EQ(Refusal(bob.ToHello(), alice),
            "replication protocol mismatch on resource 'www': peer 'bob' uses protocol A, we "
            "('alice') use protocol C; both configs must name the same protocol");
}

TEST(PeerHello, DataSizeMismatchSaysBothSizes) {
  const HelloExpectations alice = Node("alice", "bob", 1);
  HelloExpectations bob = Node("bob", "alice", 2);
  bob.data_bytes = 4 * kGiB;
  EXPECT_EQ(Refusal(bob.ToHello(), alice),
            "data size mismatch on resource 'www': peer 'bob' has 4.0 GiB (4294967296 bytes), we "
            "('alice') have 8.0 GiB (8589934592 bytes); the backing disks must give the same "
            "usable size");
  const std::optional<Error> e = FindHelloRefusal(bob.ToHello(), alice);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, ErrorCode::kDataSize);
  // The refusal travels to the peer intact and is logged there with who refused.
  const std::vector<uint8_t> frame = e->Encode();
  Result<Error> got = DecodeMessage<Error>(frame);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->text, e->text);
  EXPECT_THAT(DescribeRefusal(got.value(), "alice"),
              HasSubstr("peer 'alice' refused the connection (data-size): data size mismatch"));
}

}  // namespace
}  // namespace repld::peer
