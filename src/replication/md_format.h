// The resource's on-disk metadata: where it lives (layout), the superblock, and the activity-log
// transactions. Pure codecs: no I/O, no clock, no randomness (the caller supplies the UUID and
// the creation time). Every multi-byte field is little-endian, encoded field by field. The byte
// layout of every block is documented in docs/metadata.md; keep the two in step.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/units.h"

namespace repld {

inline constexpr uint64_t kMdBlockBytes = 4096;       // every metadata offset and size is aligned
inline constexpr uint64_t kBitmapGrainBytes = 4096;   // data covered by one bitmap bit
inline constexpr uint64_t kAlExtentBytes = 4 * kMiB;  // data covered by one activity-log extent
inline constexpr uint32_t kMdFormatVersion = 1;
inline constexpr uint32_t kAlSlots = 32;  // transactions in the activity-log ring
inline constexpr uint32_t kAlExtentsMin = 7;
inline constexpr uint32_t kAlExtentsMax = 65534;
inline constexpr uint64_t kAlHeaderBytes = 64;       // before the extent table of a transaction
inline constexpr uint64_t kMinDataBytes = 1 * kMiB;  // a smaller data area is refused
inline constexpr size_t kMdNameBytesMax = 64;        // node and resource names, NUL-padded
// The first 8 bytes of a superblock and of a written activity-log transaction.
inline constexpr std::array<uint8_t, 8> kSuperblockMagic = {'R', 'E', 'P', 'L', 'D', '-', 'M', 'D'};
inline constexpr std::array<uint8_t, 8> kAlMagic = {'R', 'E', 'P', 'L', 'D', '-', 'A', 'L'};
inline constexpr uint32_t kAlEmpty = 0xFFFFFFFF;  // an activity-log slot that names no extent

// Where the metadata is, on the metadata device: the backing disk itself (internal: at its end,
// superblock in the last 4 KiB block) or an external file or device (from byte 0, superblock
// first). All offsets are absolute byte offsets on the metadata device.
struct MdLayout {
  uint64_t md_offset = 0;  // first byte of the metadata area
  uint64_t md_bytes = 0;   // superblock + activity log + bitmap
  uint64_t superblock_offset = 0;
  uint64_t al_offset = 0;
  uint64_t al_slot_bytes = 0;  // one transaction
  uint64_t al_slots = 0;
  uint64_t bitmap_offset = 0;
  uint64_t bitmap_bytes = 0;
  uint64_t data_bytes = 0;  // the size exported to clients: bytes [0, data_bytes) of the disk
  bool internal = true;
  bool operator==(const MdLayout&) const = default;
};

// The activity-log slot size for `al_extents` (a transaction holds the whole extent table).
uint64_t AlSlotBytes(uint32_t al_extents);
// Bitmap bytes for a backing disk of `backing_bytes`: one bit per 4 KiB, in whole 4 KiB blocks.
uint64_t BitmapBytesFor(uint64_t backing_bytes);
// Metadata bytes needed for a data disk of `backing_bytes`: superblock + AL ring + bitmap.
uint64_t MdBytesFor(uint64_t backing_bytes, uint32_t al_extents);

// The layout on a backing disk of `backing_bytes`. Internal: metadata at the end of that disk,
// data_bytes = AlignDown(backing_bytes, 4096) - md_bytes. External: metadata from byte 0 of a
// metadata device of `external_md_bytes`, data_bytes = AlignDown(backing_bytes, 4096).
// Errors: al_extents out of range, a data area under kMinDataBytes, a metadata device too small
// (the message says how big it must be).
Result<MdLayout> ComputeLayout(uint64_t backing_bytes, bool internal, uint64_t external_md_bytes,
                               uint32_t al_extents);

// Where the superblock is, without knowing al_extents: the last whole 4 KiB block of the disk
// (internal) or byte 0 (external). Internal disks under 4 KiB have none (returns false).
bool SuperblockOffset(uint64_t md_device_bytes, bool internal, uint64_t* offset);

// Superblock flags: the local disk's state as of the last superblock write.
enum MdFlag : uint32_t {
  kMdConsistent = 1u << 0,      // the data is a consistent image (not mid-resync as SyncTarget)
  kMdWasUpToDate = 1u << 1,     // it was the newest data (UpToDate), not merely Consistent/Outdated
  kMdWasPrimary = 1u << 2,      // the node was Primary when this was written
  kMdCrashedPrimary = 1u << 3,  // Primary and not shut down cleanly: the AL must be replayed
  kMdPeerOutdated = 1u << 4,    // the peer was marked Outdated (it may not become Primary)
  kMdFullSync = 1u << 5,        // the bitmap cannot be trusted: resync everything
  kMdAlClean = 1u << 6,         // clean shutdown: the AL's extents need no resync
  kMdPrimaryAtSplit = 1u << 7,  // the bitmap id was taken as Primary losing the peer
  kMdIoError = 1u << 8,         // the disk failed an I/O: not consistent until a resync
};
inline constexpr uint32_t kMdKnownFlags = (1u << 9) - 1;
// "Consistent|WasPrimary", or "none".
std::string MdFlagNames(uint32_t flags);

using MdUuid = std::array<uint8_t, 16>;        // the metadata's identity (random at create-md)
std::string FormatMdUuid(const MdUuid& uuid);  // 8-4-4-4-12 hex

// The first 4 KiB block of the metadata, as decoded.
struct Superblock {
  MdUuid device_uuid{};
  uint32_t flags = 0;
  uint32_t al_extents = 0;
  uint64_t backing_bytes = 0;  // data disk size when the layout was computed
  MdLayout layout;
  // Generation identifiers (DRBD's): 0 in current_uuid means "just created, never used".
  uint64_t current_uuid = 0;
  uint64_t bitmap_uuid = 0;  // the current UUID when the bitmap started collecting; 0: empty
  std::array<uint64_t, 2> history_uuid{};
  uint64_t created_unix_seconds = 0;
  std::string node_name;      // at most kMdNameBytesMax bytes
  std::string resource_name;  // at most kMdNameBytesMax bytes
  bool operator==(const Superblock&) const = default;
};

using MdBlock = std::array<uint8_t, kMdBlockBytes>;

// Encodes `sb` with its checksum. Names longer than kMdNameBytesMax are a caller bug.
MdBlock EncodeSuperblock(const Superblock& sb);
// Checks magic, version, checksum, then that every field is sane and the layout agrees with
// ComputeLayout for the stored sizes. Distinct messages for each failure (see docs/metadata.md).
Result<Superblock> DecodeSuperblock(std::span<const uint8_t> block);
// True when `block` starts with the superblock magic (damaged or not).
bool HasSuperblockMagic(std::span<const uint8_t> block);

// One activity-log transaction: the whole table of hot extents. extents[i] is an extent number
// (data offset / kAlExtentBytes) or kAlEmpty; its size is al_extents. Transaction `seq` (from 1)
// is written to slot seq % al_slots.
struct AlTransaction {
  uint64_t seq = 0;
  std::vector<uint32_t> extents;
  bool operator==(const AlTransaction&) const = default;
};

// What every transaction of one metadata area must agree with.
struct AlContext {
  MdUuid device_uuid{};
  uint32_t al_extents = 0;
  uint64_t al_slot_bytes = 0;
  uint64_t al_slots = 0;
  uint64_t data_bytes = 0;  // extents beyond the data are corruption
};
AlContext AlContextOf(const Superblock& sb);

// Encodes `txn` into `out` (al_slot_bytes), slot seq % al_slots.
void EncodeAlTransaction(const AlTransaction& txn, const AlContext& ctx, std::span<uint8_t> out);

enum class AlSlotState : uint8_t { kEmpty, kValid, kCorrupt };
struct AlSlot {
  AlSlotState state = AlSlotState::kEmpty;
  AlTransaction txn;  // kValid only
  std::string error;  // kCorrupt only: what is wrong
};
// An all-zero slot is kEmpty (never written since create-md).
AlSlot DecodeAlSlot(std::span<const uint8_t> slot, const AlContext& ctx, uint32_t slot_index);

struct AlReplayResult {
  uint64_t seq = 0;                   // of the newest valid transaction; 0: none yet
  int64_t slot = -1;                  // where it is; -1: none
  std::vector<uint32_t> table;        // its extent table as stored (al_extents entries; all
                                      // kAlEmpty when there is none): ActivityLog's input
  std::vector<uint32_t> hot_extents;  // sorted, without kAlEmpty
  uint32_t corrupt_slots = 0;         // skipped (torn writes, damage)
};
// The AL's state: the valid transaction with the highest seq. A torn newer slot is skipped: a
// transaction is complete before any write it covers starts, so its predecessor is the truth.
// No valid transaction: empty if at most one slot is corrupt (a torn first transaction), else an
// error (the hot extents are unknown).
Result<AlReplayResult> AlReplay(std::span<const AlSlot> slots, uint32_t al_extents);

}  // namespace repld
