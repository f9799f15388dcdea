#include "daemon/resource.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "blockdev/nbd_proto.h"
#include "common/units.h"

namespace repld {

Resource::Resource(const ResourceConfig& config, const NodeConfig& node)
    : config_(config), node_(node), nbd_(EffectiveNbd(config, node)) {}

Result<std::unique_ptr<Resource>> Resource::Create(asio::io_context& io,
                                                   const ResourceConfig& config,
                                                   const NodeConfig& node) {
  std::unique_ptr<Resource> r(new Resource(config, node));
  // Every request in flight may hold one ring entry; the ring rounds up to a power of two.
  const unsigned entries =
      std::clamp<unsigned>(r->nbd_.connections_max * r->nbd_.inflight_max, 64, 4096);
  auto ring = DiskRing::Create(io, entries);
  if (!ring.ok()) return ring.status();
  r->ring_ = std::move(ring).value();

  auto store = BackingStore::Open(node.disk, config.direct_io, *r->ring_);
  if (!store.ok()) {
    return Status::Error(store.status().code(), config.path + ": key 'node." + node.name +
                                                    ".disk': " + store.status().message());
  }
  r->store_ = std::move(store).value();
  const BackingInfo& info = r->store_->info();
  spdlog::info("disk {}: {} ({} bytes), {}, direct I/O {} (alignment {} bytes)", node.disk,
               FormatSizeBytes(info.size_bytes), info.size_bytes,
               info.is_block_device ? "block device" : "regular file",
               info.direct_io ? "on" : "off", info.io_align_bytes);

  r->pool_ = std::make_unique<BufferPool>(io.get_executor(), r->nbd_.buffer_pool_bytes);

  NbdExport exp;
  exp.name = r->nbd_.export_name;
  exp.size_bytes = info.size_bytes;
  exp.block_min_bytes = std::max<uint32_t>(info.io_align_bytes, 1);
  exp.block_preferred_bytes = std::max<uint32_t>(exp.block_min_bytes, 4096);
  exp.block_max_bytes = static_cast<uint32_t>(r->nbd_.request_bytes_max);
  // CAN_MULTI_CONN holds: every connection writes the one backing file, and a FLUSH on any of
  // them fdatasyncs that file, covering writes completed on all connections.
  exp.transmission_flags = nbd::kTxHasFlags | nbd::kTxSendFlush | nbd::kTxSendFua |
                           nbd::kTxSendTrim | nbd::kTxSendWriteZeroes | nbd::kTxCanMultiConn;
  NbdLimits limits;
  limits.connections_max = r->nbd_.connections_max;
  limits.inflight_max = r->nbd_.inflight_max;
  r->server_ = std::make_unique<NbdServer>(io, exp, limits, *r->store_, *r->pool_);
  return r;
}

Status Resource::Start() {
  const std::filesystem::path socket_dir = std::filesystem::path(nbd_.socket).parent_path();
  std::error_code ec;
  if (!socket_dir.empty()) std::filesystem::create_directories(socket_dir, ec);
  Status s = server_->ListenUnix(nbd_.socket);
  if (!s.ok()) return Status::Invalid(config_.path + ": key 'nbd.socket': " + s.message());
  if (!nbd_.listen.empty()) {
    const auto hp = ParseHostPort(nbd_.listen);
    REPLD_CHECK(hp.has_value());  // validated with the configuration
    s = server_->ListenTcp(hp->host, hp->port);
    if (!s.ok()) return Status::Invalid(config_.path + ": key 'nbd.listen': " + s.message());
  }
  server_->Start();
  spdlog::info("resource {}: node {} serving export '{}' ({} bytes) over NBD", config_.name,
               node_.name, server_->exported().name, server_->exported().size_bytes);
  return Status::Ok();
}

asio::awaitable<Status> Resource::Stop(std::chrono::milliseconds drain_timeout) {
  co_await server_->Shutdown(drain_timeout);
  ring_->Close();
  Status s = store_->SyncNow();
  if (s.ok()) spdlog::info("resource {}: stopped; backing disk synced", config_.name);
  co_return s;
}

}  // namespace repld
