// A /dev/ublkbN served by this daemon: created (ADD_DEV, SET_PARAMS, the queues' fetches,
// START_DEV) when the resource becomes Primary, stopped and deleted when it stops being
// Primary. It is created with UBLK_F_USER_RECOVERY and _REISSUE: if the daemon dies, the kernel
// keeps the device and queues its requests (those in flight are reissued), and the next daemon
// takes it over (Start finds it quiesced) without the file system on it seeing an error.
//
// The queues run on the event loop's thread; the control commands that wait for them run on a
// thread of their own (see UblkControl).
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blockdev/block_sink.h"
#include "blockdev/ublk_queue.h"
#include "blockdev/ublk_uapi.h"
#include "common/status.h"

namespace repld {

class UblkDevice {
 public:
  struct Options {
    uint32_t device_id = 0;  // N of /dev/ublkbN
    uint16_t queues = 1;
    uint16_t depth = 128;
    uint32_t io_bytes_max = 512 * 1024;
    uint64_t size_bytes = 0;
    uint32_t block_bytes = 512;  // logical block size: 512 or the disk's direct I/O alignment
  };

  // The device a dead daemon left (quiesced, for recovery; or dead), if there is one. A live
  // device whose daemon has died is waited for until the kernel quiesces it; one served by a
  // live process is an error (and must not be touched).
  static asio::awaitable<Result<std::optional<ublk::DevInfo>>> FindLeftOver(uint32_t device_id);
  // Creates the device, or takes over a quiesced one, and serves it through `sink`.
  static asio::awaitable<Result<std::unique_ptr<UblkDevice>>> Start(asio::io_context& io,
                                                                    const Options& options,
                                                                    BlockSink& sink);
  // Deletes a device nobody serves (a left-over the daemon will not take over): its requests
  // fail instead of waiting forever.
  static asio::awaitable<Status> DeleteLeftOver(uint32_t device_id);
  ~UblkDevice();
  UblkDevice(const UblkDevice&) = delete;
  UblkDevice& operator=(const UblkDevice&) = delete;

  // STOP_DEV (requests in flight finish), then DEL_DEV: /dev/ublkbN is gone.
  asio::awaitable<Status> Remove();
  // Stops serving and leaves the device to the next daemon (quiesced; its requests wait and
  // those not finished here are reissued to it). Returns once no request is in the sink.
  asio::awaitable<void> Abandon();
  // Whether /dev/ublkbN is open exclusively (mounted, or held by a process with O_EXCL).
  bool InUse() const;
  // Whether this mount namespace sees a file system mounted from the device (no open).
  bool Mounted() const;
  std::string path() const { return "/dev/ublkb" + std::to_string(options_.device_id); }
  uint32_t busy() const;

 private:
  UblkDevice(const Options& options) : options_(options) {}
  asio::awaitable<Status> Serve(asio::io_context& io, BlockSink& sink, bool recover);
  void CloseQueues();

  Options options_;
  int cdev_fd_ = -1;
  std::vector<std::unique_ptr<UblkQueue>> queues_;
};

}  // namespace repld
