#include "replication/bitmap.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace repld {
namespace {

constexpr uint64_t kBlock = kBitmapGrainBytes;

TEST(Bitmap, SizesFromDataBytes) {
  Bitmap b(10 * kBlock + 1);  // a partial last block has a bit too
  EXPECT_EQ(b.bit_count(), 11u);
  EXPECT_EQ(b.page_count(), 1u);
  EXPECT_EQ(Bitmap(128 * kMiB).page_count(), 1u);  // 32768 bits per page
  EXPECT_EQ(Bitmap(128 * kMiB + 1).page_count(), 2u);
  EXPECT_EQ(b.CountSet(), 0u);
  EXPECT_EQ(b.FindNextSet(0), b.bit_count());
}

TEST(Bitmap, SetRoundsPartialBlocksOutward) {
  Bitmap b(64 * kBlock);
  b.SetRange(kBlock - 1, 2);  // one byte in block 0, one in block 1
  EXPECT_TRUE(b.Test(0));
  EXPECT_TRUE(b.Test(1));
  EXPECT_FALSE(b.Test(2));
  EXPECT_EQ(b.CountSet(), 2u);
  b.SetRange(5 * kBlock, kBlock);  // exactly one block
  EXPECT_TRUE(b.Test(5));
  EXPECT_FALSE(b.Test(4));
  EXPECT_FALSE(b.Test(6));
  b.SetRange(9 * kBlock, 0);  // nothing
  EXPECT_EQ(b.CountSet(), 3u);
  EXPECT_EQ(b.OutOfSyncBytes(), 3 * kBlock);
}

TEST(Bitmap, ClearOnlyWholeBlocks) {
  Bitmap b(64 * kBlock);
  b.SetAll();
  b.ClearRange(kBlock / 2, 3 * kBlock);  // covers block 1 and 2 whole, 0 and 3 in part
  EXPECT_TRUE(b.Test(0));
  EXPECT_FALSE(b.Test(1));
  EXPECT_FALSE(b.Test(2));
  EXPECT_TRUE(b.Test(3));
  EXPECT_EQ(b.CountSet(), 62u);
}

TEST(Bitmap, PartialLastBlockOfTheData) {
  const uint64_t data = 2 * kBlock + 100;
  Bitmap b(data);
  b.SetRange(data - 1, 1);
  EXPECT_TRUE(b.Test(2));
  EXPECT_EQ(b.OutOfSyncBytes(), 100u);  // only as far as the data goes
  b.ClearRange(2 * kBlock, 100);        // reaches the end of the data: clears the last bit
  EXPECT_FALSE(b.Test(2));
  b.SetAll();
  EXPECT_EQ(b.OutOfSyncBytes(), data);
}

TEST(Bitmap, WordBoundaries) {
  Bitmap b(200 * kBlock);
  b.SetRange(63 * kBlock, 2 * kBlock);  // bits 63 and 64: two words
  EXPECT_TRUE(b.Test(63));
  EXPECT_TRUE(b.Test(64));
  EXPECT_EQ(b.FindNextSet(0), 63u);
  EXPECT_EQ(b.FindNextSet(64), 64u);
  EXPECT_EQ(b.FindNextSet(65), b.bit_count());
  EXPECT_EQ(b.FindNextClear(63), 65u);
  b.SetRange(0, 200 * kBlock);
  EXPECT_EQ(b.CountSet(), 200u);
  EXPECT_EQ(b.FindNextClear(0), b.bit_count());
  b.ClearRange(64 * kBlock, 128 * kBlock);  // whole words 1 and 2
  EXPECT_EQ(b.CountSet(), 72u);
  EXPECT_EQ(b.FindNextClear(0), 64u);
  EXPECT_EQ(b.FindNextSet(64), 192u);
}

TEST(Bitmap, DirtyPagesAreTheChangedOnes) {
  Bitmap b(3 * 128 * kMiB);  // three pages
  EXPECT_TRUE(b.DirtyPages().empty());
  b.SetRange(0, kBlock);
  b.SetRange(2 * 128 * kMiB + kBlock, kBlock);
  EXPECT_EQ(b.DirtyPages(), (std::vector<uint64_t>{0, 2}));
  b.ClearDirty();
  EXPECT_TRUE(b.DirtyPages().empty());
  b.SetRange(128 * kMiB - kBlock, 2 * kBlock);  // straddles pages 0 and 1
  EXPECT_EQ(b.DirtyPages(), (std::vector<uint64_t>{0, 1}));
}

TEST(Bitmap, OnDiskBytesAreLittleEndianWords) {
  Bitmap b(1000 * kBlock);
  b.SetRange(0, kBlock);
  b.SetRange(9 * kBlock, kBlock);
  b.SetRange(63 * kBlock, kBlock);
  std::vector<uint8_t> disk(2 * kMdBlockBytes, 0xAA);  // larger than needed: zeroed beyond
  b.Store(disk);
  EXPECT_EQ(disk[0], 0x01);
  EXPECT_EQ(disk[1], 0x02);
  EXPECT_EQ(disk[7], 0x80);
  EXPECT_EQ(disk[8], 0x00);
  EXPECT_EQ(disk[kMdBlockBytes], 0x00);
}

TEST(Bitmap, StoreLoadRoundTrip) {
  Bitmap b(300 * kMiB + 5);
  b.SetRange(12345, 99999);
  b.SetRange(299 * kMiB, kMiB + 5);
  std::vector<uint8_t> disk(b.page_count() * kMdBlockBytes);
  b.Store(disk);
  Bitmap c(300 * kMiB + 5);
  ASSERT_TRUE(c.Load(disk).ok());
  EXPECT_EQ(c.CountSet(), b.CountSet());
  EXPECT_EQ(c.OutOfSyncBytes(), b.OutOfSyncBytes());
  for (uint64_t bit = 0; bit < b.bit_count(); ++bit) ASSERT_EQ(b.Test(bit), c.Test(bit)) << bit;
  EXPECT_TRUE(c.DirtyPages().empty());
  std::vector<uint8_t> page(kMdBlockBytes);
  c.StorePage(2, page);
  EXPECT_TRUE(std::equal(page.begin(), page.end(), disk.begin() + 2 * kMdBlockBytes));
}

TEST(Bitmap, LoadRefusesBitsBeyondTheData) {
  Bitmap b(70 * kBlock);  // 70 bits: word 1 has 6 valid bits
  std::vector<uint8_t> disk(kMdBlockBytes, 0);
  disk[8] = 0x40;  // bit 70
  Status s = b.Load(disk);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bit 70 set beyond the end"), std::string::npos) << s.message();
  disk[8] = 0;
  disk[4000] = 1;  // later in the page
  EXPECT_FALSE(b.Load(disk).ok());
  disk[4000] = 0;
  EXPECT_TRUE(b.Load(disk).ok());
  EXPECT_FALSE(b.Load(std::span(disk).first(100)).ok());  // too short
}

TEST(Bitmap, MatchesASimpleModel) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const uint64_t data = 700 * kBlock + 123;
  Bitmap b(data);
  std::vector<bool> model(b.bit_count(), false);
  for (int step = 0; step < 2000; ++step) {
    const uint64_t off = rng() % data;
    const uint64_t len = rng() % std::min<uint64_t>(data - off + 1, 80 * kBlock);
    const bool set = rng() % 2 == 0;
    if (set) {
      b.SetRange(off, len);
      for (uint64_t i = off / kBlock; len != 0 && i < DivCeil(off + len, kBlock); ++i) {
        model[i] = true;
      }
    } else {
      b.ClearRange(off, len);
      const uint64_t end = off + len == data ? model.size() : (off + len) / kBlock;
      for (uint64_t i = DivCeil(off, kBlock); len != 0 && i < end; ++i) model[i] = false;
    }
  }
  uint64_t count = 0;
  for (uint64_t i = 0; i < model.size(); ++i) {
    ASSERT_EQ(b.Test(i), model[i]) << "bit " << i;
    count += model[i];
  }
  EXPECT_EQ(b.CountSet(), count);
  uint64_t walked = 0;
  for (uint64_t i = b.FindNextSet(0); i < b.bit_count(); i = b.FindNextSet(i + 1)) ++walked;
  EXPECT_EQ(walked, count);
}

}  // namespace
}  // namespace repld
