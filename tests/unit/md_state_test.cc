#include "replication/md_state.h"

#include <gtest/gtest.h>

namespace repld {
namespace {

TEST(MdState, FreshMetadataIsInconsistentAndNeverUsed) {
  Superblock sb;  // what create-md writes: no flags, no ids
  const MdState md = MdStateFromSuperblock(sb);
  EXPECT_EQ(md.disk, DiskState::kInconsistent);
  EXPECT_EQ(md.ids.current, 0u);
  EXPECT_FALSE(md.primary);
}

TEST(MdState, RoundTripsEveryDiskStateAndFlag) {
  for (DiskState d : {DiskState::kInconsistent, DiskState::kOutdated, DiskState::kUpToDate}) {
    for (bool primary : {false, true}) {
      for (bool peer_outdated : {false, true}) {
        MdState md;
        md.disk = d;
        md.primary = primary;
        md.peer_outdated = peer_outdated;
        md.ids = {0x1111, 0x2222, {0x3333, 0x4444}};
        Superblock sb;
        sb.node_name = "alpha";  // untouched by the mapping
        const Superblock out = WithMdState(sb, md);
        EXPECT_EQ(out.node_name, "alpha");
        const MdState back = MdStateFromSuperblock(out);
        EXPECT_EQ(back.disk, d);
        EXPECT_EQ(back.primary, primary);
        EXPECT_EQ(back.peer_outdated, peer_outdated);
        EXPECT_EQ(back.ids, md.ids);
        EXPECT_EQ((out.flags & kMdAlClean) != 0, !primary);
      }
    }
  }
}

TEST(MdState, FullSyncFlagMeansInconsistentUntilTheDiskIsConsistentAgain) {
  Superblock sb;
  sb.flags = kMdConsistent | kMdWasUpToDate | kMdFullSync;
  EXPECT_EQ(MdStateFromSuperblock(sb).disk, DiskState::kInconsistent);
  MdState md;
  md.disk = DiskState::kUpToDate;
  EXPECT_EQ(WithMdState(sb, md).flags & kMdFullSync, 0u);
  md.disk = DiskState::kInconsistent;
  EXPECT_NE(WithMdState(sb, md).flags & kMdFullSync, 0u);
}

}  // namespace
}  // namespace repld
