// One resource on this node: its backing disk, the disk ring, the buffer pool, the NBD frontend
// and the control socket, wired together. A resource whose file names two nodes is replicated:
// the frontend's requests go through a ReplicatedDevice (metadata, replication core, peer link);
// a resource of one node serves its disk alone, without metadata.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <memory>

#include "blockdev/backing_store.h"
#include "blockdev/buffer_pool.h"
#include "blockdev/disk_ring.h"
#include "blockdev/nbd_server.h"
#include "common/status.h"
#include "daemon/config.h"
#include "daemon/control_server.h"
#include "daemon/replicated_device.h"

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

 private:
  Resource(const ResourceConfig& config, const NodeConfig& node);
  nlohmann::json HandleControl(const nlohmann::json& request);
  nlohmann::json StatusJson() const;
  std::optional<std::string> Admission() const;

  ResourceConfig config_;
  NodeConfig node_;
  NbdConfig nbd_;
  std::unique_ptr<DiskRing> ring_;
  std::unique_ptr<BackingStore> store_;
  std::unique_ptr<BufferPool> pool_;
  std::unique_ptr<ReplicatedDevice> device_;  // null for a resource served alone
  std::unique_ptr<NbdServer> server_;
  std::unique_ptr<ControlServer> control_;
};

}  // namespace repld
