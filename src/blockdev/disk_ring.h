// One io_uring for backing-disk I/O, driven from the Asio event loop: the ring signals an
// eventfd on completion, an Asio descriptor waits on it, and completions are dispatched on the
// loop thread. Submissions made during one loop turn go to the kernel in one io_uring_enter.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <memory>

#include "common/status.h"

namespace repld {

// Embedded in the caller's preallocated per-request state: no allocation per I/O.
struct DiskOp {
  void (*on_complete)(DiskOp* op, int result) = nullptr;  // result: bytes or -errno
};

class DiskRing {
 public:
  static Result<std::unique_ptr<DiskRing>> Create(asio::io_context& io, unsigned entries);
  ~DiskRing();
  DiskRing(const DiskRing&) = delete;
  DiskRing& operator=(const DiskRing&) = delete;

  void Readv(int fd, const iovec* iov, unsigned iov_count, uint64_t offset_bytes, DiskOp* op);
  void Writev(int fd, const iovec* iov, unsigned iov_count, uint64_t offset_bytes, int rw_flags,
              DiskOp* op);
  void Write(int fd, const void* buf, uint32_t length_bytes, uint64_t offset_bytes, int rw_flags,
             DiskOp* op);
  void Fdatasync(int fd, DiskOp* op);
  void Fallocate(int fd, int mode, uint64_t offset_bytes, uint64_t length_bytes, DiskOp* op);
  // IORING_OP_URING_CMD with `cmd_bytes` (at most 16) of command in the SQE (ublk I/O commands).
  void UringCmd(int fd, uint32_t cmd_op, const void* cmd, size_t cmd_bytes, DiskOp* op);

  size_t inflight() const { return inflight_; }
  // Stops waiting for completions, so that the event loop can run out of work. Only once
  // nothing is in flight.
  void Close();

 private:
  DiskRing(asio::io_context& io, int event_fd);
  io_uring_sqe* NextSqe(DiskOp* op);
  void ScheduleSubmit();
  void ArmCompletionWait();
  void ReapCompletions();

  asio::io_context& io_;
  io_uring ring_{};
  bool ring_ready_ = false;
  asio::posix::stream_descriptor event_fd_;
  uint64_t event_value_ = 0;
  bool submit_scheduled_ = false;
  // Handlers already queued in the event loop when the ring is destroyed (a ublk queue's ring
  // goes while the loop runs) find it expired and do nothing.
  std::shared_ptr<DiskRing*> alive_ = std::make_shared<DiskRing*>(this);
  size_t inflight_ = 0;
};

}  // namespace repld
