#include "blockdev/md_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace repld {
namespace {

// A zeroed buffer aligned for O_DIRECT.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t bytes) : bytes_(bytes) {
    REPLD_CHECK(posix_memalign(&p_, kMdBlockBytes, std::max<size_t>(bytes, kMdBlockBytes)) == 0);
    std::memset(p_, 0, bytes);
  }
  ~AlignedBuffer() { free(p_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::span<uint8_t> span() { return {static_cast<uint8_t*>(p_), bytes_}; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

constexpr size_t kZeroChunkBytes = 1 << 20;  // bitmap and AL areas are zeroed in these

struct OpenedDisk {
  int fd = -1;
  uint64_t size_bytes = 0;
};

Result<OpenedDisk> OpenDisk(const std::string& path, bool write, bool lock, const char* role) {
  const std::string what = std::string(role) + " '" + path + "'";
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return Status::Error(errno, "cannot open " + what + ": " + ErrnoText(errno));
  }
  if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) {
    return Status::Invalid("cannot use " + what + ": not a block device or a regular file");
  }
  const bool is_block_device = S_ISBLK(st.st_mode);
  const int flags =
      (write ? O_RDWR : O_RDONLY) | O_CLOEXEC | (is_block_device && lock ? O_EXCL : 0);
  int fd = open(path.c_str(), flags | O_DIRECT);
  if (fd < 0 && errno == EINVAL) fd = open(path.c_str(), flags);  // no O_DIRECT here (tmpfs)
  if (fd < 0) {
    const int err = errno;
    if (err == EBUSY) {
      return Status::Error(err, what +
                                    " is in use (mounted, or opened by a running repld); "
                                    "unmount it or stop the daemon first");
    }
    return Status::Error(err, "cannot open " + what + ": " + ErrnoText(err));
  }
  if (lock && flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return Status::Error(EBUSY, what +
                                      " is in use by a running repld (it holds the disk's "
                                      "lock); stop the resource's daemon first");
    }
    return Status::Error(err, "cannot lock " + what + ": " + ErrnoText(err));
  }
  uint64_t size_bytes = static_cast<uint64_t>(st.st_size);
  if (is_block_device && ioctl(fd, BLKGETSIZE64, &size_bytes) != 0) {
    const int err = errno;
    close(fd);
    return Status::Error(err, "cannot read the size of " + what + ": " + ErrnoText(err));
  }
  return OpenedDisk{fd, size_bytes};
}

// O_DIRECT can be accepted at open and refused at the first transfer: drop it and go on.
bool DropDirectOnEinval(int fd, int err) {
  if (err != EINVAL) return false;
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (fl & O_DIRECT) == 0) return false;
  return fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0;
}

}  // namespace

Result<std::unique_ptr<MdDevice>> MdDevice::Open(const MdLocation& where,
                                                 const MdOpenOptions& options) {
  const bool internal = where.internal();
  auto data = OpenDisk(where.data_disk, options.writable && internal, options.lock, "disk");
  if (!data.ok()) return data.status();
  OpenedDisk md = data.value();
  if (!internal) {
    auto meta = OpenDisk(where.meta_disk, options.writable, options.lock || options.writable,
                         "metadata disk");
    if (!meta.ok()) {
      close(data->fd);
      return meta.status();
    }
    md = meta.value();
  }
  return std::unique_ptr<MdDevice>(
      new MdDevice(where, data->fd, md.fd, data->size_bytes, md.size_bytes, options.writable));
}

MdDevice::MdDevice(MdLocation where, int data_fd, int md_fd, uint64_t data_bytes, uint64_t md_bytes,
                   bool writable)
    : where_(std::move(where)),
      data_fd_(data_fd),
      md_fd_(md_fd),
      data_disk_bytes_(data_bytes),
      md_device_bytes_(md_bytes),
      writable_(writable) {}

MdDevice::~MdDevice() {
  if (md_fd_ != data_fd_) close(md_fd_);
  close(data_fd_);
}

const std::string& MdDevice::md_path() const {
  return where_.internal() ? where_.data_disk : where_.meta_disk;
}

std::string MdDevice::Where(uint64_t offset) const {
  return "'" + md_path() + "' at byte " + std::to_string(offset);
}

Result<MdLayout> MdDevice::Layout(uint32_t al_extents) const {
  return ComputeLayout(data_disk_bytes_, where_.internal(), md_device_bytes_, al_extents);
}

Status MdDevice::ReadAt(uint64_t offset, std::span<uint8_t> buf, const char* what) const {
  for (size_t done = 0; done < buf.size();) {
    const ssize_t n =
        pread(md_fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && (errno == EINTR || DropDirectOnEinval(md_fd_, errno))) continue;
    if (n < 0) {
      return Status::Error(errno, std::string("cannot read the ") + what + " from " +
                                      Where(offset + done) + ": " + ErrnoText(errno));
    }
    if (n == 0) {
      return Status::Error(EIO, std::string("cannot read the ") + what + " from " +
                                    Where(offset + done) + ": unexpected end of file");
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status MdDevice::WriteAt(uint64_t offset, std::span<const uint8_t> buf, const char* what) {
  REPLD_CHECK(writable_);
  REPLD_CHECK(IsAligned(offset, kMdBlockBytes) && IsAligned(buf.size(), kMdBlockBytes));
  for (size_t done = 0; done < buf.size();) {
    const ssize_t n =
        pwrite(md_fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && (errno == EINTR || DropDirectOnEinval(md_fd_, errno))) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      return Status::Error(err, std::string("cannot write the ") + what + " to " +
                                    Where(offset + done) + ": " + ErrnoText(err));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status MdDevice::Sync() {
  if (fdatasync(md_fd_) != 0) {
    return Status::Error(errno, "cannot sync '" + md_path() + "': " + ErrnoText(errno));
  }
  return Status::Ok();
}

Result<std::optional<FileSystemInfo>> MdDevice::DetectDataFileSystem() const {
  const uint64_t head_bytes = std::min(kFsProbeBytes, AlignDown(data_disk_bytes_, kMdBlockBytes));
  AlignedBuffer head(head_bytes);
  for (size_t done = 0; done < head_bytes;) {
    const ssize_t n =
        pread(data_fd_, head.span().data() + done, head_bytes - done, static_cast<off_t>(done));
    if (n < 0 && (errno == EINTR || DropDirectOnEinval(data_fd_, errno))) continue;
    if (n < 0) {
      return Status::Error(
          errno, "cannot read the start of '" + where_.data_disk + "': " + ErrnoText(errno));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return DetectFileSystem(head.span());
}

Result<MdProbe> MdDevice::Probe() const {
  uint64_t offset = 0;
  if (!SuperblockOffset(md_device_bytes_, where_.internal(), &offset)) return MdProbe{};
  AlignedBuffer block(kMdBlockBytes);
  if (Status s = ReadAt(offset, block.span(), "superblock"); !s.ok()) return s;
  if (!HasSuperblockMagic(block.span())) return MdProbe{};
  auto sb = DecodeSuperblock(block.span());
  if (!sb.ok()) return MdProbe{MdPresence::kDamaged, sb.status().message()};
  return MdProbe{MdPresence::kValid, "device UUID " + FormatMdUuid(sb->device_uuid) +
                                         ", resource '" + sb->resource_name + "', node '" +
                                         sb->node_name + "'"};
}

Result<MdContents> MdDevice::Read() {
  uint64_t offset = 0;
  if (!SuperblockOffset(md_device_bytes_, where_.internal(), &offset)) {
    return Status::Invalid("'" + md_path() + "' is smaller than one metadata block");
  }
  AlignedBuffer block(kMdBlockBytes);
  if (Status s = ReadAt(offset, block.span(), "superblock"); !s.ok()) return s;
  auto decoded = DecodeSuperblock(block.span());
  if (!decoded.ok())
    return Status::Invalid("superblock on " + Where(offset) + ": " + decoded.status().message());
  Superblock sb = std::move(decoded).value();
  if (sb.layout.internal != where_.internal()) {
    return Status::Invalid(
        "superblock on " + Where(offset) + " describes " +
        (sb.layout.internal ? "internal" : "external") + " metadata, but the configuration says " +
        (where_.internal() ? "internal" : "external (" + where_.meta_disk + ")"));
  }
  if (sb.backing_bytes != data_disk_bytes_) {
    return Status::Invalid("the metadata on '" + md_path() + "' was created for a disk of " +
                           std::to_string(sb.backing_bytes) + " bytes, but '" + where_.data_disk +
                           "' now has " + std::to_string(data_disk_bytes_) +
                           " bytes: the disk was resized");
  }
  if (sb.layout.md_offset + sb.layout.md_bytes > md_device_bytes_) {
    return Status::Invalid("the metadata on '" + md_path() + "' needs " +
                           std::to_string(sb.layout.md_offset + sb.layout.md_bytes) +
                           " bytes, the device has " + std::to_string(md_device_bytes_));
  }
  AlReplayResult al;
  std::vector<std::string> warnings;
  if (Status s = ReadAlState(sb, &al, &warnings); !s.ok()) return s;

  Bitmap bitmap(sb.layout.data_bytes);
  AlignedBuffer bits(bitmap.page_count() * kMdBlockBytes);
  if (Status s = ReadAt(sb.layout.bitmap_offset, bits.span(), "bitmap"); !s.ok()) return s;
  if (Status s = bitmap.Load(bits.span()); !s.ok()) {
    return Status::Invalid("bitmap on " + Where(sb.layout.bitmap_offset) + ": " + s.message());
  }
  current_ = sb;
  return MdContents{std::move(sb), std::move(al), std::move(warnings), std::move(bitmap)};
}

Status MdDevice::ReadAlState(const Superblock& sb, AlReplayResult* al,
                             std::vector<std::string>* warnings) {
  const MdLayout& l = sb.layout;
  AlignedBuffer ring(l.al_slots * l.al_slot_bytes);
  if (Status s = ReadAt(l.al_offset, ring.span(), "activity log"); !s.ok()) return s;
  const AlContext ctx = AlContextOf(sb);
  std::vector<AlSlot> slots;
  slots.reserve(l.al_slots);
  for (uint32_t i = 0; i < l.al_slots; ++i) {
    slots.push_back(
        DecodeAlSlot(ring.span().subspan(i * l.al_slot_bytes, l.al_slot_bytes), ctx, i));
    if (slots.back().state == AlSlotState::kCorrupt) {
      warnings->push_back(slots.back().error + " (at byte " +
                          std::to_string(l.al_offset + i * l.al_slot_bytes) + ")");
    }
  }
  auto replay = AlReplay(slots, sb.al_extents);
  if (!replay.ok()) {
    return Status::Invalid("activity log on " + Where(l.al_offset) + ": " +
                           replay.status().message());
  }
  *al = std::move(replay).value();
  return Status::Ok();
}

Status MdDevice::Create(const Superblock& sb, const Progress& progress) {
  REPLD_CHECK(writable_);
  auto layout = Layout(sb.al_extents);
  if (!layout.ok()) return layout.status();
  REPLD_CHECK(layout.value() == sb.layout);
  REPLD_CHECK(sb.backing_bytes == data_disk_bytes_);
  const MdLayout& l = sb.layout;
  // An old superblock goes first: a crash part-way leaves no metadata, never a mix of old and new.
  AlignedBuffer zeroes(kZeroChunkBytes);
  if (Status s = WriteAt(l.superblock_offset, zeroes.span().first(kMdBlockBytes), "superblock");
      !s.ok()) {
    return s;
  }
  if (Status s = Sync(); !s.ok()) return s;
  struct Area {
    uint64_t offset, bytes;
    const char* what;
  };
  const uint64_t total = l.al_slots * l.al_slot_bytes + l.bitmap_bytes;
  uint64_t zeroed = 0;
  for (const Area& a : {Area{l.al_offset, l.al_slots * l.al_slot_bytes, "activity log"},
                        Area{l.bitmap_offset, l.bitmap_bytes, "bitmap"}}) {
    for (uint64_t done = 0; done < a.bytes; done += kZeroChunkBytes) {
      const uint64_t n = std::min<uint64_t>(kZeroChunkBytes, a.bytes - done);
      if (Status s = WriteAt(a.offset + done, zeroes.span().first(n), a.what); !s.ok()) return s;
      zeroed += n;
      if (progress) progress(zeroed, total);
    }
  }
  if (Status s = Sync(); !s.ok()) return s;
  current_ = sb;
  return WriteSuperblock(sb);
}

Status MdDevice::WriteSuperblock(const Superblock& sb) {
  REPLD_CHECK(current_.has_value());
  REPLD_CHECK(sb.device_uuid == current_->device_uuid && sb.layout == current_->layout);
  AlignedBuffer block(kMdBlockBytes);
  const MdBlock encoded = EncodeSuperblock(sb);
  std::copy(encoded.begin(), encoded.end(), block.span().begin());
  REPLD_CHECK(DecodeSuperblock(block.span()).ok());  // never write what we could not read back
  if (Status s = WriteAt(sb.layout.superblock_offset, block.span(), "superblock"); !s.ok()) {
    return s;
  }
  if (Status s = Sync(); !s.ok()) return s;
  current_ = sb;
  return Status::Ok();
}

Status MdDevice::WriteAlTransaction(const AlTransaction& txn) {
  REPLD_CHECK(current_.has_value());
  const AlContext ctx = AlContextOf(*current_);
  const uint32_t slot = static_cast<uint32_t>(txn.seq % ctx.al_slots);
  AlignedBuffer buf(ctx.al_slot_bytes);
  EncodeAlTransaction(txn, ctx, buf.span());
  REPLD_CHECK(DecodeAlSlot(buf.span(), ctx, slot).state == AlSlotState::kValid);
  const uint64_t offset = current_->layout.al_offset + slot * ctx.al_slot_bytes;
  if (Status s = WriteAt(offset, buf.span(), "activity-log transaction"); !s.ok()) return s;
  return Sync();
}

Status MdDevice::WriteBitmapPages(const Bitmap& bitmap, std::span<const uint64_t> pages) {
  REPLD_CHECK(current_.has_value());
  REPLD_CHECK(bitmap.data_bytes() == current_->layout.data_bytes);
  AlignedBuffer page(kMdBlockBytes);
  for (uint64_t p : pages) {
    bitmap.StorePage(p, page.span());
    const uint64_t offset = current_->layout.bitmap_offset + p * kMdBlockBytes;
    if (Status s = WriteAt(offset, page.span(), "bitmap page"); !s.ok()) return s;
  }
  return pages.empty() ? Status::Ok() : Sync();
}

}  // namespace repld
