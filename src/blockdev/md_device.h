// The resource's metadata on its device: internal (the end of the backing disk) or external (a
// file or device of its own). Synchronous pread/pwrite on 4 KiB-aligned buffers (O_DIRECT where
// the file system allows it); every write returns once it is durable (fdatasync). The format is
// src/replication/md_format.h and docs/metadata.md; checksums are checked after every read and
// before every write.
//
// Use: replctl create-md opens with `lock`, checks for an existing file system and metadata,
// then Create()s. The daemon opens without `lock` (it holds the disk's lock through
// BackingStore), Read()s once at start, then writes the superblock, AL transactions and dirty
// bitmap pages as its state changes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "replication/bitmap.h"
#include "replication/fs_detect.h"
#include "replication/md_format.h"

namespace repld {

struct MdLocation {
  std::string data_disk;               // the backing disk
  std::string meta_disk = "internal";  // "internal" or the external metadata's path
  bool internal() const { return meta_disk == "internal"; }
};

struct MdOpenOptions {
  bool writable = false;
  // Take the exclusive flock a running repld holds on the data disk (non-blocking; EBUSY "in
  // use by a running repld" when held), and O_EXCL on block devices (refused while mounted). An
  // external metadata file is locked too. The daemon, which holds the data disk's lock through
  // BackingStore, passes false.
  bool lock = false;
};

// Everything Read() found.
struct MdContents {
  Superblock superblock;
  AlReplayResult al;
  std::vector<std::string> al_warnings;  // damaged slots skipped by the replay
  Bitmap bitmap;
};

// What create-md finds where the superblock goes.
enum class MdPresence : uint8_t { kNone, kValid, kDamaged };
struct MdProbe {
  MdPresence presence = MdPresence::kNone;
  std::string detail;  // kDamaged: what is wrong; kValid: uuid and creation
};

// What the daemon reads and writes of its metadata once it runs (ReplicatedDevice): the
// MdDevice in repld, a simulated one in tests/sim. Every write is durable when it returns OK.
class MetadataStore {
 public:
  virtual ~MetadataStore() = default;
  // Where it is, for messages.
  virtual const std::string& md_path() const = 0;
  virtual Result<MdProbe> Probe() const = 0;
  virtual Result<MdContents> Read() = 0;
  virtual Status WriteSuperblock(const Superblock& sb) = 0;
  virtual Status WriteAlTransaction(const AlTransaction& txn) = 0;
  virtual Status WriteBitmapPages(const Bitmap& bitmap, std::span<const uint64_t> pages) = 0;
};

class MdDevice : public MetadataStore {
 public:
  static Result<std::unique_ptr<MdDevice>> Open(const MdLocation& where,
                                                const MdOpenOptions& options);
  ~MdDevice() override;
  MdDevice(const MdDevice&) = delete;
  MdDevice& operator=(const MdDevice&) = delete;

  const MdLocation& location() const { return where_; }
  // The metadata's device: the data disk (internal) or the external path.
  const std::string& md_path() const override;
  uint64_t data_disk_bytes() const { return data_disk_bytes_; }
  uint64_t md_device_bytes() const { return md_device_bytes_; }
  // The layout create-md would write on this device.
  Result<MdLayout> Layout(uint32_t al_extents) const;
  // The file system at the start of the data disk, if one is recognised.
  Result<std::optional<FileSystemInfo>> DetectDataFileSystem() const;
  // Whether the superblock's place holds metadata. Errors are read errors only.
  Result<MdProbe> Probe() const override;

  // Reads and checks superblock, activity log and bitmap. Messages name the path, the block
  // (byte offset) and what is wrong; nothing is ever rewritten here.
  Result<MdContents> Read() override;
  // Fresh metadata: invalidates any old superblock, writes an empty AL and a zeroed bitmap,
  // then `sb` (whose layout must be Layout(sb.al_extents)), each step durable before the next.
  // `progress`, if set, hears the bytes zeroed so far of the total, after each chunk.
  using Progress = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;
  Status Create(const Superblock& sb, const Progress& progress = {});

  // After Read() or Create(): updates on the same metadata (same UUID and layout).
  Status WriteSuperblock(const Superblock& sb) override;
  // Writes transaction `txn` to its slot (seq % al_slots).
  Status WriteAlTransaction(const AlTransaction& txn) override;
  // Writes the given pages of `bitmap` (from Bitmap::DirtyPages()), then syncs once.
  Status WriteBitmapPages(const Bitmap& bitmap, std::span<const uint64_t> pages) override;

 private:
  MdDevice(MdLocation where, int data_fd, int md_fd, uint64_t data_bytes, uint64_t md_bytes,
           bool writable);
  Status ReadAt(uint64_t offset, std::span<uint8_t> buf, const char* what) const;
  Status WriteAt(uint64_t offset, std::span<const uint8_t> buf, const char* what);
  Status Sync();
  Status ReadAlState(const Superblock& sb, AlReplayResult* al, std::vector<std::string>* warnings);
  std::string Where(uint64_t offset) const;  // "'PATH' at byte N"

  MdLocation where_;
  int data_fd_;
  int md_fd_;  // == data_fd_ when internal
  uint64_t data_disk_bytes_;
  uint64_t md_device_bytes_;
  bool writable_;
  std::optional<Superblock> current_;  // what is on disk, after Read() or Create()
};

}  // namespace repld
