#include "blockdev/backing_store.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "blockdev/dio_align.h"
#include "common/units.h"

namespace repld {
namespace {

enum Stage : uint8_t { kTransfer, kFallocate, kZeroWrite, kSync };

bool IsRetryable(int result) { return result == -EAGAIN || result == -EINTR; }

// Alignment for direct I/O when the kernel does not report it.
uint32_t FallbackAlign(int fd, bool is_block_device, const struct stat& st) {
  if (is_block_device) {
    int logical = 0;
    if (ioctl(fd, BLKSSZGET, &logical) == 0 && logical > 0) return static_cast<uint32_t>(logical);
    return 512;
  }
  return st.st_blksize > 0 ? static_cast<uint32_t>(st.st_blksize) : 4096;
}

// O_DIRECT can be accepted at open and still fail at the first transfer on some file systems.
bool DirectReadWorks(int fd, uint32_t align_bytes) {
  void* buf = nullptr;
  if (posix_memalign(&buf, std::max<uint32_t>(align_bytes, 4096), align_bytes) != 0) return false;
  const ssize_t n = pread(fd, buf, align_bytes, 0);
  free(buf);
  return n >= 0;
}

Status StatDisk(const std::string& path, struct stat& st) {
  if (stat(path.c_str(), &st) != 0) {
    return Status::Error(errno, "cannot open '" + path + "': " + ErrnoText(errno));
  }
  if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) {
    return Status::Invalid("cannot use '" + path + "': not a block device or a regular file");
  }
  return Status::Ok();
}

Status LockExclusive(int fd, const std::string& path) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Status::Ok();
    if (errno != EWOULDBLOCK) break;
    usleep(100 * 1000);
  }
  if (errno == EWOULDBLOCK) {
    return Status::Error(EBUSY, "'" + path + "' is in use by another repld (locked); stop it " +
                                    "first, or fix the configuration if two resources name " +
                                    "the same disk");
  }
  return Status::Error(errno, "cannot lock '" + path + "': " + ErrnoText(errno));
}

}  // namespace

Status BackingStore::Probe(const std::string& path) {
  struct stat st {};
  if (Status s = StatDisk(path, st); !s.ok()) return s;
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, "cannot open '" + path + "': " + ErrnoText(errno));
  close(fd);
  if (st.st_size == 0 && S_ISREG(st.st_mode)) {
    return Status::Invalid("'" + path + "' is empty");
  }
  return Status::Ok();
}

Result<std::unique_ptr<BackingStore>> BackingStore::Open(const std::string& path, DirectIoMode mode,
                                                         DiskRing& ring) {
  struct stat st {};
  if (Status s = StatDisk(path, st); !s.ok()) return s;
  const bool is_block_device = S_ISBLK(st.st_mode);
  // O_EXCL on a block device refuses one that is mounted or claimed by another user.
  const int base_flags = O_RDWR | O_CLOEXEC | (is_block_device ? O_EXCL : 0);
  int fd = -1;
  bool direct = mode != DirectIoMode::kOff;
  if (direct) {
    fd = open(path.c_str(), base_flags | O_DIRECT);
    if (fd < 0 && errno == EINVAL && mode == DirectIoMode::kAuto) direct = false;
    if (fd < 0 && direct) {
      return Status::Error(errno, "cannot open '" + path + "' with O_DIRECT: " + ErrnoText(errno) +
                                      (errno == EINVAL ? "; set disk.direct_io = \"off\"" : ""));
    }
  }
  if (fd < 0) {
    fd = open(path.c_str(), base_flags);
    if (fd < 0) return Status::Error(errno, "cannot open '" + path + "': " + ErrnoText(errno));
  }

  // One daemon per disk: a second writer would corrupt it. A killed daemon's lock can outlive
  // it by a moment (io_uring releases its files asynchronously), so wait a little for it.
  if (Status s = LockExclusive(fd, path); !s.ok()) {
    close(fd);
    return s;
  }

  BackingInfo info;
  info.is_block_device = is_block_device;
  uint64_t raw_size_bytes = static_cast<uint64_t>(st.st_size);
  if (is_block_device && ioctl(fd, BLKGETSIZE64, &raw_size_bytes) != 0) {
    const int err = errno;
    close(fd);
    return Status::Error(err, "cannot read the size of '" + path + "': " + ErrnoText(err));
  }
  if (direct) {
    const DioAlign dio = QueryDioAlign(fd);
    info.io_align_bytes = dio.offset_align_bytes != 0 ? dio.offset_align_bytes
                                                      : FallbackAlign(fd, is_block_device, st);
    info.mem_align_bytes = dio.mem_align_bytes != 0 ? dio.mem_align_bytes : info.io_align_bytes;
    if (raw_size_bytes >= info.io_align_bytes && !DirectReadWorks(fd, info.io_align_bytes)) {
      if (mode == DirectIoMode::kOn) {
        close(fd);
        return Status::Invalid("'" + path +
                               "' does not support direct I/O; set disk.direct_io = \"off\"");
      }
      // Same descriptor (and lock), without O_DIRECT.
      if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) != 0) {
        const int err = errno;
        close(fd);
        return Status::Error(err, "cannot turn off O_DIRECT on '" + path + "': " + ErrnoText(err));
      }
      direct = false;
    }
  }
  if (!direct) {
    info.io_align_bytes = 1;
    info.mem_align_bytes = 1;
  }
  info.direct_io = direct;
  info.size_bytes = AlignDown(raw_size_bytes, info.io_align_bytes);
  if (info.size_bytes == 0) {
    close(fd);
    return Status::Invalid("'" + path + "' is empty or smaller than one block (" +
                           std::to_string(raw_size_bytes) + " bytes)");
  }
  return std::unique_ptr<BackingStore>(new BackingStore(path, fd, info, ring));
}

BackingStore::BackingStore(std::string path, int fd, BackingInfo info, DiskRing& ring)
    : path_(std::move(path)), fd_(fd), info_(info), ring_(ring) {
  REPLD_CHECK(posix_memalign(&zero_buffer_, 4096, kZeroBufferBytes) == 0);
  std::memset(zero_buffer_, 0, kZeroBufferBytes);
}

BackingStore::~BackingStore() {
  close(fd_);
  free(zero_buffer_);
}

Status BackingStore::SyncNow() {
  if (fdatasync(fd_) != 0) {
    return Status::Error(errno, "fdatasync '" + path_ + "': " + ErrnoText(errno));
  }
  return Status::Ok();
}

void BackingStore::Submit(DiskIo* io) {
  ++in_flight_;
  Start(io);
}

void BackingStore::Start(DiskIo* io) {
  const BlockRequest& r = io->request;
  REPLD_CHECK(r.offset_bytes + r.length_bytes <= info_.size_bytes);
  REPLD_CHECK(io->done != nullptr);
  io->op.on_complete = &BackingStore::OnOpComplete;
  io->store = this;
  io->transferred_bytes = 0;
  switch (r.op) {
    case BlockOp::kRead:
    case BlockOp::kWrite:
      io->stage = kTransfer;
      StartTransfer(io);
      return;
    case BlockOp::kFlush:
      io->stage = kSync;
      ring_.Fdatasync(fd_, &io->op);
      return;
    case BlockOp::kTrim:
      // A discard leaves the range reading as zeroes, whatever the disk: a punched hole where
      // it can, zeroes written where it cannot. A no-op would leave the old data here while the
      // peer's disk (another file system) reads zeroes, and verify would find them different.
    case BlockOp::kWriteZeroes:
      if ((r.may_punch || r.op == BlockOp::kTrim) && punch_supported_) {
        io->stage = kFallocate;
        ring_.Fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, r.offset_bytes,
                        r.length_bytes, &io->op);
      } else if (zero_range_supported_) {
        io->stage = kFallocate;
        ring_.Fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, r.offset_bytes,
                        r.length_bytes, &io->op);
      } else {
        io->stage = kZeroWrite;
        StartZeroWrite(io);
      }
      return;
  }
  REPLD_CHECK(false);
}

void BackingStore::StartTransfer(DiskIo* io) {
  const BlockRequest& r = io->request;
  const uint64_t offset = r.offset_bytes + io->transferred_bytes;
  const int flags = (r.op == BlockOp::kWrite && r.fua) ? RWF_DSYNC : 0;
  if (r.op == BlockOp::kRead) {
    ring_.Readv(fd_, io->iov, io->iov_count, offset, &io->op);
  } else {
    ring_.Writev(fd_, io->iov, io->iov_count, offset, flags, &io->op);
  }
}

void BackingStore::StartZeroWrite(DiskIo* io) {
  const BlockRequest& r = io->request;
  const uint64_t remaining = r.length_bytes - io->transferred_bytes;
  const auto chunk = static_cast<uint32_t>(std::min<uint64_t>(remaining, kZeroBufferBytes));
  ring_.Write(fd_, zero_buffer_, chunk, r.offset_bytes + io->transferred_bytes, 0, &io->op);
}

void BackingStore::OnOpComplete(DiskOp* op, int result) {
  auto* io = reinterpret_cast<DiskIo*>(op);
  io->store->Continue(io, result);
}

void BackingStore::Continue(DiskIo* io, int result) {
  const BlockRequest& r = io->request;
  if (IsRetryable(result)) {
    // Resubmit the same step; the kernel made no progress.
    if (io->stage == kTransfer) return StartTransfer(io);
    if (io->stage == kZeroWrite) return StartZeroWrite(io);
    if (io->stage == kSync) return ring_.Fdatasync(fd_, &io->op);
  }
  switch (io->stage) {
    case kTransfer: {
      if (result < 0) return Finish(io, -result);
      if (result == 0) return Finish(io, EIO);  // unexpected end of the backing disk
      io->transferred_bytes += static_cast<uint64_t>(result);
      if (io->transferred_bytes >= r.length_bytes) return Finish(io, 0);
      AdvanceIov(io, static_cast<uint64_t>(result));
      return StartTransfer(io);
    }
    case kFallocate: {
      if (result == -EOPNOTSUPP || result == -ENOTSUP || result == -EINVAL) {
        // The file system or device cannot do it: remember, and take the fallback.
        if ((r.may_punch || r.op == BlockOp::kTrim) && punch_supported_) {
          punch_supported_ = false;
          spdlog::info(
              "{}: punching holes is not supported; TRIM requests write zeroes instead, so that "
              "the range reads the same on both nodes",
              path_);
        } else {
          zero_range_supported_ = false;
        }
        return Start(io);
      }
      if (result < 0) return Finish(io, -result);
      return FinishOrSync(io);
    }
    case kZeroWrite: {
      if (result < 0) return Finish(io, -result);
      if (result == 0) return Finish(io, EIO);
      io->transferred_bytes += static_cast<uint64_t>(result);
      if (io->transferred_bytes < r.length_bytes) return StartZeroWrite(io);
      return FinishOrSync(io);
    }
    case kSync:
      return Finish(io, result < 0 ? -result : 0);
  }
  REPLD_CHECK(false);
}

void BackingStore::AdvanceIov(DiskIo* io, uint64_t bytes) {
  while (bytes > 0) {
    REPLD_CHECK(io->iov_count > 0);
    if (bytes >= io->iov[0].iov_len) {
      bytes -= io->iov[0].iov_len;
      ++io->iov;
      --io->iov_count;
    } else {
      io->iov[0].iov_base = static_cast<uint8_t*>(io->iov[0].iov_base) + bytes;
      io->iov[0].iov_len -= bytes;
      bytes = 0;
    }
  }
}

void BackingStore::FinishOrSync(DiskIo* io) {
  if (io->request.fua) {
    io->stage = kSync;
    return ring_.Fdatasync(fd_, &io->op);
  }
  Finish(io, 0);
}

void BackingStore::Finish(DiskIo* io, int error) {
  if (error != 0) {
    spdlog::warn("{}: {} of {} bytes at offset {} failed: {}", path_, BlockOpName(io->request.op),
                 io->request.length_bytes, io->request.offset_bytes, ErrnoText(error));
  } else if (io->request.op == BlockOp::kRead) {
    read_bytes_ += io->request.length_bytes;
  } else if (io->request.op != BlockOp::kFlush) {
    written_bytes_ += io->request.length_bytes;
  }
  --in_flight_;
  io->done(io, error);
}

}  // namespace repld
