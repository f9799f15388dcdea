#include "replication/block_digest.h"

#include <isa-l/crc64.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace repld {

uint64_t BlockDigest(std::span<const uint8_t> block, BlockDigestKind kind) {
  if (kind == BlockDigestKind::kCrc64) return crc64_ecma_refl(0, block.data(), block.size());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_bytes = 0;
  REPLD_CHECK(EVP_Digest(block.data(), block.size(), md, &md_bytes, EVP_sha256(), nullptr) == 1);
  uint64_t v = 0;
  std::memcpy(&v, md, sizeof v);
  return v;
}

void AppendBlockDigests(std::span<const uint8_t> data, BlockDigestKind kind,
                        std::vector<uint64_t>& out) {
  for (size_t at = 0; at < data.size(); at += kDigestGrainBytes) {
    out.push_back(
        BlockDigest(data.subspan(at, std::min<size_t>(kDigestGrainBytes, data.size() - at)), kind));
  }
}

}  // namespace repld
