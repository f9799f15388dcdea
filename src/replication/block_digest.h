// Digests of data for checksum resync and online verify: one per 4 KiB block (the bitmap's
// grain), the first 8 bytes of its SHA-256 (SHA-NI makes it cheap; a CRC would let 1 in 2^32
// differing blocks pass as equal). A last block shorter than 4 KiB is digested as it is.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace repld {

inline constexpr uint64_t kDigestGrainBytes = 4096;

uint64_t BlockDigest(std::span<const uint8_t> block);
// Appends the digests of `data`, block by block, to `out`.
void AppendBlockDigests(std::span<const uint8_t> data, std::vector<uint64_t>& out);
inline uint64_t DigestCount(uint64_t length_bytes) {
  return (length_bytes + kDigestGrainBytes - 1) / kDigestGrainBytes;
}

}  // namespace repld
