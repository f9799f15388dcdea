#include "blockdev/md_device.h"

#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace repld {
namespace {

// A temp dir with sparse files, removed at the end.
class MdDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/repld-md-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  std::string File(const std::string& name, uint64_t bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path).close();
    EXPECT_EQ(truncate(path.c_str(), static_cast<off_t>(bytes)), 0);
    return path;
  }

  static Superblock NewSuperblock(MdDevice& dev, uint32_t al_extents) {
    Superblock sb;
    sb.device_uuid[0] = 0xAB;
    sb.al_extents = al_extents;
    sb.backing_bytes = dev.data_disk_bytes();
    sb.layout = dev.Layout(al_extents).value();
    sb.node_name = "a";
    sb.resource_name = "r";
    return sb;
  }

  std::string dir_;
};

TEST_F(MdDeviceTest, CreateThenUpdateThenRead) {
  const MdLocation where{File("disk", 256 * kMiB)};
  auto dev = MdDevice::Open(where, {.writable = true, .lock = true});
  ASSERT_TRUE(dev.ok()) << dev.status().message();
  EXPECT_EQ(dev.value()->Probe()->presence, MdPresence::kNone);
  Superblock sb = NewSuperblock(*dev.value(), 61);
  ASSERT_TRUE(dev.value()->Create(sb).ok());
  EXPECT_EQ(dev.value()->Probe()->presence, MdPresence::kValid);

  sb.flags = kMdConsistent | kMdWasUpToDate;
  sb.current_uuid = 42;
  ASSERT_TRUE(dev.value()->WriteSuperblock(sb).ok());
  AlTransaction txn{1, std::vector<uint32_t>(61, kAlEmpty)};
  txn.extents[0] = 3;
  ASSERT_TRUE(dev.value()->WriteAlTransaction(txn).ok());
  txn.seq = 2;
  txn.extents[1] = 9;
  ASSERT_TRUE(dev.value()->WriteAlTransaction(txn).ok());
  Bitmap bits(sb.layout.data_bytes);
  bits.SetRange(200 * kMiB, 8192);
  ASSERT_TRUE(dev.value()->WriteBitmapPages(bits, bits.DirtyPages()).ok());
  dev.value().reset();

  auto ro = MdDevice::Open(where, {});
  ASSERT_TRUE(ro.ok()) << ro.status().message();
  auto md = ro.value()->Read();
  ASSERT_TRUE(md.ok()) << md.status().message();
  EXPECT_EQ(md->superblock, sb);
  EXPECT_EQ(md->al.seq, 2u);
  EXPECT_EQ(md->al.hot_extents, (std::vector<uint32_t>{3, 9}));
  EXPECT_EQ(md->bitmap.CountSet(), 2u);
  EXPECT_TRUE(md->bitmap.Test(200 * kMiB / kBitmapGrainBytes));
}

TEST_F(MdDeviceTest, ExternalMetadataAndItsSize) {
  const std::string disk = File("disk", 64 * kMiB);
  const MdLocation small{disk, File("meta-small", 8192)};
  auto dev = MdDevice::Open(small, {.writable = true, .lock = true});
  ASSERT_TRUE(dev.ok());
  auto l = dev.value()->Layout(1237);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("needs 270336 bytes"), std::string::npos)
      << l.status().message();
  dev.value().reset();  // its lock on the disk

  const MdLocation ok{disk, File("meta", 1 * kMiB)};
  auto dev2 = MdDevice::Open(ok, {.writable = true, .lock = true});
  ASSERT_TRUE(dev2.ok());
  Superblock sb = NewSuperblock(*dev2.value(), 1237);
  EXPECT_EQ(sb.layout.data_bytes, 64 * kMiB);
  ASSERT_TRUE(dev2.value()->Create(sb).ok());
  dev2.value().reset();
  auto md = MdDevice::Open(ok, {}).value()->Read();
  ASSERT_TRUE(md.ok()) << md.status().message();
  // The same disk read as internal finds nothing.
  auto internal = MdDevice::Open(MdLocation{disk}, {}).value()->Read();
  ASSERT_FALSE(internal.ok());
  EXPECT_NE(internal.status().message().find("no repld metadata"), std::string::npos);
}

TEST_F(MdDeviceTest, LockedDiskIsInUse) {
  const MdLocation where{File("disk", 64 * kMiB)};
  auto holder = MdDevice::Open(where, {.writable = true, .lock = true});
  ASSERT_TRUE(holder.ok());
  auto second = MdDevice::Open(where, {.writable = true, .lock = true});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use by a running repld"), std::string::npos)
      << second.status().message();
  EXPECT_TRUE(MdDevice::Open(where, {}).ok());  // reading needs no lock
}

TEST_F(MdDeviceTest, DamageIsReportedWithTheBlock) {
  const MdLocation where{File("disk", 64 * kMiB)};
  auto dev = MdDevice::Open(where, {.writable = true, .lock = true});
  Superblock sb = NewSuperblock(*dev.value(), 7);
  ASSERT_TRUE(dev.value()->Create(sb).ok());
  dev.value().reset();
  {
    std::fstream f(where.data_disk, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(sb.layout.superblock_offset + 300));
    f.put('\x5A');
  }
  auto md = MdDevice::Open(where, {}).value()->Read();
  ASSERT_FALSE(md.ok());
  const std::string& m = md.status().message();
  EXPECT_NE(m.find("at byte " + std::to_string(sb.layout.superblock_offset)), std::string::npos)
      << m;
  EXPECT_NE(m.find("checksum mismatch"), std::string::npos) << m;
  EXPECT_EQ(MdDevice::Open(where, {}).value()->Probe()->presence, MdPresence::kDamaged);
}

}  // namespace
}  // namespace repld
