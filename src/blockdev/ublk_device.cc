#include "blockdev/ublk_device.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <functional>
#include <thread>

#include "blockdev/ublk_control.h"

namespace repld {

namespace {

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

Result<std::optional<ublk::DevInfo>> UblkDevice::FindLeftOver(uint32_t device_id) {
  auto control = UblkControl::Open();
  if (!control.ok()) return control.status();
  auto info = control.value()->DeviceInfo(device_id);
  if (!info.ok()) {
    if (info.status().code() == ENODEV) return std::optional<ublk::DevInfo>();
    return info.status();
  }
  return std::optional<ublk::DevInfo>(info.value());
}

asio::awaitable<Result<std::unique_ptr<UblkDevice>>> UblkDevice::Start(asio::io_context& io,
                                                                       const Options& options,
                                                                       BlockSink& sink) {
  auto found = FindLeftOver(options.device_id);
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
    } else if (info.state == ublk::kStateLive) {
      co_return Status::Error(EBUSY, dev->path() + " is live, served by process " +
                                         std::to_string(info.ublksrv_pid) +
                                         "; another resource uses ublk.device_id " +
                                         std::to_string(options.device_id) + "?");
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
    Status s = ctl.StartRecovery(id);
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
      (void)ctl.DeleteDevice(id);
      co_return s;
    }
  }
  // devtmpfs creates /dev/ublkcN with the device; udev may take a moment to.
  const std::string cdev = "/dev/ublkc" + std::to_string(id);
  for (int attempt = 0; attempt < 50 && cdev_fd_ < 0; ++attempt) {
    cdev_fd_ = ::open(cdev.c_str(), O_RDWR | O_CLOEXEC);
    if (cdev_fd_ < 0 && errno == ENOENT) co_await Pause(std::chrono::milliseconds(20));
  }
  if (cdev_fd_ < 0) {
    const int e = errno;
    if (!recover) (void)ctl.DeleteDevice(id);
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
      if (!recover) (void)ctl.DeleteDevice(id);
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
    if (!recover) (void)ctl.DeleteDevice(id);
    co_return s;
  }
  co_return Status::Ok();
}

asio::awaitable<Status> UblkDevice::DeleteLeftOver(uint32_t device_id) {
  co_return co_await OffLoop([device_id] {
    return WithControl([&](UblkControl& c) {
      Status s = c.StopDevice(device_id);
      if (!s.ok()) spdlog::warn("ublk device {}: {}", device_id, s.message());
      return c.DeleteDevice(device_id);
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

asio::awaitable<Status> UblkDevice::Remove() {
  const uint32_t id = options_.device_id;
  // STOP_DEV waits for the requests in flight, which the loop serves meanwhile, and completes
  // every fetch with ABORT.
  Status s = co_await OffLoop(
      [id] { return WithControl([&](UblkControl& c) { return c.StopDevice(id); }); });
  if (!s.ok()) co_return s;
  for (auto& q : queues_) q->Close();
  while (busy() > 0) co_await Pause(std::chrono::milliseconds(5));
  CloseQueues();  // DEL_DEV waits for /dev/ublkcN to be released
  s = co_await OffLoop(
      [id] { return WithControl([&](UblkControl& c) { return c.DeleteDevice(id); }); });
  if (s.ok()) spdlog::info("{}: stopped and deleted", path());
  co_return s;
}

asio::awaitable<void> UblkDevice::Abandon() {
  for (auto& q : queues_) q->Close();
  while (busy() > 0) co_await Pause(std::chrono::milliseconds(5));
  CloseQueues();
  spdlog::info("{}: left to the next daemon (requests wait until it takes the device over)",
               path());
}

}  // namespace repld
