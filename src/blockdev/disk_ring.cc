#include "blockdev/disk_ring.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace repld {

Result<std::unique_ptr<DiskRing>> DiskRing::Create(asio::io_context& io, unsigned entries) {
  const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return Status::Error(errno, "eventfd: " + ErrnoText(errno));
  std::unique_ptr<DiskRing> ring(new DiskRing(io, efd));
  // Only the loop thread submits, and it needs no interrupt to run completion work: it is either
  // in the kernel waiting for events or about to be (Linux 6.0+; older kernels get plain rings).
  int rc = io_uring_queue_init(entries, &ring->ring_,
                               IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN);
  if (rc == -EINVAL) rc = io_uring_queue_init(entries, &ring->ring_, 0);
  if (rc < 0) {
    return Status::Error(-rc, "io_uring_queue_init(" + std::to_string(entries) +
                                  "): " + ErrnoText(-rc) +
                                  "; io_uring is required (Linux 5.6 or newer, not disabled "
                                  "by kernel.io_uring_disabled)");
  }
  ring->ring_ready_ = true;
  const int reg = io_uring_register_eventfd(&ring->ring_, efd);
  if (reg < 0) return Status::Error(-reg, "io_uring_register_eventfd: " + ErrnoText(-reg));
  ring->ArmCompletionWait();
  return ring;
}

DiskRing::DiskRing(asio::io_context& io, int event_fd) : io_(io), event_fd_(io, event_fd) {}

DiskRing::~DiskRing() {
  asio::error_code ignored;
  event_fd_.close(ignored);
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

void DiskRing::Close() {
  REPLD_CHECK(inflight_ == 0);
  asio::error_code ignored;
  event_fd_.cancel(ignored);
  event_fd_.close(ignored);
}

io_uring_sqe* DiskRing::NextSqe(DiskOp* op) {
  REPLD_CHECK(op->on_complete != nullptr);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The submission queue holds only not-yet-submitted entries: hand them to the kernel now.
    const int rc = io_uring_submit(&ring_);
    REPLD_CHECK(rc >= 0);
    sqe = io_uring_get_sqe(&ring_);
    REPLD_CHECK(sqe != nullptr);
  }
  ++inflight_;
  return sqe;
}

void DiskRing::ScheduleSubmit() {
  if (submit_scheduled_) return;
  submit_scheduled_ = true;
  asio::post(io_, [this, alive = std::weak_ptr<DiskRing*>(alive_)] {
    if (alive.expired()) return;
    submit_scheduled_ = false;
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR || rc == -EAGAIN);
    REPLD_CHECK(rc >= 0);
  });
}

void DiskRing::Readv(int fd, const iovec* iov, unsigned iov_count, uint64_t offset_bytes,
                     DiskOp* op) {
  io_uring_sqe* sqe = NextSqe(op);
  io_uring_prep_readv(sqe, fd, iov, iov_count, offset_bytes);
  io_uring_sqe_set_data(sqe, op);
  ScheduleSubmit();
}

void DiskRing::Writev(int fd, const iovec* iov, unsigned iov_count, uint64_t offset_bytes,
                      int rw_flags, DiskOp* op) {
  io_uring_sqe* sqe = NextSqe(op);
  io_uring_prep_writev2(sqe, fd, iov, iov_count, offset_bytes, rw_flags);
  io_uring_sqe_set_data(sqe, op);
  ScheduleSubmit();
}

void DiskRing::Write(int fd, const void* buf, uint32_t length_bytes, uint64_t offset_bytes,
                     int rw_flags, DiskOp* op) {
  io_uring_sqe* sqe = NextSqe(op);
  io_uring_prep_write(sqe, fd, buf, length_bytes, offset_bytes);
  sqe->rw_flags = rw_flags;
  io_uring_sqe_set_data(sqe, op);
  ScheduleSubmit();
}

void DiskRing::Fdatasync(int fd, DiskOp* op) {
  io_uring_sqe* sqe = NextSqe(op);
  io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data(sqe, op);
  ScheduleSubmit();
}

void DiskRing::Fallocate(int fd, int mode, uint64_t offset_bytes, uint64_t length_bytes,
                         DiskOp* op) {
  io_uring_sqe* sqe = NextSqe(op);
  io_uring_prep_fallocate(sqe, fd, mode, static_cast<off_t>(offset_bytes),
                          static_cast<off_t>(length_bytes));
  io_uring_sqe_set_data(sqe, op);
  ScheduleSubmit();
}

void DiskRing::UringCmd(int fd, uint32_t cmd_op, const void* cmd, size_t cmd_bytes, DiskOp* op) {
  // An ordinary SQE has 16 bytes of command space after its first 48.
  REPLD_CHECK(cmd_bytes <= sizeof(io_uring_sqe) - offsetof(io_uring_sqe, cmd));
  io_uring_sqe* sqe = NextSqe(op);
  std::memset(sqe, 0, sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = cmd_op;
  std::memcpy(sqe->cmd, cmd, cmd_bytes);
  io_uring_sqe_set_data(sqe, op);
  ScheduleSubmit();
}

void DiskRing::ArmCompletionWait() {
  event_fd_.async_read_some(
      asio::buffer(&event_value_, sizeof event_value_),
      [this, alive = std::weak_ptr<DiskRing*>(alive_)](const asio::error_code& ec, size_t) {
        if (ec == asio::error::operation_aborted || alive.expired()) return;
        ReapCompletions();
        ArmCompletionWait();
      });
}

void DiskRing::ReapCompletions() {
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
    auto* op = static_cast<DiskOp*>(io_uring_cqe_get_data(cqe));
    const int result = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    REPLD_CHECK(op != nullptr && inflight_ > 0);
    --inflight_;
    op->on_complete(op, result);
  }
}

}  // namespace repld
