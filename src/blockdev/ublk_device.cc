#include "blockdev/ublk_device.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <thread>

#include "blockdev/ublk_control.h"

namespace repld {

namespace {

// How long a device whose daemon died may stay live before the kernel quiesces it.
constexpr std::chrono::seconds kSettleTimeout{40};

constexpr uint64_t kDeviceFlags =
    ublk::kFUserRecovery | ublk::kFUserRecoveryReissue | ublk::kFCmdIoctlEncode;

// Runs `fn` (control commands that wait for the queues) on a thread of its own, while the
// loop goes on serving them.
asio::awaitable<Status> OffLoop(std::function<Status()> fn) {
  auto executor = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Status)>(
      [fn = std::move(fn), executor](auto handler) mutable {
        std::thread([fn = std::move(fn), executor, handler = std::move(handler)]() mutable {
          Status s = fn();
          asio::post(executor, [handler = std::move(handler), s = std::move(s)]() mutable {
            std::move(handler)(std::move(s));
          });
        }).detach();
      },
      asio::use_awaitable);
}

Status WithControl(const std::function<Status(UblkControl&)>& fn) {
  auto control = UblkControl::Open();
  if (!control.ok()) return control.status();
  return fn(*control.value());
}

uint8_t Log2(uint32_t v) {
  uint8_t n = 0;
  while ((1u << n) < v) ++n;
  return n;
}

asio::awaitable<void> Pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  asio::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace

asio::awaitable<Result<std::optional<ublk::DevInfo>>> UblkDevice::FindLeftOver(uint32_t device_id) {
  auto control = UblkControl::Open();
  if (!control.ok()) co_return control.status();
  const auto deadline = std::chrono::steady_clock::now() + kSettleTimeout;
  for (;;) {
    auto info = control.value()->DeviceInfo(device_id);
    if (!info.ok()) {
      if (info.status().code() == ENODEV) co_return std::optional<ublk::DevInfo>();
      co_return info.status();
    }
    const ublk::DevInfo& i = info.value();
    if (i.state != ublk::kStateLive) co_return std::optional<ublk::DevInfo>(i);
    const bool server_alive = i.ublksrv_pid > 0 && i.ublksrv_pid != ::getpid() &&
                              (::kill(i.ublksrv_pid, 0) == 0 || errno == EPERM);
    const std::string path = "/dev/ublkb" + std::to_string(device_id);
    if (server_alive) {
      co_return Status::Error(EBUSY, path + " is live, served by process " +
                                         std::to_string(i.ublksrv_pid) +
                                         ": another resource with the same ublk device id, "
                                         "or a daemon of this one still running");
    }
    // Its daemon died: the kernel quiesces the device shortly (at the latest when a request
    // it still held times out, 30 s).
    if (std::chrono::steady_clock::now() > deadline) {
      co_return Status::Error(
          EBUSY, path + " is still live " + std::to_string(kSettleTimeout.count()) +
                     " s after its daemon (process " + std::to_string(i.ublksrv_pid) + ") died");
    }
    co_await Pause(std::chrono::milliseconds(200));
  }
}

asio::awaitable<Result<std::unique_ptr<UblkDevice>>> UblkDevice::Start(asio::io_context& io,
                                                                       const Options& options,
                                                                       BlockSink& sink) {
  if (options.block_bytes < 512 || options.block_bytes > 4096 ||
      (options.block_bytes & (options.block_bytes - 1)) != 0) {
    co_return Status::Invalid(
        "a ublk device's logical block size must be 512 to 4096 bytes, "
        "a power of two; the backing disk asks for " +
        std::to_string(options.block_bytes));
  }
  auto found = co_await FindLeftOver(options.device_id);
  if (!found.ok()) co_return found.status();
  std::unique_ptr<UblkDevice> dev(new UblkDevice(options));
  bool recover = false;
  if (found.value()) {
    const ublk::DevInfo& info = *found.value();
    if (info.state == ublk::kStateQuiesced && (info.flags & ublk::kFUserRecovery) != 0) {
      recover = true;
      // The kernel keeps the queues it was created with.
      dev->options_.queues = info.nr_hw_queues;
      dev->options_.depth = info.queue_depth;
      dev->options_.io_bytes_max = info.max_io_buf_bytes;
    } else {
      Status s = co_await DeleteLeftOver(options.device_id);  // dead: nothing to take over
      if (!s.ok()) co_return s;
    }
  }
  Status s = co_await dev->Serve(io, sink, recover);
  if (!s.ok()) co_return s;
  spdlog::info("{}: {} ({} queue(s) of {} requests, up to {} bytes each)", dev->path(),
               recover ? "taken over from the previous daemon" : "created", dev->options_.queues,
               dev->options_.depth, dev->options_.io_bytes_max);
  co_return std::move(dev);
}

asio::awaitable<Status> UblkDevice::Serve(asio::io_context& io, BlockSink& sink, bool recover) {
  const uint32_t id = options_.device_id;
  auto control = UblkControl::Open();
  if (!control.ok()) co_return control.status();
  UblkControl& ctl = *control.value();
  if (recover) {
    // EBUSY until the dead daemon's /dev/ublkcN is fully released.
    Status s = ctl.StartRecovery(id);
    for (int attempt = 0; !s.ok() && s.code() == EBUSY && attempt < 50; ++attempt) {
      co_await Pause(std::chrono::milliseconds(200));
      s = ctl.StartRecovery(id);
    }
    if (!s.ok()) co_return s;
  } else {
    ublk::DevInfo info;
    info.nr_hw_queues = options_.queues;
    info.queue_depth = options_.depth;
    info.max_io_buf_bytes = options_.io_bytes_max;
    info.dev_id = id;
    info.flags = kDeviceFlags;
    Status s = ctl.AddDevice(info);
    if (!s.ok()) co_return s;
    ublk::Params p{};
    p.len = sizeof p;
    p.types = ublk::kParamTypeBasic | ublk::kParamTypeDiscard;
    // A volatile cache with FUA: the kernel sends FLUSH and FUA, which replication honours.
    p.basic.attrs = ublk::kAttrVolatileCache | ublk::kAttrFua;
    p.basic.logical_bs_shift = Log2(options_.block_bytes);
    p.basic.physical_bs_shift = std::max<uint8_t>(p.basic.logical_bs_shift, 12);
    p.basic.io_min_shift = p.basic.logical_bs_shift;
    p.basic.io_opt_shift = 12;
    p.basic.max_sectors = options_.io_bytes_max / 512;
    p.basic.dev_sectors = options_.size_bytes / 512;
    p.discard.discard_granularity = 4096;
    p.discard.max_discard_sectors = UINT32_MAX >> 9;
    p.discard.max_write_zeroes_sectors = UINT32_MAX >> 9;
    p.discard.max_discard_segments = 1;
    s = ctl.SetParams(id, p);
    if (!s.ok()) {
      (void)ctl.DeleteDeviceNoWait(id);
      co_return s;
    }
  }
  // devtmpfs creates /dev/ublkcN with the device; udev may take a moment to.
  const std::string cdev = "/dev/ublkc" + std::to_string(id);
  int open_errno = 0;
  for (int attempt = 0; attempt < 50 && cdev_fd_ < 0; ++attempt) {
    cdev_fd_ = ::open(cdev.c_str(), O_RDWR | O_CLOEXEC);
    open_errno = cdev_fd_ < 0 ? errno : 0;
    if (open_errno == ENOENT) co_await Pause(std::chrono::milliseconds(20));
  }
  if (cdev_fd_ < 0) {
    const int e = open_errno;
    if (!recover) (void)ctl.DeleteDeviceNoWait(id);
    co_return Status::Error(e, cdev + ": " + ErrnoText(e));
  }
  for (uint16_t q = 0; q < options_.queues; ++q) {
    UblkQueue::Options qo;
    qo.queue_id = q;
    qo.depth = options_.depth;
    qo.io_bytes_max = options_.io_bytes_max;
    qo.size_bytes = options_.size_bytes;
    auto queue = UblkQueue::Create(io, cdev_fd_, qo, sink);
    if (!queue.ok()) {
      CloseQueues();
      if (!recover) (void)ctl.DeleteDeviceNoWait(id);
      co_return queue.status();
    }
    queues_.push_back(std::move(queue).value());
    queues_.back()->Start();
  }
  // The kernel reads the partition table (START) or hands over the waiting requests (END)
  // through the queues: they must be served meanwhile.
  const pid_t pid = ::getpid();
  Status s = co_await OffLoop([id, pid, recover] {
    return WithControl(
        [&](UblkControl& c) { return recover ? c.EndRecovery(id, pid) : c.StartDevice(id, pid); });
  });
  if (!s.ok()) {
    CloseQueues();
    if (!recover) (void)ctl.DeleteDeviceNoWait(id);
    co_return s;
  }
  co_return Status::Ok();
}

asio::awaitable<Status> UblkDevice::DeleteLeftOver(uint32_t device_id) {
  co_return co_await OffLoop([device_id] {
    return WithControl([&](UblkControl& c) {
      Status s = c.StopDevice(device_id);
      if (!s.ok()) spdlog::warn("ublk device {}: {}", device_id, s.message());
      return c.DeleteDeviceNoWait(device_id);
    });
  });
}

UblkDevice::~UblkDevice() { CloseQueues(); }

void UblkDevice::CloseQueues() {
  queues_.clear();
  if (cdev_fd_ >= 0) ::close(cdev_fd_);
  cdev_fd_ = -1;
}

uint32_t UblkDevice::busy() const {
  uint32_t n = 0;
  for (const auto& q : queues_) n += q->busy();
  return n;
}

bool UblkDevice::InUse() const {
  const int fd = ::open(path().c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    return false;
  }
  return errno == EBUSY;
}

bool UblkDevice::Mounted() const {
  std::ifstream mounts("/proc/self/mounts");
  std::string source, rest;
  const std::string me = path();
  while (mounts >> source && std::getline(mounts, rest)) {
    if (source == me) return true;
  }
  return false;
}

asio::awaitable<Status> UblkDevice::Remove() {
  const uint32_t id = options_.device_id;
  // STOP_DEV waits for the requests in flight, which the loop serves meanwhile, and completes
  // every fetch with ABORT.
  Status s = co_await OffLoop(
      [id] { return WithControl([&](UblkControl& c) { return c.StopDevice(id); }); });
  if (!s.ok()) co_return s;
  for (auto& q : queues_) q->Close();
  while (busy() > 0) co_await Pause(std::chrono::milliseconds(5));
  CloseQueues();
  s = co_await OffLoop(
      [id] { return WithControl([&](UblkControl& c) { return c.DeleteDeviceNoWait(id); }); });
  if (s.ok()) spdlog::info("{}: stopped and deleted", path());
  co_return s;
}

asio::awaitable<void> UblkDevice::Abandon() {
  for (auto& q : queues_) q->Close(/*keep_buffers=*/true);
  while (busy() > 0) co_await Pause(std::chrono::milliseconds(5));
  CloseQueues();
  spdlog::info("{}: left to the next daemon (requests wait until it takes the device over)",
               path());
}

}  // namespace repld
