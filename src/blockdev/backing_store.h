// The local backing disk: a block device or a regular file, opened with O_DIRECT where the file
// system allows it, and the execution of BlockRequests on it through the DiskRing. Short
// transfers are resumed, TRIM/WRITE_ZEROES fall back when fallocate is not supported, and FUA is
// honoured for every operation, so callers see one completion per request.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "blockdev/block_sink.h"
#include "blockdev/disk_ring.h"
#include "common/status.h"
#include "replication/block_request.h"

namespace repld {

enum class DirectIoMode { kAuto, kOn, kOff };

struct BackingInfo {
  uint64_t size_bytes = 0;       // usable size: rounded down to io_align_bytes
  uint32_t io_align_bytes = 1;   // offsets and lengths must be multiples of this
  uint32_t mem_align_bytes = 1;  // buffer addresses must be multiples of this
  bool direct_io = false;
  bool is_block_device = false;
};

// Per-request disk state, preallocated by the caller. The caller fills `request`, `iov`,
// `iov_count` (READ/WRITE only) and `done`, then calls BackingStore::Submit. `iov` may be
// rewritten during the request (to resume a short transfer).
class BackingStore;

struct DiskIo {
  DiskOp op;  // first member: DiskOp* and DiskIo* convert
  BlockRequest request;
  iovec* iov = nullptr;
  unsigned iov_count = 0;
  void (*done)(DiskIo* io, int error) = nullptr;  // error: 0 or an errno value
  void* context = nullptr;                        // the caller's, untouched
  // Progress, owned by BackingStore.
  BackingStore* store = nullptr;
  uint64_t transferred_bytes = 0;
  uint8_t stage = 0;
};

// What a ReplicatedDevice needs of its local disk: requests, their geometry and a synchronous
// flush. The BackingStore in repld; a simulated disk in tests/sim.
class DiskSink : public BlockSink {
 public:
  virtual const BackingInfo& info() const = 0;
  // Synchronous fdatasync: every completed write is durable when it returns OK.
  virtual Status SyncNow() = 0;
};

class BackingStore : public DiskSink {
 public:
  // Opens `path` read-write. Errors name the path and the reason.
  static Result<std::unique_ptr<BackingStore>> Open(const std::string& path, DirectIoMode mode,
                                                    DiskRing& ring);
  // Checks that `path` could be opened as a backing disk, without keeping it open.
  static Status Probe(const std::string& path);
  ~BackingStore() override;
  BackingStore(const BackingStore&) = delete;
  BackingStore& operator=(const BackingStore&) = delete;

  const BackingInfo& info() const override { return info_; }
  const std::string& path() const { return path_; }

  // Starts the request; io->done runs on the loop thread when it finished or failed. Requests
  // must be validated by the caller (in range, aligned).
  void Submit(DiskIo* io) override;

  // Synchronous fdatasync, for shutdown.
  Status SyncNow() override;
  // Requests submitted and not yet completed (done not called yet).
  uint32_t in_flight() const { return in_flight_; }

  // Bytes of the requests that completed without error: reads, and writes with trims and
  // write-zeroes (as the replication core counts them). A one-node resource's status shows these.
  uint64_t read_bytes() const { return read_bytes_; }
  uint64_t written_bytes() const { return written_bytes_; }

  // A buffer of zeroes for write-zeroes fallback, aligned for direct I/O.
  static constexpr size_t kZeroBufferBytes = 1024 * 1024;

 private:
  BackingStore(std::string path, int fd, BackingInfo info, DiskRing& ring);
  static void OnOpComplete(DiskOp* op, int result);
  void Start(DiskIo* io);
  void Continue(DiskIo* io, int result);
  void StartTransfer(DiskIo* io);
  void StartZeroWrite(DiskIo* io);
  void Finish(DiskIo* io, int error);
  static void AdvanceIov(DiskIo* io, uint64_t bytes);
  void FinishOrSync(DiskIo* io);

  std::string path_;
  int fd_;
  BackingInfo info_;
  DiskRing& ring_;
  void* zero_buffer_ = nullptr;
  bool punch_supported_ = true;
  bool zero_range_supported_ = true;
  uint64_t read_bytes_ = 0;
  uint64_t written_bytes_ = 0;
  uint32_t in_flight_ = 0;
};

}  // namespace repld
