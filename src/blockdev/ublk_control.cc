#include "blockdev/ublk_control.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace repld {

namespace {
constexpr const char* kControlPath = "/dev/ublk-control";
}

Result<std::unique_ptr<UblkControl>> UblkControl::Open() {
  const int fd = ::open(kControlPath, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return Status::Error(e, std::string(kControlPath) + ": " + ErrnoText(e) +
                                (e == ENOENT ? "; the kernel's ublk driver is not loaded "
                                               "(modprobe ublk_drv; Linux 6.0 or newer) or "
                                               "the resource should use frontend = \"nbd\""
                                             : ""));
  }
  std::unique_ptr<UblkControl> control(new UblkControl(fd));
  // Control commands carry 32 bytes in the SQE: they need the 128-byte form.
  io_uring_params params{};
  params.flags = IORING_SETUP_SQE128;
  const int rc = io_uring_queue_init_params(4, &control->ring_, &params);
  if (rc < 0) {
    return Status::Error(-rc, "io_uring with 128-byte SQEs for " + std::string(kControlPath) +
                                  ": " + ErrnoText(-rc));
  }
  control->ring_ready_ = true;
  return control;
}

UblkControl::~UblkControl() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
  ::close(fd_);
}

Status UblkControl::Run(uint32_t cmd_op, const char* name, ublk::CtrlCmd& cmd) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  REPLD_CHECK(sqe != nullptr);  // one command at a time
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd_;
  sqe->cmd_op = cmd_op;
  std::memcpy(sqe->cmd, &cmd, sizeof cmd);
  int rc;
  do {
    rc = io_uring_submit(&ring_);
  } while (rc == -EINTR);
  if (rc < 0) return Status::Error(-rc, std::string("ublk ") + name + ": " + ErrnoText(-rc));
  io_uring_cqe* cqe = nullptr;
  do {
    rc = io_uring_wait_cqe(&ring_, &cqe);
  } while (rc == -EINTR);
  if (rc < 0) return Status::Error(-rc, std::string("ublk ") + name + ": " + ErrnoText(-rc));
  const int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  if (res < 0) {
    return Status::Error(-res, std::string("ublk ") + name + " (device " +
                                   std::to_string(cmd.dev_id) + "): " + ErrnoText(-res));
  }
  return Status::Ok();
}

Status UblkControl::AddDevice(ublk::DevInfo& info) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = info.dev_id;
  cmd.addr = reinterpret_cast<uintptr_t>(&info);
  cmd.len = sizeof info;
  Status s = Run(ublk::kUCmdAddDev, "ADD_DEV", cmd);
  if (!s.ok() && s.code() == EEXIST) {
    return Status::Error(EEXIST, "ublk device " + std::to_string(info.dev_id) +
                                     " exists already (another resource's ublk.device_id, or "
                                     "a device left over; see /sys/class/ublk-char)");
  }
  return s;
}

Status UblkControl::SetParams(uint32_t dev_id, const ublk::Params& params) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  cmd.addr = reinterpret_cast<uintptr_t>(&params);
  cmd.len = static_cast<uint16_t>(params.len);
  return Run(ublk::kUCmdSetParams, "SET_PARAMS", cmd);
}

Result<ublk::DevInfo> UblkControl::DeviceInfo(uint32_t dev_id) {
  ublk::DevInfo info;
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  cmd.addr = reinterpret_cast<uintptr_t>(&info);
  cmd.len = sizeof info;
  Status s = Run(ublk::kUCmdGetDevInfo, "GET_DEV_INFO", cmd);
  if (!s.ok()) return s;
  return info;
}

Status UblkControl::StartDevice(uint32_t dev_id, pid_t daemon_pid) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  cmd.data[0] = static_cast<uint64_t>(daemon_pid);
  return Run(ublk::kUCmdStartDev, "START_DEV", cmd);
}

Status UblkControl::StopDevice(uint32_t dev_id) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  return Run(ublk::kUCmdStopDev, "STOP_DEV", cmd);
}

Status UblkControl::DeleteDevice(uint32_t dev_id) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  return Run(ublk::kUCmdDelDev, "DEL_DEV", cmd);
}

Status UblkControl::DeleteDeviceNoWait(uint32_t dev_id) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  Status s = Run(ublk::kUCmdDelDevAsync, "DEL_DEV_ASYNC", cmd);
  if (!s.ok() && (s.code() == EOPNOTSUPP || s.code() == EINVAL || s.code() == ENOTTY)) {
    return DeleteDevice(dev_id);  // a kernel before 6.9
  }
  return s;
}

Status UblkControl::StartRecovery(uint32_t dev_id) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  return Run(ublk::kUCmdStartUserRecovery, "START_USER_RECOVERY", cmd);
}

Status UblkControl::EndRecovery(uint32_t dev_id, pid_t daemon_pid) {
  ublk::CtrlCmd cmd;
  cmd.dev_id = dev_id;
  cmd.data[0] = static_cast<uint64_t>(daemon_pid);
  return Run(ublk::kUCmdEndUserRecovery, "END_USER_RECOVERY", cmd);
}

}  // namespace repld
