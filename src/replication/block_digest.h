// Digests of data for checksum resync and online verify: one per 4 KiB block (the bitmap's
// grain), 64 bits each. A last block shorter than 4 KiB is digested as it is. Two kinds; the
// connection's agreed features pick one (peer::kFeatureCrc64Digests):
// - CRC-64/XZ (ECMA-182, reflected), with ISA-L's carry-less multiply: about 10 times faster
//   than SHA-256 with SHA-NI, which made a verify compute-bound at about 300 MiB/s per node.
//   A corrupted or stale block matches by chance with probability 2^-64. What a CRC cannot do
//   is resist someone who crafts colliding blocks, and both nodes' data comes from the same
//   writes, so nobody can put crafted differing blocks on the two disks.
// - the first 8 bytes of its SHA-256: what a peer without the feature computes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace repld {

inline constexpr uint64_t kDigestGrainBytes = 4096;

enum class BlockDigestKind { kSha256, kCrc64 };

uint64_t BlockDigest(std::span<const uint8_t> block, BlockDigestKind kind);
// Appends the digests of `data`, block by block, to `out`.
void AppendBlockDigests(std::span<const uint8_t> data, BlockDigestKind kind,
                        std::vector<uint64_t>& out);
inline uint64_t DigestCount(uint64_t length_bytes) {
  return (length_bytes + kDigestGrainBytes - 1) / kDigestGrainBytes;
}

}  // namespace repld
