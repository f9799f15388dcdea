#include "replication/md_format.h"

#include <gtest/gtest.h>

#include <string>

#include "replication/crc32c.h"
#include "replication/fs_detect.h"

namespace repld {
namespace {

// gmock is not linked: a substring check that prints the whole message on failure.
#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)

// --- layout -------------------------------------------------------------------------------------

TEST(MdLayout, OneGibInternalWorkedExample) {  // the example of docs/metadata.md
  auto l = ComputeLayout(1 * kGiB, true, 0, 1237);
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_EQ(l->al_slot_bytes, 8192u);  // 64 + 4 * 1237 = 5012 -> 2 blocks
  EXPECT_EQ(l->al_slots, 32u);
  EXPECT_EQ(l->bitmap_bytes, 32768u);  // 262144 bits
  EXPECT_EQ(l->md_bytes, 4096u + 32 * 8192 + 32768);
  EXPECT_EQ(l->md_bytes, 299008u);
  EXPECT_EQ(l->data_bytes, 1073741824u - 299008);
  EXPECT_EQ(l->md_offset, l->data_bytes);
  EXPECT_EQ(l->bitmap_offset, l->md_offset);
  EXPECT_EQ(l->al_offset, l->bitmap_offset + 32768);
  EXPECT_EQ(l->superblock_offset, 1 * kGiB - 4096);
  EXPECT_TRUE(l->internal);
}

TEST(MdLayout, UnalignedDiskKeepsEverything4KibAligned) {
  auto l = ComputeLayout(1 * kGiB + 1000, true, 0, 7);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->superblock_offset, 1 * kGiB - 4096);  // the last whole block
  EXPECT_EQ(l->al_slot_bytes, 4096u);
  EXPECT_EQ(l->bitmap_bytes, 36864u);  // 262145 bits -> 32769 bytes -> 9 blocks
  EXPECT_EQ(l->data_bytes, 1 * kGiB - (4096 + 32 * 4096 + 36864));
  for (uint64_t v : {l->md_offset, l->md_bytes, l->al_offset, l->bitmap_offset, l->data_bytes}) {
    EXPECT_EQ(v % 4096, 0u) << v;
  }
}

TEST(MdLayout, SlotSizesFollowAlExtents) {
  EXPECT_EQ(AlSlotBytes(7), 4096u);
  EXPECT_EQ(AlSlotBytes(1008), 4096u);  // 64 + 4032 fills one block exactly
  EXPECT_EQ(AlSlotBytes(1009), 8192u);
  EXPECT_EQ(AlSlotBytes(65534), 266240u);
}

TEST(MdLayout, TooSmallDiskIsRefusedWithTheNumbers) {
  auto l = ComputeLayout(1 * kMiB, true, 0, 1237);
  ASSERT_FALSE(l.ok());
  EXPECT_CONTAINS(l.status().message(), "too small for internal metadata");
  EXPECT_CONTAINS(l.status().message(), "external metadata");
  // The smallest that fits: metadata + 1 MiB of data.
  const uint64_t md = MdBytesFor(2 * kMiB, 1237);
  EXPECT_EQ(md, 4096u + 262144 + 4096);
  EXPECT_TRUE(ComputeLayout(2 * kMiB, true, 0, 1237).ok());
  EXPECT_FALSE(ComputeLayout(4096, true, 0, 7).ok());
  EXPECT_FALSE(ComputeLayout(0, false, 1 * kGiB, 7).ok());
}

TEST(MdLayout, AlExtentsOutOfRange) {
  for (uint32_t bad : {0u, 6u, 65535u}) {
    auto l = ComputeLayout(1 * kGiB, true, 0, bad);
    ASSERT_FALSE(l.ok());
    EXPECT_CONTAINS(l.status().message(), "out of range 7..65534");
  }
}

TEST(MdLayout, ExternalStartsAtZeroAndKeepsTheWholeDisk) {
  auto l = ComputeLayout(1 * kGiB, false, 1 * kMiB, 1237);
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_EQ(l->data_bytes, 1 * kGiB);
  EXPECT_EQ(l->md_offset, 0u);
  EXPECT_EQ(l->superblock_offset, 0u);
  EXPECT_EQ(l->al_offset, 4096u);
  EXPECT_EQ(l->bitmap_offset, 4096u + 32 * 8192);
  EXPECT_EQ(l->md_bytes, 299008u);
  EXPECT_FALSE(l->internal);
  EXPECT_TRUE(ComputeLayout(1 * kGiB, false, 299008, 1237).ok());  // exactly enough
}

TEST(MdLayout, ExternalTooSmallSaysHowBigItMustBe) {
  auto l = ComputeLayout(1 * kGiB, false, 299007, 1237);
  ASSERT_FALSE(l.ok());
  EXPECT_CONTAINS(l.status().message(), "too small");
  EXPECT_CONTAINS(l.status().message(), "needs 299008 bytes");
}

TEST(MdLayout, SuperblockPlaceDependsOnTheDiskOnly) {
  uint64_t off = 1;
  ASSERT_TRUE(SuperblockOffset(1 * kGiB + 5, true, &off));
  EXPECT_EQ(off, 1 * kGiB - 4096);
  ASSERT_TRUE(SuperblockOffset(1 * kGiB, false, &off));
  EXPECT_EQ(off, 0u);
  EXPECT_FALSE(SuperblockOffset(4095, true, &off));
}

// --- superblock ---------------------------------------------------------------------------------

Superblock SampleSuperblock(bool internal = true) {
  Superblock sb;
  for (size_t i = 0; i < sb.device_uuid.size(); ++i)
    sb.device_uuid[i] = static_cast<uint8_t>(i + 1);
  sb.flags = kMdConsistent | kMdWasPrimary | kMdPeerOutdated;
  sb.al_extents = 1237;
  sb.backing_bytes = 1 * kGiB;
  sb.layout = ComputeLayout(sb.backing_bytes, internal, 64 * kMiB, sb.al_extents).value();
  sb.current_uuid = 0x1122334455667788;
  sb.bitmap_uuid = 0x99AABBCCDDEEFF00;
  sb.history_uuid = {0x0102030405060708, 0x1112131415161718};
  sb.created_unix_seconds = 1700000000;
  sb.node_name = "alpha";
  sb.resource_name = "www";
  return sb;
}

// Rewrites the checksum after a test changed a field on purpose.
void Reseal(MdBlock& b) {
  for (int i = 12; i < 16; ++i) b[i] = 0;
  const uint32_t crc = Crc32c(b);
  for (int i = 0; i < 4; ++i) b[12 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

TEST(MdSuperblock, RoundTrip) {
  for (bool internal : {true, false}) {
    const Superblock sb = SampleSuperblock(internal);
    const MdBlock b = EncodeSuperblock(sb);
    auto back = DecodeSuperblock(b);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(back.value(), sb);
  }
}

TEST(MdSuperblock, LittleEndianFieldsAtTheDocumentedOffsets) {
  const MdBlock b = EncodeSuperblock(SampleSuperblock());
  EXPECT_EQ(std::string(b.begin(), b.begin() + 8), "REPLD-MD");
  EXPECT_EQ(b[8], 1);             // version
  EXPECT_EQ(b[16], 1);            // device uuid
  EXPECT_EQ(b[36], 1237 & 0xFF);  // al_extents
  EXPECT_EQ(b[136], 0x88);        // current uuid, low byte first
  EXPECT_EQ(b[143], 0x11);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[192])), "alpha");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[256])), "www");
}

TEST(MdSuperblock, NamesOfSixtyFourBytesFit) {
  Superblock sb = SampleSuperblock();
  sb.node_name = std::string(64, 'n');
  sb.resource_name = std::string(64, 'r');
  auto back = DecodeSuperblock(EncodeSuperblock(sb));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->node_name, sb.node_name);
  EXPECT_EQ(back->resource_name, sb.resource_name);
}

TEST(MdSuperblock, EveryFlippedByteIsDetected) {
  const MdBlock good = EncodeSuperblock(SampleSuperblock());
  for (size_t i = 0; i < good.size(); ++i) {
    MdBlock b = good;
    b[i] ^= 0x40;
    auto r = DecodeSuperblock(b);
    ASSERT_FALSE(r.ok()) << "byte " << i;
    const std::string& m = r.status().message();
    if (i < 8) {
      EXPECT_CONTAINS(m, "not repld metadata: bad magic") << i;
    } else if (i < 12) {
      EXPECT_CONTAINS(m, "unsupported metadata format version") << i;
      EXPECT_CONTAINS(m, "probably damaged") << i;
    } else {
      EXPECT_CONTAINS(m, "superblock checksum mismatch") << "byte " << i << ": " << m;
    }
  }
}

TEST(MdSuperblock, ChecksumMessageNamesExpectedAndFound) {
  MdBlock b = EncodeSuperblock(SampleSuperblock());
  b[12] = 0x78, b[13] = 0x56, b[14] = 0x34, b[15] = 0x12;
  auto r = DecodeSuperblock(b);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "expected 0x12345678 (stored), found 0x");
}

TEST(MdSuperblock, WrongMagicAndZeroes) {
  MdBlock b = EncodeSuperblock(SampleSuperblock());
  b[0] = 'X';
  Reseal(b);
  EXPECT_CONTAINS(DecodeSuperblock(b).status().message(), "not repld metadata");
  MdBlock zero{};
  EXPECT_CONTAINS(DecodeSuperblock(zero).status().message(), "no repld metadata");
}

TEST(MdSuperblock, FutureVersionIsRefusedByNumber) {
  MdBlock b = EncodeSuperblock(SampleSuperblock());
  b[8] = 99;
  Reseal(b);
  auto r = DecodeSuperblock(b);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "unsupported metadata format version 99");
  EXPECT_CONTAINS(r.status().message(), "use a newer repld");
}

TEST(MdSuperblock, InconsistentFieldsAreNamed) {
  MdBlock b = EncodeSuperblock(SampleSuperblock());
  b[48] ^= 0x10;  // data_bytes
  Reseal(b);
  auto r = DecodeSuperblock(b);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "inconsistent fields: data_bytes");

  b = EncodeSuperblock(SampleSuperblock());
  b[32 + 3] = 0x80;  // an unknown flag
  Reseal(b);
  EXPECT_CONTAINS(DecodeSuperblock(b).status().message(), "unknown flags 0x80000000");

  b = EncodeSuperblock(SampleSuperblock());
  b[128] = 7;  // placement
  Reseal(b);
  EXPECT_CONTAINS(DecodeSuperblock(b).status().message(), "placement 7");

  b = EncodeSuperblock(SampleSuperblock());
  b[36] = 3, b[37] = 0;  // al_extents 3
  Reseal(b);
  EXPECT_CONTAINS(DecodeSuperblock(b).status().message(), "al_extents 3 is out of range");
}

TEST(MdSuperblock, FlagNames) {
  EXPECT_EQ(MdFlagNames(0), "none");
  EXPECT_EQ(MdFlagNames(kMdConsistent | kMdCrashedPrimary), "Consistent|CrashedPrimary");
  EXPECT_EQ(FormatMdUuid(SampleSuperblock().device_uuid), "01020304-0506-0708-090a-0b0c0d0e0f10");
}

// --- activity log -------------------------------------------------------------------------------

AlContext SampleContext() { return AlContextOf(SampleSuperblock()); }

std::vector<uint8_t> EncodeSlot(uint64_t seq, std::vector<uint32_t> hot, const AlContext& ctx) {
  AlTransaction txn{seq, std::vector<uint32_t>(ctx.al_extents, kAlEmpty)};
  for (size_t i = 0; i < hot.size(); ++i) txn.extents[i * 3] = hot[i];  // spread over the table
  std::vector<uint8_t> out(ctx.al_slot_bytes);
  EncodeAlTransaction(txn, ctx, out);
  return out;
}

TEST(ActivityLog, RoundTrip) {
  const AlContext ctx = SampleContext();
  const auto bytes = EncodeSlot(37, {5, 200, 9}, ctx);
  const AlSlot s = DecodeAlSlot(bytes, ctx, 37 % 32);
  ASSERT_EQ(s.state, AlSlotState::kValid) << s.error;
  EXPECT_EQ(s.txn.seq, 37u);
  EXPECT_EQ(s.txn.extents[0], 5u);
  EXPECT_EQ(s.txn.extents[3], 200u);
  EXPECT_EQ(s.txn.extents[1], kAlEmpty);
}

TEST(ActivityLog, ZeroSlotIsEmptyAndFreshLogIsEmpty) {
  const AlContext ctx = SampleContext();
  std::vector<uint8_t> zero(ctx.al_slot_bytes, 0);
  std::vector<AlSlot> slots;
  for (uint32_t i = 0; i < ctx.al_slots; ++i) slots.push_back(DecodeAlSlot(zero, ctx, i));
  EXPECT_EQ(slots[0].state, AlSlotState::kEmpty);
  auto r = AlReplay(slots, ctx.al_extents);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->seq, 0u);
  EXPECT_EQ(r->slot, -1);
  EXPECT_TRUE(r->hot_extents.empty());
  EXPECT_EQ(r->table, std::vector<uint32_t>(ctx.al_extents, kAlEmpty));
}

TEST(ActivityLog, EachKindOfDamageIsNamed) {
  const AlContext ctx = SampleContext();
  auto good = EncodeSlot(3, {1, 2}, ctx);
  auto flipped = good;
  flipped[100] ^= 1;
  EXPECT_CONTAINS(DecodeAlSlot(flipped, ctx, 3).error, "AL slot 3: checksum mismatch");
  auto magic = good;
  magic[0] = 'x';
  EXPECT_CONTAINS(DecodeAlSlot(magic, ctx, 3).error, "bad magic");
  EXPECT_CONTAINS(DecodeAlSlot(good, ctx, 4).error, "does not belong in this slot");
  AlContext other = ctx;
  other.device_uuid[0] ^= 1;
  EXPECT_CONTAINS(DecodeAlSlot(good, other, 3).error, "other metadata");
  AlContext small = ctx;
  small.data_bytes = 4 * kMiB;  // one extent: extent 1 and 2 are beyond it
  EXPECT_CONTAINS(DecodeAlSlot(EncodeSlot(3, {1}, small), small, 3).error, "beyond the data");
}

TEST(ActivityLog, ReplayPicksHighestValidSeqAcrossTheWrap) {
  const AlContext ctx = SampleContext();
  std::vector<AlSlot> slots(ctx.al_slots);
  for (uint64_t seq = 10; seq <= 40; ++seq) {  // wraps: 32..40 overwrite slots 0..8
    const uint32_t slot = static_cast<uint32_t>(seq % ctx.al_slots);
    slots[slot] = DecodeAlSlot(EncodeSlot(seq, {static_cast<uint32_t>(seq), 7}, ctx), ctx, slot);
    ASSERT_EQ(slots[slot].state, AlSlotState::kValid);
  }
  auto r = AlReplay(slots, ctx.al_extents);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->seq, 40u);
  EXPECT_EQ(r->slot, 8);
  EXPECT_EQ(r->hot_extents, (std::vector<uint32_t>{7, 40}));  // sorted
  EXPECT_EQ(r->table, slots[8].txn.extents);                  // as stored, for ActivityLog
}

TEST(ActivityLog, TornNewerSlotIsSkipped) {
  const AlContext ctx = SampleContext();
  std::vector<AlSlot> slots(ctx.al_slots);
  slots[5] = DecodeAlSlot(EncodeSlot(5, {50}, ctx), ctx, 5);
  auto torn = EncodeSlot(6, {60}, ctx);
  std::fill(torn.begin() + 2048, torn.end(), 0);  // only the first sectors reached the disk
  slots[6] = DecodeAlSlot(torn, ctx, 6);
  ASSERT_EQ(slots[6].state, AlSlotState::kCorrupt);
  auto r = AlReplay(slots, ctx.al_extents);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->seq, 5u);
  EXPECT_EQ(r->hot_extents, std::vector<uint32_t>{50});
  EXPECT_EQ(r->corrupt_slots, 1u);
}

TEST(ActivityLog, NoValidTransaction) {
  const AlContext ctx = SampleContext();
  std::vector<AlSlot> slots(ctx.al_slots);
  auto bad = EncodeSlot(1, {1}, ctx);
  bad[20] ^= 1;
  slots[1] = DecodeAlSlot(bad, ctx, 1);
  auto one =
      AlReplay(slots, ctx.al_extents);  // a torn first transaction: nothing it covered was written
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->seq, 0u);
  slots[2] = slots[1];
  auto two = AlReplay(slots, ctx.al_extents);
  ASSERT_FALSE(two.ok());
  EXPECT_CONTAINS(two.status().message(), "no valid transaction and 2 damaged slots");
}

// --- file systems -------------------------------------------------------------------------------

std::vector<uint8_t> ExtHead(uint32_t blocks_lo, uint32_t blocks_hi, uint32_t log_block,
                             bool feature_64bit) {
  std::vector<uint8_t> b(kFsProbeBytes, 0);
  auto put = [&](size_t off, uint32_t v, int n) {
    for (int i = 0; i < n; ++i) b[1024 + off + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  put(0x38, 0xEF53, 2);
  put(0x04, blocks_lo, 4);
  put(0x18, log_block, 4);
  put(0x150, blocks_hi, 4);
  put(0x60, feature_64bit ? 0x80 : 0, 4);
  return b;
}

TEST(MdFsDetect, Ext4SizeFromBlocksAndBlockSize) {
  auto fs = DetectFileSystem(ExtHead(16384, 0, 2, false));
  ASSERT_TRUE(fs.has_value());
  EXPECT_EQ(fs->type, "ext2/3/4");
  EXPECT_EQ(fs->size_bytes, 16384u * 4096);
  // The high word counts only with the 64bit feature.
  EXPECT_EQ(DetectFileSystem(ExtHead(1, 2, 2, false))->size_bytes, 4096u);
  EXPECT_EQ(DetectFileSystem(ExtHead(1, 2, 2, true))->size_bytes, ((2ull << 32) + 1) * 4096);
}

TEST(MdFsDetect, XfsBigEndian) {
  std::vector<uint8_t> b(kFsProbeBytes, 0);
  const uint8_t head[] = {'X', 'F', 'S', 'B', 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x40, 0};
  std::copy(std::begin(head), std::end(head), b.begin());
  auto fs = DetectFileSystem(b);
  ASSERT_TRUE(fs.has_value());
  EXPECT_EQ(fs->type, "xfs");
  EXPECT_EQ(fs->size_bytes, 0x4000u * 4096);
}

TEST(MdFsDetect, NothingOnZeroesOrShortHeads) {
  EXPECT_FALSE(DetectFileSystem(std::vector<uint8_t>(kFsProbeBytes, 0)).has_value());
  auto ext = ExtHead(16384, 0, 2, false);
  EXPECT_FALSE(DetectFileSystem(std::span(ext).first(1500)).has_value());
}

}  // namespace
}  // namespace repld
