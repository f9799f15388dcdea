// The handshake's two questions about a peer, answered without I/O: is it the node our config
// names, for our resource, speaking a version and protocol we share (CheckHello)? And does it
// know the shared secret (an HMAC-SHA256 challenge-response, in both directions)?
// docs/peer-protocol.md describes the sequence and the construction.
//
// The one function here that reaches outside the process is RandomBytes (the system RNG). The
// replication core never calls it: the adapter draws the nonce and hands it to the core, so a
// simulation can use nonces from its seed.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "replication/peer_proto.h"

namespace repld::peer {

// ---- Hello check ------------------------------------------------------------------------------

// What this node says about itself in its Hello, and so expects the peer to match.
struct HelloExpectations {
  uint16_t version_min = kProtocolVersionMin;
  uint16_t version_max = kProtocolVersionMax;
  uint64_t features = kFeaturesSupported;
  std::string resource;
  std::string node;       // this node
  std::string peer_node;  // the peer, as this node's config names it
  Protocol protocol = Protocol::kC;
  uint64_t data_bytes = 0;  // 0: diskless (takes the peer's size)
  Nonce nonce{};            // the nonce of this node's own Hello

  Hello ToHello() const;  // the Hello this node sends
};

// What both sides agreed on when CheckHello passed.
struct HelloAgreement {
  uint16_t version = 0;     // the highest version both speak
  uint64_t features = 0;    // the AND of both sides' bits
  uint64_t data_bytes = 0;  // the size both use: the one that is not 0 (0 if both are diskless)
};

// The first reason to refuse `theirs`, as the Error to send before closing; nullopt if the peer
// is acceptable. Checks, in order: protocol versions overlap, resource, the peer's node name,
// the name the peer expects us to have, a reflected nonce, replication protocol, data size.
// Every text names both nodes, because both logs show it.
std::optional<Error> FindHelloRefusal(const Hello& theirs, const HelloExpectations& mine);
// The same as a Status (its message is the Error's text).
Status CheckHello(const Hello& theirs, const HelloExpectations& mine);
// CheckHello, then what was agreed.
Result<HelloAgreement> NegotiateHello(const Hello& theirs, const HelloExpectations& mine);

// ---- Authentication ---------------------------------------------------------------------------

// Who opened the TCP connection. Part of every response, so one side's answer can never pass as
// the other side's.
enum class HandshakeSide : uint8_t { kConnector, kAcceptor };
std::string_view HandshakeSideName(HandshakeSide side);  // "connector" / "acceptor"
constexpr HandshakeSide Opposite(HandshakeSide s) {
  return s == HandshakeSide::kConnector ? HandshakeSide::kAcceptor : HandshakeSide::kConnector;
}

using Sha256Digest = std::array<uint8_t, 32>;
Result<Sha256Digest> HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data);

// Everything one Auth response is bound to. The response proves the responder knows the secret
// AND answers this challenge, in this connection, in this direction.
struct AuthTranscript {
  HandshakeSide responder_side = HandshakeSide::kConnector;
  std::string_view resource;
  std::string_view responder_node;
  std::string_view challenger_node;
  Nonce challenger_nonce{};  // the nonce being answered
  Nonce responder_nonce{};   // the responder's own nonce
};

// HMAC-SHA256(secret, "repld-auth-v1" || len|side || len|resource || len|responder node ||
// len|challenger node || challenger nonce || responder nonce), each len one byte. Fails on an
// empty secret or an invalid name.
Result<AuthResponse> ComputeAuthResponse(std::string_view secret, const AuthTranscript& t);
// Constant-time comparison. False on any mismatch, and if the response cannot be computed.
bool VerifyAuthResponse(std::string_view secret, const AuthTranscript& t,
                        const AuthResponse& response);

// The transcripts of one handshake, from the two Hellos (after CheckHello passed). Names come
// from our own config, not from the peer's Hello.
AuthTranscript OurAnswerTranscript(HandshakeSide our_side, const HelloExpectations& mine,
                                   const Hello& theirs);
AuthTranscript TheirAnswerTranscript(HandshakeSide our_side, const HelloExpectations& mine,
                                     const Hello& theirs);

// The Error to send when the peer's Auth does not verify.
Error AuthRefusal(const HelloExpectations& mine);

// Fills `out` from the system's cryptographic RNG (OpenSSL RAND_bytes). For adapters only.
Status RandomBytes(std::span<uint8_t> out);

}  // namespace repld::peer
