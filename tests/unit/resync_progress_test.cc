// The resync's speed and time left in status: over the last 10 s, from once-a-second samples.
#include "daemon/resync_progress.h"

#include <gtest/gtest.h>

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;

TEST(ResyncProgress, NothingToSayBeforeTwoSamples) {
  ResyncProgress p;
  EXPECT_FALSE(p.Rate().speed_bytes_per_second);
  p.Sample(100.0, 0, 100 * kMiB);
  EXPECT_FALSE(p.Rate().speed_bytes_per_second);
  EXPECT_FALSE(p.Rate().eta_seconds);
}

TEST(ResyncProgress, SpeedOverTheLastTenSecondsAndAverageSinceTheStart) {
  ResyncProgress p;
  // 20 s at 1 MiB/s, then 10 s at 4 MiB/s, of 1000 MiB.
  uint64_t done = 0;
  for (int s = 0; s <= 30; ++s) {
    p.Sample(s, done, 1000 * kMiB);
    done += (s < 20 ? 1 : 4) * kMiB;
  }
  const ResyncRate r = p.Rate();
  ASSERT_TRUE(r.speed_bytes_per_second && r.average_bytes_per_second && r.eta_seconds);
  EXPECT_EQ(*r.speed_bytes_per_second, 4 * kMiB);
  EXPECT_EQ(*r.average_bytes_per_second, 60 * kMiB / 30);
  EXPECT_EQ(*r.eta_seconds, (1000 - 60) / 4);
}

TEST(ResyncProgress, AStalledResyncHasNoFinishTime) {
  ResyncProgress p;
  for (int s = 0; s < 15; ++s) p.Sample(s, 5 * kMiB, 10 * kMiB);
  EXPECT_EQ(*p.Rate().speed_bytes_per_second, 0u);
  EXPECT_FALSE(p.Rate().eta_seconds);
}

TEST(ResyncProgress, ANewTotalStartsOver) {
  ResyncProgress p;
  p.Sample(0, 0, 10 * kMiB);
  p.Sample(1, 5 * kMiB, 10 * kMiB);
  p.Sample(2, 0, 20 * kMiB);  // a new resync
  EXPECT_FALSE(p.Rate().speed_bytes_per_second);
  p.Sample(3, 2 * kMiB, 20 * kMiB);
  EXPECT_EQ(*p.Rate().average_bytes_per_second, 2 * kMiB);
  EXPECT_EQ(*p.Rate().eta_seconds, 9u);
}

}  // namespace
}  // namespace repld
