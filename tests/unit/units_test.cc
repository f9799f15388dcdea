#include "common/units.h"

#include <gtest/gtest.h>

namespace repld {
namespace {

TEST(ParseSizeBytes, AcceptsPlainBytesAndUnits) {
  EXPECT_EQ(ParseSizeBytes("4096"), 4096u);
  EXPECT_EQ(ParseSizeBytes("10M"), 10 * kMiB);
  EXPECT_EQ(ParseSizeBytes("10m"), 10 * kMiB);
  EXPECT_EQ(ParseSizeBytes("4KiB"), 4 * kKiB);
  EXPECT_EQ(ParseSizeBytes("2 GiB"), 2 * kGiB);
  EXPECT_EQ(ParseSizeBytes("1T"), kTiB);
  EXPECT_EQ(ParseSizeBytes("512B"), 512u);
}

TEST(ParseSizeBytes, RejectsGarbageAndOverflow) {
  EXPECT_FALSE(ParseSizeBytes(""));
  EXPECT_FALSE(ParseSizeBytes("M"));
  EXPECT_FALSE(ParseSizeBytes("10X"));
  EXPECT_FALSE(ParseSizeBytes("10MiBs"));
  EXPECT_FALSE(ParseSizeBytes("-1"));
  EXPECT_FALSE(ParseSizeBytes("1.5G"));
  EXPECT_FALSE(ParseSizeBytes("99999999999999999999"));
  EXPECT_FALSE(ParseSizeBytes("20000000000T"));
}

TEST(FormatSizeBytes, ReadsLikeAPerson) {
  EXPECT_EQ(FormatSizeBytes(512), "512 B");
  EXPECT_EQ(FormatSizeBytes(3 * kMiB / 2), "1.5 MiB");
  EXPECT_EQ(FormatSizeBytes(16 * kGiB), "16.0 GiB");
}

TEST(Alignment, Helpers) {
  EXPECT_EQ(AlignDown(4097, 4096), 4096u);
  EXPECT_EQ(AlignUp(4097, 4096), 8192u);
  EXPECT_TRUE(IsAligned(8192, 512));
  EXPECT_FALSE(IsAligned(8193, 512));
  EXPECT_TRUE(IsPowerOfTwo(4096));
  EXPECT_FALSE(IsPowerOfTwo(0));
  EXPECT_FALSE(IsPowerOfTwo(12));
}

}  // namespace
}  // namespace repld
