#include "replication/peer_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <vector>

namespace repld::peer {
namespace {

constexpr std::string_view kAuthLabel = "repld-auth-v1";

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string Range(uint16_t lo, uint16_t hi) {
  return std::to_string(lo) + ".." + std::to_string(hi);
}

std::string Size(uint64_t bytes) {
  return FormatSizeBytes(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

Error Refuse(ErrorCode code, std::string text) { return Error{code, std::move(text)}; }

void AppendShort(std::vector<uint8_t>& out, std::string_view s) {
  REPLD_CHECK(s.size() <= UINT8_MAX);
  out.push_back(static_cast<uint8_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

// ---- Hello check ------------------------------------------------------------------------------

Hello HelloExpectations::ToHello() const {
  Hello h;
  h.version_min = version_min;
  h.version_max = version_max;
  h.features = features;
  h.protocol = protocol;
  h.data_bytes = data_bytes;
  h.nonce = nonce;
  h.resource = resource;
  h.node = node;
  h.peer_node = peer_node;
  return h;
}

std::optional<Error> FindHelloRefusal(const Hello& theirs, const HelloExpectations& mine) {
  const std::string peer = "peer " + Quoted(theirs.node);
  const std::string we = "we (" + Quoted(mine.node) + ")";
  const std::string on = " on resource " + Quoted(mine.resource) + ": ";
  if (std::max(theirs.version_min, mine.version_min) >
      std::min(theirs.version_max, mine.version_max)) {
    return Refuse(ErrorCode::kProtocolVersion,
                  "protocol version mismatch" + on + peer + " speaks protocol versions " +
                      Range(theirs.version_min, theirs.version_max) + ", " + we + " speak " +
                      Range(mine.version_min, mine.version_max) + "; upgrade the older node");
  }
  if (theirs.resource != mine.resource) {
    return Refuse(ErrorCode::kResource, "resource mismatch: " + peer + " connected for resource " +
                                            Quoted(theirs.resource) + ", " + we +
                                            " serve resource " + Quoted(mine.resource) +
                                            "; check the node addresses in both configs");
  }
  if (theirs.node != mine.peer_node) {
    return Refuse(ErrorCode::kNodeName, "node name mismatch" + on + "peer says it is " +
                                            Quoted(theirs.node) + ", config of " +
                                            Quoted(mine.node) + " says the peer is " +
                                            Quoted(mine.peer_node));
  }
  if (theirs.peer_node != mine.node) {
    return Refuse(ErrorCode::kNodeName, "node name mismatch" + on + peer +
                                            " expects to reach node " + Quoted(theirs.peer_node) +
                                            ", but this is node " + Quoted(mine.node));
  }
  if (theirs.nonce == mine.nonce) {
    return Refuse(ErrorCode::kLoopback,
                  "loopback" + on + peer + " sent the nonce of " + Quoted(mine.node) +
                      " back: the connection leads back to " + Quoted(mine.node) +
                      " or is reflected; check the peer address in the config");
  }
  if (theirs.protocol != mine.protocol) {
    return Refuse(ErrorCode::kReplicationProtocol,
                  "replication protocol mismatch" + on + peer + " uses protocol " +
                      ProtocolLetter(theirs.protocol) + ", " + we + " use protocol " +
                      ProtocolLetter(mine.protocol) + "; both configs must name the same protocol");
  }
  if (theirs.data_bytes != 0 && mine.data_bytes != 0 && theirs.data_bytes != mine.data_bytes) {
    return Refuse(ErrorCode::kDataSize, "data size mismatch" + on + peer + " has " +
                                            Size(theirs.data_bytes) + ", " + we + " have " +
                                            Size(mine.data_bytes) +
                                            "; the backing disks must give the same usable size");
  }
  return std::nullopt;
}

Status CheckHello(const Hello& theirs, const HelloExpectations& mine) {
  if (std::optional<Error> refusal = FindHelloRefusal(theirs, mine)) {
    return Status::Invalid(refusal->text);
  }
  return Status::Ok();
}

Result<HelloAgreement> NegotiateHello(const Hello& theirs, const HelloExpectations& mine) {
  if (Status s = CheckHello(theirs, mine); !s.ok()) return s;
  HelloAgreement a;
  a.version = std::min(theirs.version_max, mine.version_max);
  a.features = theirs.features & mine.features;
  a.data_bytes = mine.data_bytes != 0 ? mine.data_bytes : theirs.data_bytes;
  return a;
}

// ---- Authentication ---------------------------------------------------------------------------

std::string_view HandshakeSideName(HandshakeSide side) {
  return side == HandshakeSide::kConnector ? "connector" : "acceptor";
}

Result<Sha256Digest> HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  if (key.size() > INT_MAX) return Status::Invalid("HMAC key too long");
  Sha256Digest out{};
  unsigned int out_bytes = 0;
  // OpenSSL wants a non-null key pointer even for an empty key.
  static const uint8_t kEmpty = 0;
  const uint8_t* key_data = key.empty() ? &kEmpty : key.data();
  if (HMAC(EVP_sha256(), key_data, static_cast<int>(key.size()), data.data(), data.size(),
           out.data(), &out_bytes) == nullptr ||
      out_bytes != out.size()) {
    return Status::Invalid("HMAC-SHA256 failed in OpenSSL");
  }
  return out;
}

Result<AuthResponse> ComputeAuthResponse(std::string_view secret, const AuthTranscript& t) {
  if (secret.empty()) {
    return Status::Invalid("no shared secret: set net.secret in the config of both nodes");
  }
  for (std::string_view name : {t.resource, t.responder_node, t.challenger_node}) {
    if (!IsValidWireName(name)) {
      return Status::Invalid("cannot authenticate with invalid name '" + std::string(name) + "'");
    }
  }
  // Every variable-length field carries its length, so no two transcripts share bytes.
  std::vector<uint8_t> message(kAuthLabel.begin(), kAuthLabel.end());
  message.reserve(kAuthLabel.size() + 4 * (1 + kNameBytesMax) + 2 * kNonceBytes);
  AppendShort(message, HandshakeSideName(t.responder_side));
  AppendShort(message, t.resource);
  AppendShort(message, t.responder_node);
  AppendShort(message, t.challenger_node);
  message.insert(message.end(), t.challenger_nonce.begin(), t.challenger_nonce.end());
  message.insert(message.end(), t.responder_nonce.begin(), t.responder_nonce.end());
  Result<Sha256Digest> mac = HmacSha256(
      std::span(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()), message);
  if (!mac.ok()) return mac.status();
  return mac.value();
}

bool VerifyAuthResponse(std::string_view secret, const AuthTranscript& t,
                        const AuthResponse& response) {
  Result<AuthResponse> expected = ComputeAuthResponse(secret, t);
  if (!expected.ok()) return false;
  const bool match = CRYPTO_memcmp(expected->data(), response.data(), response.size()) == 0;
  OPENSSL_cleanse(expected->data(), expected->size());
  return match;
}

AuthTranscript OurAnswerTranscript(HandshakeSide our_side, const HelloExpectations& mine,
                                   const Hello& theirs) {
  return AuthTranscript{.responder_side = our_side,
                        .resource = mine.resource,
                        .responder_node = mine.node,
                        .challenger_node = mine.peer_node,
                        .challenger_nonce = theirs.nonce,
                        .responder_nonce = mine.nonce};
}

AuthTranscript TheirAnswerTranscript(HandshakeSide our_side, const HelloExpectations& mine,
                                     const Hello& theirs) {
  return AuthTranscript{.responder_side = Opposite(our_side),
                        .resource = mine.resource,
                        .responder_node = mine.peer_node,
                        .challenger_node = mine.node,
                        .challenger_nonce = mine.nonce,
                        .responder_nonce = theirs.nonce};
}

Error AuthRefusal(const HelloExpectations& mine) {
  return Error{ErrorCode::kAuthFailed,
               "authentication failed on resource " + Quoted(mine.resource) + ": " +
                   Quoted(mine.node) + " could not verify the HMAC response of " +
                   Quoted(mine.peer_node) + "; net.secret differs between the two configs"};
}

Status RandomBytes(std::span<uint8_t> out) {
  if (out.size() > INT_MAX) return Status::Invalid("RandomBytes: request too large");
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    return Status::Invalid("the system random number generator failed (OpenSSL RAND_bytes)");
  }
  return Status::Ok();
}

}  // namespace repld::peer
