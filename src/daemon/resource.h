// One resource on this node: its backing disk, the disk ring, the buffer pool, the NBD frontend
// and the control socket, wired together. A resource whose file names two nodes is replicated:
// the frontend's requests go through a ReplicatedDevice (metadata, replication core, peer link);
// a resource of one node serves its disk alone, without metadata.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>

#include "blockdev/backing_store.h"
#include "blockdev/buffer_pool.h"
#include "blockdev/disk_ring.h"
#include "blockdev/nbd_server.h"
#include "blockdev/ublk_device.h"
#include "common/status.h"
#include "daemon/config.h"
#include "daemon/control_server.h"
#include "daemon/metrics_server.h"
#include "daemon/replicated_device.h"
#include "daemon/sink_switch.h"

namespace repld {

class Resource {
 public:
  static Result<std::unique_ptr<Resource>> Create(asio::io_context& io,
                                                  const ResourceConfig& config,
                                                  const NodeConfig& node);
  Status Start();
  // Drains the frontend, then makes everything written durable.
  asio::awaitable<Status> Stop(std::chrono::milliseconds drain_timeout);
  // During Stop: give up on the drain and close every client connection now.
  void AbortClients();
  // The status object of docs/control.md.
  nlohmann::json StatusJson() const;

 private:
  Resource(asio::io_context& io, const ResourceConfig& config, const NodeConfig& node);
  asio::awaitable<nlohmann::json> HandleControl(const nlohmann::json& request);
  asio::awaitable<nlohmann::json> HandleCommand(const nlohmann::json& request);
  // replctl detach / attach (resource_attach.cc): a Secondary lets go of its disk and goes
  // Diskless (the peer link drops, the Primary records what it misses), then takes a disk
  // again: the same one, or a replacement with fresh metadata, and reconnects to resync.
  // `why`: what the peer hears and the log says (the operator's detach when empty).
  asio::awaitable<Status> Detach(std::string& message, std::string why = {});
  // [disk] on_io_error = "detach": the disk failed an I/O; detach it as the operator would.
  void OnDetachNeeded(const std::string& why);
  asio::awaitable<void> DetachFailedDisk(std::string why);
  // A diskless Primary's failed disk: closed, with its metadata, once its requests finished.
  asio::awaitable<void> ReleaseFailedDisk();
  // Hooks a device just opened up to this resource (events, the failed disk's detach).
  void WireDevice(ReplicatedDevice& device);
  Status Attach(std::string& message);
  // Opens node_.disk and a started device on it (store_ and device_), as a disk that failed
  // before when `disk_failed_before` (Inconsistent, resynced whole). The size must not change.
  Status OpenDisk(bool disk_failed_before);
  // replctl attach on a diskless Primary (resource_attach_primary.cc): the device is replaced
  // by one on the new disk, which resyncs from the peer and is promoted, while the frontends'
  // requests wait in the switch.
  asio::awaitable<Status> AttachToPrimary(std::string& message);
  // The disk named in the configuration has this resource's metadata and size (read-only):
  // its superblock.
  Result<Superblock> CheckDiskToAttach() const;
  // Polls until `done` (true), `max` passes or Stop begins (false).
  asio::awaitable<bool> WaitUntil(std::function<bool()> done, std::chrono::milliseconds max);
  // The status of a detached node: Secondary, Diskless, StandAlone.
  ReplicaStatus DetachedReport() const;
  // replctl detach: a replicated resource without its disk (store_ and device_ are null).
  bool detached() const { return replicated_ && device_ == nullptr; }
  // Stops the peer link and waits (up to `max`) until no apply or flush is on the disk; at
  // Stop() and detach. Whether the device is idle.
  asio::awaitable<bool> StopDevice(std::chrono::milliseconds max);
  // replctl adjust (resource_adjust.cc): reads the file again, applies what a running daemon
  // can take, and answers with every change and when it takes effect.
  nlohmann::json Adjust(bool dry_run);
  // The Prometheus endpoint of `node`, listening; null when it has none.
  Result<std::unique_ptr<MetricsServer>> StartMetrics(const ResourceConfig& config,
                                                      const NodeConfig& node);
  // Sends `replctl events` connections what changed since the last call (or their start).
  void PublishEvents();
  // The ublk frontend follows the role: /dev/ublkbN exists while this node is Primary.
  asio::awaitable<Status> PromoteWithDevice(bool force);
  asio::awaitable<Status> DemoteWithDevice();
  asio::awaitable<void> StartUblk();
  uint32_t OpenClients() const;
  uint32_t FrontendRequestsMax() const;
  // Holds ublk_changing_ while a device is created or removed, whatever the way out.
  struct ChangingUblk {
    explicit ChangingUblk(bool& flag) : flag_(flag) { flag_ = true; }
    ~ChangingUblk() { flag_ = false; }
    bool& flag_;
  };
  std::optional<std::string> Admission() const;

  asio::io_context& io_;
  ResourceConfig config_;
  NodeConfig node_;
  NbdConfig nbd_;
  std::unique_ptr<DiskRing> ring_;
  std::unique_ptr<BackingStore> store_;  // null while detached
  std::unique_ptr<BufferPool> pool_;
  bool replicated_ = false;                   // the file names a peer
  std::unique_ptr<ReplicatedDevice> device_;  // null when served alone, or while detached
  ReplicatedDevice::Options device_options_;
  std::unique_ptr<SinkSwitch> switch_;  // replicated: the frontends' sink, device_ or none
  bool detaching_ = false;              // Detach() is waiting for the device to go idle
  bool attaching_ = false;              // AttachToPrimary() runs: Primary to the clients
  // The disk's failure that detached it (on_io_error = "detach"), until 'replctl attach'.
  std::optional<DiskErrorRecord> disk_error_;
  // The metadata UUID of the disk that failed: attaching that disk again resyncs it whole; a
  // replacement with metadata of its own is what its metadata says.
  std::optional<MdUuid> failed_disk_uuid_;
  std::unique_ptr<NbdServer> server_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<MetricsServer> metrics_;  // [metrics] listen set
  BlockSink* sink_ = nullptr;               // the store, or the replicated device
  std::unique_ptr<UblkDevice> ublk_;        // frontend = "ublk", while Primary
  bool ublk_changing_ = false;              // a device is being created or removed
  bool stopping_ = false;                   // Stop() has begun: no more device changes
  nlohmann::json event_objects_;            // the states events last reported (event_feed.h)
};

}  // namespace repld
