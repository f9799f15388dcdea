#include "replication/block_digest.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace repld {
namespace {

std::span<const uint8_t> Bytes(const char* text) {
  return {reinterpret_cast<const uint8_t*>(text), std::strlen(text)};
}

// Both are wire facts: a peer of another build computes the same values.
TEST(BlockDigest, Crc64IsCrc64Xz) {
  EXPECT_EQ(BlockDigest(Bytes("123456789"), BlockDigestKind::kCrc64), 0x995DC9BBDF1939FAull);
}

TEST(BlockDigest, Sha256IsItsFirstEightBytesLittleEndian) {
  // SHA-256("abc") = ba7816bf 8f01cfea ...
  EXPECT_EQ(BlockDigest(Bytes("abc"), BlockDigestKind::kSha256), 0xEACF018FBF1678BAull);
}

TEST(BlockDigest, OnePerBlockAndOnlyTheChangedBlockDiffers) {
  for (BlockDigestKind kind : {BlockDigestKind::kCrc64, BlockDigestKind::kSha256}) {
    std::vector<uint8_t> data(3 * kDigestGrainBytes + 100, 0x5A);
    std::vector<uint64_t> before;
    AppendBlockDigests(data, kind, before);
    ASSERT_EQ(before.size(), 4u);  // the 100-byte tail is a block of its own
    EXPECT_EQ(before[0], before[1]);
    EXPECT_NE(before[2], before[3]);
    data[kDigestGrainBytes + 7] ^= 1;  // one bit of block 1
    std::vector<uint64_t> after;
    AppendBlockDigests(data, kind, after);
    EXPECT_EQ(after[0], before[0]);
    EXPECT_NE(after[1], before[1]);
    EXPECT_EQ(after[2], before[2]);
    EXPECT_EQ(after[3], before[3]);
  }
}

}  // namespace
}  // namespace repld
