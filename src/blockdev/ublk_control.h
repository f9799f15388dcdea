// Commands to the ublk driver's control device, /dev/ublk-control: create, configure, start,
// stop, delete and recover a /dev/ublkbN. Each call is synchronous. START_DEV, STOP_DEV,
// DEL_DEV and END_USER_RECOVERY wait for the device's queues (the kernel reads the partition
// table, flushes, or waits for /dev/ublkcN to be released), so they must not run on the thread
// that serves those queues; UblkDevice runs them on a thread of their own.
#pragma once

#include <liburing.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>

#include "blockdev/ublk_uapi.h"
#include "common/status.h"

namespace repld {

class UblkControl {
 public:
  // Opens /dev/ublk-control; the error says when the ublk_drv module is not loaded.
  static Result<std::unique_ptr<UblkControl>> Open();
  ~UblkControl();
  UblkControl(const UblkControl&) = delete;
  UblkControl& operator=(const UblkControl&) = delete;

  // ADD_DEV: `info` in (dev_id, queues, depth, io size, flags), out (what the kernel set).
  [[nodiscard]] Status AddDevice(ublk::DevInfo& info);
  [[nodiscard]] Status SetParams(uint32_t dev_id, const ublk::Params& params);
  [[nodiscard]] Result<ublk::DevInfo> DeviceInfo(uint32_t dev_id);
  // Returns once /dev/ublkbN exists (the kernel has read its partition table through the
  // queues, so they must be served meanwhile).
  [[nodiscard]] Status StartDevice(uint32_t dev_id, pid_t daemon_pid);
  [[nodiscard]] Status StopDevice(uint32_t dev_id);
  // Removes the device. It is gone once /dev/ublkcN is released and nobody has /dev/ublkbN
  // open; DEL_DEV waits for that, DEL_DEV_ASYNC (Linux 6.9+; DEL_DEV on older kernels) does
  // not, so that a process holding the block device open cannot hang the daemon.
  [[nodiscard]] Status DeleteDevice(uint32_t dev_id);
  [[nodiscard]] Status DeleteDeviceNoWait(uint32_t dev_id);
  // A device whose daemon died (state kStateQuiesced) is taken over in two steps: START, then
  // the queues fetch their requests, then END (which returns once they all have).
  [[nodiscard]] Status StartRecovery(uint32_t dev_id);
  [[nodiscard]] Status EndRecovery(uint32_t dev_id, pid_t daemon_pid);

 private:
  UblkControl(int fd) : fd_(fd) {}
  [[nodiscard]] Status Run(uint32_t cmd_op, const char* name, ublk::CtrlCmd& cmd);

  int fd_;
  io_uring ring_{};
  bool ring_ready_ = false;
};

}  // namespace repld
