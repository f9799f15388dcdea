#include "blockdev/ublk_queue.h"

#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <cerrno>

namespace repld {

namespace {
constexpr uint32_t kSectorBytes = 512;
constexpr size_t kPageBytes = 4096;
}  // namespace

Result<std::unique_ptr<UblkQueue>> UblkQueue::Create(asio::io_context& io, int cdev_fd,
                                                     const Options& options, BlockSink& sink) {
  REPLD_CHECK(options.depth > 0 && options.depth <= ublk::kQueueDepthMax);
  REPLD_CHECK(options.io_bytes_max % kPageBytes == 0);
  std::unique_ptr<UblkQueue> q(new UblkQueue(cdev_fd, options, sink));
  // Each tag has at most one command in the ring: a fetch, or a commit that fetches.
  auto ring = DiskRing::Create(io, options.depth);
  if (!ring.ok()) return ring.status();
  q->ring_ = std::move(ring).value();

  q->descs_bytes_ =
      (options.depth * sizeof(ublk::IoDesc) + kPageBytes - 1) / kPageBytes * kPageBytes;
  const off_t offset = static_cast<off_t>(options.queue_id * ublk::kDescQueueStrideBytes);
  void* descs =
      mmap(nullptr, q->descs_bytes_, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev_fd, offset);
  if (descs == MAP_FAILED) {
    return Status::Error(errno, "mmap of ublk queue " + std::to_string(options.queue_id) +
                                    " descriptors: " + ErrnoText(errno));
  }
  q->descs_ = static_cast<const ublk::IoDesc*>(descs);

  // Anonymous memory is committed only where a request touches it; page-aligned for O_DIRECT.
  q->buffers_bytes_ = size_t{options.depth} * options.io_bytes_max;
  void* buffers =
      mmap(nullptr, q->buffers_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buffers == MAP_FAILED) {
    return Status::Error(errno, "ublk queue buffers (" + std::to_string(q->buffers_bytes_) +
                                    " bytes): " + ErrnoText(errno));
  }
  q->buffers_ = static_cast<uint8_t*>(buffers);
  q->tags_.resize(options.depth);
  for (uint16_t i = 0; i < options.depth; ++i) {
    Tag& t = q->tags_[i];
    t.cmd.on_complete = &UblkQueue::OnCommandDone;
    t.io.done = &UblkQueue::OnIoDone;
    t.io.context = &t;
    t.queue = q.get();
    t.tag = i;
    t.buffer = q->buffers_ + size_t{i} * options.io_bytes_max;
  }
  return q;
}

UblkQueue::UblkQueue(int cdev_fd, const Options& options, BlockSink& sink)
    : cdev_fd_(cdev_fd), options_(options), sink_(sink) {}

UblkQueue::~UblkQueue() {
  // The ring goes first: its exit cancels the fetches still in the kernel, which point into the
  // buffers.
  ring_.reset();
  if (descs_ != nullptr) munmap(const_cast<ublk::IoDesc*>(descs_), descs_bytes_);
  if (buffers_ != nullptr && !keep_buffers_) munmap(buffers_, buffers_bytes_);
}

void UblkQueue::Start() {
  for (Tag& t : tags_) {
    ublk::IoCmd cmd;
    cmd.q_id = options_.queue_id;
    cmd.tag = t.tag;
    cmd.addr = reinterpret_cast<uintptr_t>(t.buffer);
    ring_->UringCmd(cdev_fd_, ublk::kUIoFetchReq, &cmd, sizeof cmd, &t.cmd);
  }
}

void UblkQueue::OnCommandDone(DiskOp* op, int result) {
  Tag& t = *reinterpret_cast<Tag*>(op);
  UblkQueue& q = *t.queue;
  if (result == ublk::kIoResOk) {
    if (!q.closing_) q.Serve(t);
    return;
  }
  ++q.aborted_;
  if (result != ublk::kIoResAbort && !q.logged_error_) {
    q.logged_error_ = true;
    spdlog::error("ublk queue {}: the driver refused a command for tag {}: {}", q.options_.queue_id,
                  t.tag, ErrnoText(-result));
  }
}

void UblkQueue::Serve(Tag& t) {
  // The driver wrote the descriptor before completing the fetch; copy it once.
  const ublk::IoDesc desc = descs_[t.tag];
  const uint8_t op = desc.op_flags & 0xFF;
  BlockRequest& r = t.io.request;
  r = BlockRequest{};
  r.offset_bytes = desc.start_sector * kSectorBytes;
  r.length_bytes = uint64_t{desc.nr_sectors} * kSectorBytes;
  r.fua = (desc.op_flags & ublk::kIoFFua) != 0;
  r.may_punch = (desc.op_flags & ublk::kIoFNoUnmap) == 0;
  t.io.iov = nullptr;
  t.io.iov_count = 0;
  switch (op) {
    case ublk::kOpRead:
    case ublk::kOpWrite:
      r.op = op == ublk::kOpRead ? BlockOp::kRead : BlockOp::kWrite;
      if (r.length_bytes > options_.io_bytes_max) {
        Commit(t, -EIO);  // larger than the max_sectors we set: a driver bug
        return;
      }
      t.iov = {t.buffer, r.length_bytes};
      t.io.iov = &t.iov;
      t.io.iov_count = 1;
      break;
    case ublk::kOpFlush:
      r.op = BlockOp::kFlush;
      r.offset_bytes = r.length_bytes = 0;
      break;
    case ublk::kOpDiscard:
      r.op = BlockOp::kTrim;
      break;
    case ublk::kOpWriteZeroes:
      r.op = BlockOp::kWriteZeroes;
      break;
    default:
      Commit(t, -EOPNOTSUPP);
      return;
  }
  if (r.op != BlockOp::kFlush && (r.offset_bytes > options_.size_bytes ||
                                  r.length_bytes > options_.size_bytes - r.offset_bytes)) {
    Commit(t, -EIO);
    return;
  }
  if (r.length_bytes == 0 && r.op != BlockOp::kFlush) {
    Commit(t, 0);
    return;
  }
  ++busy_;
  ++requests_;
  sink_.Submit(&t.io);
}

void UblkQueue::OnIoDone(DiskIo* io, int error) {
  Tag& t = *static_cast<Tag*>(io->context);
  UblkQueue& q = *t.queue;
  --q.busy_;
  if (q.closing_) return;  // the ring is about to go: the next daemon gets it again
  int32_t result = 0;
  if (error != 0) {
    result = -error;
  } else if (io->request.op == BlockOp::kRead || io->request.op == BlockOp::kWrite) {
    result = static_cast<int32_t>(io->request.length_bytes);
  }
  q.Commit(t, result);
}

void UblkQueue::Commit(Tag& t, int32_t result) {
  ublk::IoCmd cmd;
  cmd.q_id = options_.queue_id;
  cmd.tag = t.tag;
  cmd.result = result;
  cmd.addr = reinterpret_cast<uintptr_t>(t.buffer);
  ring_->UringCmd(cdev_fd_, ublk::kUIoCommitAndFetchReq, &cmd, sizeof cmd, &t.cmd);
}

}  // namespace repld
