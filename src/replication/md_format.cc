#include "replication/md_format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "replication/crc32c.h"

namespace repld {
namespace {

// Superblock field offsets (docs/metadata.md, "Superblock").
constexpr size_t kSbMagic = 0;
constexpr size_t kSbVersion = 8;
constexpr size_t kSbCrc = 12;
constexpr size_t kSbDeviceUuid = 16;
constexpr size_t kSbFlags = 32;
constexpr size_t kSbAlExtents = 36;
constexpr size_t kSbBackingBytes = 40;
constexpr size_t kSbDataBytes = 48;
constexpr size_t kSbMdOffset = 56;
constexpr size_t kSbMdBytes = 64;
constexpr size_t kSbSuperblockOffset = 72;
constexpr size_t kSbAlOffset = 80;
constexpr size_t kSbAlSlotBytes = 88;
constexpr size_t kSbAlSlots = 96;
constexpr size_t kSbBitmapOffset = 104;
constexpr size_t kSbBitmapBytes = 112;
constexpr size_t kSbBitmapGrain = 120;
constexpr size_t kSbAlExtentBytes = 124;
constexpr size_t kSbPlacement = 128;
constexpr size_t kSbCurrentUuid = 136;
constexpr size_t kSbBitmapUuid = 144;
constexpr size_t kSbHistoryUuid = 152;  // two u64
constexpr size_t kSbCreated = 168;
constexpr size_t kSbNodeName = 192;
constexpr size_t kSbResourceName = 256;
constexpr size_t kSbUsedBytes = 320;  // the rest of the block is reserved, zero
static_assert(kSbResourceName + kMdNameBytesMax == kSbUsedBytes);
static_assert(kSbUsedBytes <= kMdBlockBytes);
constexpr uint8_t kPlacementInternal = 1;
constexpr uint8_t kPlacementExternal = 2;

// Activity-log transaction field offsets (docs/metadata.md, "Activity log").
constexpr size_t kAlMagicOff = 0;
constexpr size_t kAlCrc = 8;
constexpr size_t kAlExtentsOff = 12;
constexpr size_t kAlSeq = 16;
constexpr size_t kAlDeviceUuid = 24;
constexpr size_t kAlSlotIndex = 40;
constexpr size_t kAlTable = 64;
static_assert(kAlTable == kAlHeaderBytes);

void Put32(std::span<uint8_t> b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(std::span<uint8_t> b, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(std::span<const uint8_t> b, size_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}
uint64_t Get64(std::span<const uint8_t> b, size_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}

// CRC32C of `b` with its 4-byte checksum field at `crc_off` taken as zero.
uint32_t BlockCrc(std::span<const uint8_t> b, size_t crc_off) {
  static constexpr uint8_t kZero[4] = {};
  uint32_t crc = Crc32c(b.first(crc_off));
  crc = Crc32c(kZero, crc);
  return Crc32c(b.subspan(crc_off + 4), crc);
}

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08" PRIx32, v);
  return buf;
}

void PutName(std::span<uint8_t> b, size_t off, const std::string& name) {
  REPLD_CHECK(name.size() <= kMdNameBytesMax);
  std::memcpy(b.data() + off, name.data(), name.size());
}
std::string GetName(std::span<const uint8_t> b, size_t off) {
  const auto* p = reinterpret_cast<const char*>(b.data() + off);
  return std::string(p, strnlen(p, kMdNameBytesMax));
}

bool AllZero(std::span<const uint8_t> b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

// The first field in which two layouts differ, for "inconsistent fields" messages.
std::string LayoutDifference(const MdLayout& stored, const MdLayout& derived) {
  struct Field {
    const char* name;
    uint64_t MdLayout::*member;
  };
  static constexpr Field kFields[] = {{"md_offset", &MdLayout::md_offset},
                                      {"md_bytes", &MdLayout::md_bytes},
                                      {"superblock_offset", &MdLayout::superblock_offset},
                                      {"al_offset", &MdLayout::al_offset},
                                      {"al_slot_bytes", &MdLayout::al_slot_bytes},
                                      {"al_slots", &MdLayout::al_slots},
                                      {"bitmap_offset", &MdLayout::bitmap_offset},
                                      {"bitmap_bytes", &MdLayout::bitmap_bytes},
                                      {"data_bytes", &MdLayout::data_bytes}};
  for (const Field& f : kFields) {
    if (stored.*f.member != derived.*f.member) {
      return std::string(f.name) + " is " + std::to_string(stored.*f.member) + ", the sizes give " +
             std::to_string(derived.*f.member);
    }
  }
  return "placement differs";
}

}  // namespace

uint64_t AlSlotBytes(uint32_t al_extents) {
  return AlignUp(kAlHeaderBytes + 4ull * al_extents, kMdBlockBytes);
}

uint64_t BitmapBytesFor(uint64_t backing_bytes) {
  const uint64_t bits = DivCeil(backing_bytes, kBitmapGrainBytes);
  return AlignUp(DivCeil(bits, 8), kMdBlockBytes);
}

uint64_t MdBytesFor(uint64_t backing_bytes, uint32_t al_extents) {
  return kMdBlockBytes + kAlSlots * AlSlotBytes(al_extents) + BitmapBytesFor(backing_bytes);
}

Result<MdLayout> ComputeLayout(uint64_t backing_bytes, bool internal, uint64_t external_md_bytes,
                               uint32_t al_extents) {
  if (al_extents < kAlExtentsMin || al_extents > kAlExtentsMax) {
    return Status::Invalid("al_extents " + std::to_string(al_extents) + " is out of range " +
                           std::to_string(kAlExtentsMin) + ".." + std::to_string(kAlExtentsMax));
  }
  MdLayout l;
  l.internal = internal;
  l.al_slot_bytes = AlSlotBytes(al_extents);
  l.al_slots = kAlSlots;
  l.bitmap_bytes = BitmapBytesFor(backing_bytes);
  l.md_bytes = MdBytesFor(backing_bytes, al_extents);
  const uint64_t al_bytes = l.al_slots * l.al_slot_bytes;
  const uint64_t disk_bytes = AlignDown(backing_bytes, kMdBlockBytes);
  if (internal) {
    if (disk_bytes < l.md_bytes + kMinDataBytes) {
      return Status::Invalid("the disk (" + FormatSizeBytes(backing_bytes) +
                             ") is too small for internal metadata: the metadata needs " +
                             FormatSizeBytes(l.md_bytes) + " (al_extents " +
                             std::to_string(al_extents) + ") and at least " +
                             FormatSizeBytes(kMinDataBytes) +
                             " must remain for data; use a bigger disk, fewer al_extents, or "
                             "external metadata");
    }
    // From the end: [data][bitmap][activity log][superblock]. The superblock's place depends
    // on the disk size only, so it is found without knowing al_extents.
    l.superblock_offset = disk_bytes - kMdBlockBytes;
    l.al_offset = l.superblock_offset - al_bytes;
    l.bitmap_offset = l.al_offset - l.bitmap_bytes;
    l.md_offset = l.bitmap_offset;
    l.data_bytes = l.md_offset;
  } else {
    l.data_bytes = disk_bytes;
    if (l.data_bytes < kMinDataBytes) {
      return Status::Invalid("the disk (" + FormatSizeBytes(backing_bytes) +
                             ") is too small: at least " + FormatSizeBytes(kMinDataBytes) +
                             " of data is needed");
    }
    if (external_md_bytes < l.md_bytes) {
      return Status::Invalid("the external metadata device is too small: it has " +
                             std::to_string(external_md_bytes) + " bytes (" +
                             FormatSizeBytes(external_md_bytes) + "), the metadata needs " +
                             std::to_string(l.md_bytes) + " bytes (" + FormatSizeBytes(l.md_bytes) +
                             ") for a disk of " + FormatSizeBytes(backing_bytes) +
                             " with al_extents " + std::to_string(al_extents));
    }
    // From byte 0: [superblock][activity log][bitmap].
    l.md_offset = 0;
    l.superblock_offset = 0;
    l.al_offset = kMdBlockBytes;
    l.bitmap_offset = l.al_offset + al_bytes;
  }
  return l;
}

bool SuperblockOffset(uint64_t md_device_bytes, bool internal, uint64_t* offset) {
  if (!internal) {
    *offset = 0;
    return md_device_bytes >= kMdBlockBytes;
  }
  const uint64_t disk_bytes = AlignDown(md_device_bytes, kMdBlockBytes);
  if (disk_bytes < kMdBlockBytes) return false;
  *offset = disk_bytes - kMdBlockBytes;
  return true;
}

std::string MdFlagNames(uint32_t flags) {
  static constexpr std::pair<uint32_t, const char*> kNames[] = {
      {kMdConsistent, "Consistent"},
      {kMdWasUpToDate, "WasUpToDate"},
      {kMdWasPrimary, "WasPrimary"},
      {kMdCrashedPrimary, "CrashedPrimary"},
      {kMdPeerOutdated, "PeerOutdated"},
      {kMdFullSync, "FullSync"},
      {kMdAlClean, "AlClean"},
      {kMdPrimaryAtSplit, "PrimaryAtSplit"},
      {kMdIoError, "IoError"}};
  std::string out;
  for (const auto& [bit, name] : kNames) {
    if ((flags & bit) == 0) continue;
    if (!out.empty()) out += '|';
    out += name;
  }
  if ((flags & ~kMdKnownFlags) != 0)
    out += (out.empty() ? "" : "|") + Hex32(flags & ~kMdKnownFlags);
  return out.empty() ? "none" : out;
}

std::string FormatMdUuid(const MdUuid& uuid) {
  std::string out;
  char buf[3];
  for (size_t i = 0; i < uuid.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    std::snprintf(buf, sizeof buf, "%02x", uuid[i]);
    out += buf;
  }
  return out;
}

MdBlock EncodeSuperblock(const Superblock& sb) {
  MdBlock block{};
  std::span<uint8_t> b(block);
  std::copy(kSuperblockMagic.begin(), kSuperblockMagic.end(), block.begin() + kSbMagic);
  Put32(b, kSbVersion, kMdFormatVersion);
  std::copy(sb.device_uuid.begin(), sb.device_uuid.end(), block.begin() + kSbDeviceUuid);
  Put32(b, kSbFlags, sb.flags);
  Put32(b, kSbAlExtents, sb.al_extents);
  Put64(b, kSbBackingBytes, sb.backing_bytes);
  const MdLayout& l = sb.layout;
  Put64(b, kSbDataBytes, l.data_bytes);
  Put64(b, kSbMdOffset, l.md_offset);
  Put64(b, kSbMdBytes, l.md_bytes);
  Put64(b, kSbSuperblockOffset, l.superblock_offset);
  Put64(b, kSbAlOffset, l.al_offset);
  Put64(b, kSbAlSlotBytes, l.al_slot_bytes);
  Put64(b, kSbAlSlots, l.al_slots);
  Put64(b, kSbBitmapOffset, l.bitmap_offset);
  Put64(b, kSbBitmapBytes, l.bitmap_bytes);
  Put32(b, kSbBitmapGrain, static_cast<uint32_t>(kBitmapGrainBytes));
  Put32(b, kSbAlExtentBytes, static_cast<uint32_t>(kAlExtentBytes));
  b[kSbPlacement] = l.internal ? kPlacementInternal : kPlacementExternal;
  Put64(b, kSbCurrentUuid, sb.current_uuid);
  Put64(b, kSbBitmapUuid, sb.bitmap_uuid);
  Put64(b, kSbHistoryUuid, sb.history_uuid[0]);
  Put64(b, kSbHistoryUuid + 8, sb.history_uuid[1]);
  Put64(b, kSbCreated, sb.created_unix_seconds);
  PutName(b, kSbNodeName, sb.node_name);
  PutName(b, kSbResourceName, sb.resource_name);
  Put32(b, kSbCrc, BlockCrc(b, kSbCrc));
  return block;
}

bool HasSuperblockMagic(std::span<const uint8_t> block) {
  return block.size() >= kSuperblockMagic.size() &&
         std::equal(kSuperblockMagic.begin(), kSuperblockMagic.end(), block.begin());
}

Result<Superblock> DecodeSuperblock(std::span<const uint8_t> b) {
  REPLD_CHECK(b.size() == kMdBlockBytes);
  if (!HasSuperblockMagic(b)) {
    return Status::Invalid(AllZero(b.first(kSbUsedBytes))
                               ? "no repld metadata: the superblock block is all zeroes"
                               : "not repld metadata: bad magic (expected \"REPLD-MD\")");
  }
  const uint32_t stored_crc = Get32(b, kSbCrc);
  const uint32_t computed_crc = BlockCrc(b, kSbCrc);
  const uint32_t version = Get32(b, kSbVersion);
  if (version != kMdFormatVersion) {
    return Status::Invalid(
        "unsupported metadata format version " + std::to_string(version) + " (this build reads " +
        "version " + std::to_string(kMdFormatVersion) + ")" +
        (stored_crc == computed_crc ? "; use a newer repld"
                                    : "; its checksum does not match either, so the superblock "
                                      "is probably damaged"));
  }
  if (stored_crc != computed_crc) {
    return Status::Invalid("superblock checksum mismatch: expected " + Hex32(stored_crc) +
                           " (stored), found " + Hex32(computed_crc) +
                           " (computed over the block): the superblock is damaged");
  }
  Superblock sb;
  std::copy_n(b.begin() + kSbDeviceUuid, sb.device_uuid.size(), sb.device_uuid.begin());
  sb.flags = Get32(b, kSbFlags);
  sb.al_extents = Get32(b, kSbAlExtents);
  sb.backing_bytes = Get64(b, kSbBackingBytes);
  MdLayout& l = sb.layout;
  l.data_bytes = Get64(b, kSbDataBytes);
  l.md_offset = Get64(b, kSbMdOffset);
  l.md_bytes = Get64(b, kSbMdBytes);
  l.superblock_offset = Get64(b, kSbSuperblockOffset);
  l.al_offset = Get64(b, kSbAlOffset);
  l.al_slot_bytes = Get64(b, kSbAlSlotBytes);
  l.al_slots = Get64(b, kSbAlSlots);
  l.bitmap_offset = Get64(b, kSbBitmapOffset);
  l.bitmap_bytes = Get64(b, kSbBitmapBytes);
  const uint8_t placement = b[kSbPlacement];
  l.internal = placement == kPlacementInternal;
  sb.current_uuid = Get64(b, kSbCurrentUuid);
  sb.bitmap_uuid = Get64(b, kSbBitmapUuid);
  sb.history_uuid = {Get64(b, kSbHistoryUuid), Get64(b, kSbHistoryUuid + 8)};
  sb.created_unix_seconds = Get64(b, kSbCreated);
  sb.node_name = GetName(b, kSbNodeName);
  sb.resource_name = GetName(b, kSbResourceName);

  const std::string bad = "superblock has inconsistent fields: ";
  if (Get32(b, kSbBitmapGrain) != kBitmapGrainBytes ||
      Get32(b, kSbAlExtentBytes) != kAlExtentBytes) {
    return Status::Invalid(bad + "bitmap grain " + std::to_string(Get32(b, kSbBitmapGrain)) +
                           " and AL extent " + std::to_string(Get32(b, kSbAlExtentBytes)) +
                           " bytes; version 1 uses 4096 and 4194304");
  }
  if (placement != kPlacementInternal && placement != kPlacementExternal) {
    return Status::Invalid(bad + "placement " + std::to_string(placement) +
                           " is neither 1 (internal) nor 2 (external)");
  }
  if ((sb.flags & ~kMdKnownFlags) != 0) {
    return Status::Invalid(bad + "unknown flags " + Hex32(sb.flags & ~kMdKnownFlags));
  }
  auto derived = ComputeLayout(sb.backing_bytes, l.internal, l.md_bytes, sb.al_extents);
  if (!derived.ok()) return Status::Invalid(bad + derived.status().message());
  if (!(derived.value() == l)) return Status::Invalid(bad + LayoutDifference(l, derived.value()));
  return sb;
}

AlContext AlContextOf(const Superblock& sb) {
  return AlContext{sb.device_uuid, sb.al_extents, sb.layout.al_slot_bytes, sb.layout.al_slots,
                   sb.layout.data_bytes};
}

void EncodeAlTransaction(const AlTransaction& txn, const AlContext& ctx, std::span<uint8_t> out) {
  REPLD_CHECK(out.size() == ctx.al_slot_bytes);
  REPLD_CHECK(txn.extents.size() == ctx.al_extents);
  REPLD_CHECK(txn.seq != 0);
  std::fill(out.begin(), out.end(), uint8_t{0});
  std::copy(kAlMagic.begin(), kAlMagic.end(), out.begin() + kAlMagicOff);
  Put32(out, kAlExtentsOff, ctx.al_extents);
  Put64(out, kAlSeq, txn.seq);
  std::copy(ctx.device_uuid.begin(), ctx.device_uuid.end(), out.begin() + kAlDeviceUuid);
  Put32(out, kAlSlotIndex, static_cast<uint32_t>(txn.seq % ctx.al_slots));
  for (size_t i = 0; i < txn.extents.size(); ++i) Put32(out, kAlTable + 4 * i, txn.extents[i]);
  Put32(out, kAlCrc, BlockCrc(out, kAlCrc));
}

AlSlot DecodeAlSlot(std::span<const uint8_t> s, const AlContext& ctx, uint32_t slot_index) {
  REPLD_CHECK(s.size() == ctx.al_slot_bytes);
  auto corrupt = [&](const std::string& why) {
    return AlSlot{AlSlotState::kCorrupt, {}, "AL slot " + std::to_string(slot_index) + ": " + why};
  };
  if (AllZero(s)) return AlSlot{};
  if (!std::equal(kAlMagic.begin(), kAlMagic.end(), s.begin())) {
    return corrupt("bad magic (expected \"REPLD-AL\")");
  }
  const uint32_t stored_crc = Get32(s, kAlCrc);
  const uint32_t computed_crc = BlockCrc(s, kAlCrc);
  if (stored_crc != computed_crc) {
    return corrupt("checksum mismatch: expected " + Hex32(stored_crc) + " (stored), found " +
                   Hex32(computed_crc) + " (computed)");
  }
  if (!std::equal(ctx.device_uuid.begin(), ctx.device_uuid.end(), s.begin() + kAlDeviceUuid)) {
    return corrupt("written for other metadata (device UUID differs)");
  }
  if (Get32(s, kAlExtentsOff) != ctx.al_extents) {
    return corrupt("holds " + std::to_string(Get32(s, kAlExtentsOff)) +
                   " extents, the superblock says " + std::to_string(ctx.al_extents));
  }
  AlTransaction txn;
  txn.seq = Get64(s, kAlSeq);
  if (txn.seq == 0 || txn.seq % ctx.al_slots != slot_index ||
      Get32(s, kAlSlotIndex) != slot_index) {
    return corrupt("transaction seq " + std::to_string(txn.seq) + " (slot field " +
                   std::to_string(Get32(s, kAlSlotIndex)) + ") does not belong in this slot");
  }
  const uint64_t extents_max = DivCeil(ctx.data_bytes, kAlExtentBytes);
  txn.extents.resize(ctx.al_extents);
  for (size_t i = 0; i < txn.extents.size(); ++i) {
    txn.extents[i] = Get32(s, kAlTable + 4 * i);
    if (txn.extents[i] != kAlEmpty && txn.extents[i] >= extents_max) {
      return corrupt("extent " + std::to_string(txn.extents[i]) + " is beyond the data (" +
                     std::to_string(extents_max) + " extents)");
    }
  }
  return AlSlot{AlSlotState::kValid, std::move(txn), {}};
}

Result<AlReplayResult> AlReplay(std::span<const AlSlot> slots, uint32_t al_extents) {
  AlReplayResult r;
  r.table.assign(al_extents, kAlEmpty);
  const AlSlot* newest = nullptr;
  std::string first_error;
  for (size_t i = 0; i < slots.size(); ++i) {
    const AlSlot& s = slots[i];
    if (s.state == AlSlotState::kCorrupt) {
      if (r.corrupt_slots++ == 0) first_error = s.error;
    } else if (s.state == AlSlotState::kValid &&
               (newest == nullptr || s.txn.seq > newest->txn.seq)) {
      newest = &s;
      r.slot = static_cast<int64_t>(i);
    }
  }
  if (newest == nullptr) {
    if (r.corrupt_slots > 1) {
      return Status::Invalid("the activity log has no valid transaction and " +
                             std::to_string(r.corrupt_slots) + " damaged slots (first: " +
                             first_error + "): the hot extents are unknown, resync everything");
    }
    return r;
  }
  r.seq = newest->txn.seq;
  r.table = newest->txn.extents;
  for (uint32_t e : newest->txn.extents) {
    if (e != kAlEmpty) r.hot_extents.push_back(e);
  }
  std::sort(r.hot_extents.begin(), r.hot_extents.end());
  r.hot_extents.erase(std::unique(r.hot_extents.begin(), r.hot_extents.end()), r.hot_extents.end());
  return r;
}

}  // namespace repld
