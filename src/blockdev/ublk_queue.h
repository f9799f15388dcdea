// One queue of a /dev/ublkbN: the kernel hands its requests to this daemon through URING_CMD
// commands on /dev/ublkcN, one per tag, in an io_uring of the queue's own (a DiskRing, so that
// its completions run on the event loop's thread, which is the queue's "daemon" task for the
// driver: every command of a queue must come from one thread). Per-tag state and buffers are
// allocated once, at creation.
//
// A tag cycles: FETCH_REQ (wait for a request) -> the driver completes it with the request in
// the queue's descriptor array (a WRITE's data already copied into the tag's buffer) -> the
// request runs through the BlockSink, like an NBD request -> COMMIT_AND_FETCH_REQ with the
// result (a READ's data in the buffer, copied out by the driver) and the next fetch. When the
// device stops, the driver completes every fetch with ABORT.
#pragma once

#include <asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <vector>

#include "blockdev/backing_store.h"
#include "blockdev/block_sink.h"
#include "blockdev/disk_ring.h"
#include "blockdev/ublk_uapi.h"
#include "common/status.h"

namespace repld {

class UblkQueue {
 public:
  struct Options {
    uint16_t queue_id = 0;
    uint16_t depth = 128;
    uint32_t io_bytes_max = 512 * 1024;
    uint64_t size_bytes = 0;  // requests beyond it fail (the driver should send none)
  };

  // Maps the queue's descriptors from `cdev_fd` (/dev/ublkcN, which must outlive the queue).
  static Result<std::unique_ptr<UblkQueue>> Create(asio::io_context& io, int cdev_fd,
                                                   const Options& options, BlockSink& sink);
  ~UblkQueue();
  UblkQueue(const UblkQueue&) = delete;
  UblkQueue& operator=(const UblkQueue&) = delete;

  // Issues FETCH_REQ for every tag (on the loop thread, before START_DEV or END_USER_RECOVERY).
  void Start();
  // Takes no new request: those the driver hands over from now on stay unanswered (with
  // UBLK_F_USER_RECOVERY_REISSUE the kernel gives them to the next daemon).
  // `keep_buffers`: the daemon is leaving the device to the next one while the device is live;
  // the kernel may still copy into the buffers until the ring's exit has cancelled every fetch,
  // so they stay mapped (the process is about to exit).
  void Close(bool keep_buffers = false) {
    closing_ = true;
    keep_buffers_ = keep_buffers;
  }
  // Requests handed to the sink and not completed yet.
  uint32_t busy() const { return busy_; }
  // Every tag got ABORT: the driver has let go of the queue.
  bool aborted() const { return aborted_ == options_.depth; }
  uint64_t requests() const { return requests_; }

 private:
  struct Tag {
    DiskOp cmd;  // first member: the URING_CMD completion finds its Tag
    DiskIo io;
    iovec iov{};
    UblkQueue* queue = nullptr;
    uint16_t tag = 0;
    uint8_t* buffer = nullptr;
  };

  UblkQueue(int cdev_fd, const Options& options, BlockSink& sink);
  static void OnCommandDone(DiskOp* op, int result);
  static void OnIoDone(DiskIo* io, int error);
  void Serve(Tag& t);
  void Commit(Tag& t, int32_t result);

  int cdev_fd_;
  Options options_;
  BlockSink& sink_;
  std::unique_ptr<DiskRing> ring_;
  const ublk::IoDesc* descs_ = nullptr;
  size_t descs_bytes_ = 0;
  uint8_t* buffers_ = nullptr;
  size_t buffers_bytes_ = 0;
  std::vector<Tag> tags_;
  uint32_t busy_ = 0;
  uint32_t aborted_ = 0;
  uint64_t requests_ = 0;
  bool logged_error_ = false;
  bool closing_ = false;
  bool keep_buffers_ = false;
};

}  // namespace repld
