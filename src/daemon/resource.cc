#include "daemon/resource.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <filesystem>

#include "blockdev/nbd_proto.h"
#include "common/units.h"
#include "daemon/control_proto.h"
#include "daemon/event_feed.h"
#include "daemon/metrics_text.h"

namespace repld {

Resource::Resource(asio::io_context& io, const ResourceConfig& config, const NodeConfig& node)
    : io_(io), config_(config), node_(node), nbd_(EffectiveNbd(config, node)) {}

Result<std::unique_ptr<Resource>> Resource::Create(asio::io_context& io,
                                                   const ResourceConfig& config,
                                                   const NodeConfig& node) {
  std::unique_ptr<Resource> r(new Resource(io, config, node));
  // Every request in flight may hold one ring entry, and so may each replication operation
  // (applies, resync reads, flushes); the ring rounds up to a power of two.
  const unsigned entries = std::clamp<unsigned>(r->FrontendRequestsMax() * 2, 64, 4096);
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
  BlockSink* sink = r->store_.get();
  if (PeerOf(config, node)) {
    r->replicated_ = true;
    r->device_options_.requests_max = r->FrontendRequestsMax();
    auto device = ReplicatedDevice::Open(io, config, node, *r->store_, r->device_options_);
    if (!device.ok()) return device.status();
    r->device_ = std::move(device).value();
    r->WireDevice(*r->device_);
    r->switch_ = std::make_unique<SinkSwitch>(io);
    r->switch_->set(r->device_.get());
    sink = r->switch_.get();
    exp.size_bytes = r->device_->data_bytes();
    exp.admission = [raw = r.get()] { return raw->Admission(); };
  }
  r->sink_ = sink;
  // The peer protocol moves whole 512-byte sectors: a replicated export asks for them even when
  // the local disk would take any byte.
  exp.block_min_bytes = std::max<uint32_t>(info.io_align_bytes, r->device_ ? 512 : 1);
  exp.block_preferred_bytes = std::max<uint32_t>(exp.block_min_bytes, 4096);
  exp.block_max_bytes = static_cast<uint32_t>(r->nbd_.request_bytes_max);
  // CAN_MULTI_CONN holds: every connection writes the one backing file (through one replication
  // core), and a FLUSH on any of them covers writes completed on all connections.
  exp.transmission_flags = nbd::kTxHasFlags | nbd::kTxSendFlush | nbd::kTxSendFua |
                           nbd::kTxSendTrim | nbd::kTxSendWriteZeroes | nbd::kTxCanMultiConn;
  NbdLimits limits;
  limits.connections_max = r->nbd_.connections_max;
  limits.inflight_max = r->nbd_.inflight_max;
  r->server_ = std::make_unique<NbdServer>(io, exp, limits, *sink, *r->pool_);
  r->control_ = std::make_unique<ControlServer>(
      io, ControlSocketPath(config, node),
      [raw = r.get()](const nlohmann::json& request) { return raw->HandleControl(request); },
      config.control.group);
  return r;
}

std::optional<std::string> Resource::Admission() const {
  if (!replicated_ || attaching_) return std::nullopt;
  if (detached()) {
    return "resource " + config_.name + " has no disk on node " + node_.name +
           " (Diskless, detached): it serves no data. To serve it here: replctl attach " +
           config_.name + ", then replctl primary " + config_.name;
  }
  if (device_->role() == Role::kPrimary) return std::nullopt;
  return "resource " + config_.name + " is Secondary on node " + node_.name +
         "; its data is served by the Primary only. To serve it here: replctl primary " +
         config_.name + " (on node " + node_.name + ")";
}

nlohmann::json Resource::StatusJson() const {
  StatusSnapshot snapshot;
  snapshot.resource = config_.name;
  snapshot.node = node_.name;
  snapshot.clients = OpenClients();
  snapshot.pid = getpid();
  if (ublk_ != nullptr) snapshot.device = ublk_->path();
  if (detached()) {
    if (auto peer = PeerOf(config_, node_)) snapshot.peer_node = peer->name;
    snapshot.replica = DetachedReport();
    snapshot.size_bytes = server_->exported().size_bytes;
    snapshot.disk_error = disk_error_;
  } else if (device_ != nullptr) {
    if (auto peer = PeerOf(config_, node_)) snapshot.peer_node = peer->name;
    snapshot.replica = device_->Report();
    snapshot.size_bytes = device_->data_bytes();
    snapshot.connection_error = device_->link_error();
    snapshot.resync_rate = device_->resync_rate();
    snapshot.degraded_at_start = device_->degraded_at_start();
    snapshot.disk_error = device_->disk_error();
    if (auto rtt = device_->peer_rtt()) snapshot.peer_rtt_seconds = rtt->count() / 1e6;
  } else {
    // Served alone: always the Primary of its own data.
    snapshot.replica.role = Role::kPrimary;
    snapshot.replica.disk = DiskState::kUpToDate;
    snapshot.replica.conn = ConnState::kStandAlone;
    snapshot.replica.repl = ReplState::kOff;
    snapshot.replica.protocol = config_.protocol;
    snapshot.replica.counters.read_bytes = store_->read_bytes();
    snapshot.replica.counters.written_bytes = store_->written_bytes();
    snapshot.size_bytes = server_->exported().size_bytes;
  }
  // Taking a disk (resource_attach_primary.cc): its clients' requests wait, and it is Primary
  // again when they go on (or they fail).
  if (attaching_) snapshot.replica.role = Role::kPrimary;
  return StatusToJson(snapshot);
}

// The most requests the frontend can have in flight at once: every slot the core needs.
uint32_t Resource::FrontendRequestsMax() const {
  if (config_.frontend == Frontend::kUblk) {
    return uint32_t{config_.ublk.queues} * config_.ublk.queue_depth;
  }
  return nbd_.connections_max * nbd_.inflight_max;
}

uint32_t Resource::OpenClients() const {
  // Status must not open the device (an O_EXCL probe could make an administrator's mount
  // fail): a mount that this namespace sees (it is a slave of the host's) counts.
  if (config_.frontend == Frontend::kUblk) return ublk_ != nullptr && ublk_->Mounted() ? 1 : 0;
  return static_cast<uint32_t>(server_->connection_count());
}

asio::awaitable<Status> Resource::PromoteWithDevice(bool force) {
  if (detached() && disk_error_) {
    const DiskErrorRecord& e = *disk_error_;
    co_return Status::Invalid(
        "the disk failed " + e.what + (e.at.empty() ? "" : " at " + e.at) +
        (e.error == 0 ? ""
                      : " (error " + std::to_string(e.error) + ": " + ErrnoText(e.error) + ")") +
        ": it is detached, and this node is not promoted without a disk; "
        "replace it and run 'replctl attach " +
        config_.name + "' (a resync from the peer follows)");
  }
  if (detached()) {
    co_return Status::Invalid(
        "this node has no disk (Diskless, detached): repld has no diskless "
        "Primary; 'replctl attach " +
        config_.name + "' first");
  }
  const bool was_primary = device_ == nullptr || device_->role() == Role::kPrimary;
  // Not `a ? b : co_await c`: GCC 12 destroys the temporary of a co_await inside a
  // conditional expression twice.
  Status s = Status::Ok();
  if (device_ != nullptr) s = co_await device_->Promote(force);
  if (!s.ok() || config_.frontend != Frontend::kUblk || ublk_ != nullptr) co_return s;
  if (ublk_changing_) co_return Status::Invalid("the ublk device is being changed; try again");
  if (stopping_) co_return Status::Invalid("the daemon is stopping");
  ChangingUblk changing(ublk_changing_);
  UblkDevice::Options o;
  o.device_id = EffectiveUblkDeviceId(config_, node_);
  o.queues = config_.ublk.queues;
  o.depth = config_.ublk.queue_depth;
  o.io_bytes_max = config_.ublk.io_bytes_max;
  o.size_bytes = server_->exported().size_bytes;
  o.block_bytes = std::max<uint32_t>(512, server_->exported().block_min_bytes);
  auto dev = co_await UblkDevice::Start(io_, o, *sink_);
  if (dev.ok()) {
    ublk_ = std::move(dev).value();
    co_return Status::Ok();
  }
  // No device to serve: a Primary nobody can reach would only collect marks.
  if (!was_primary) (void)device_->Demote(0);
  co_return Status::Error(dev.status().code(),
                          "the ublk device could not be set up, so this node stays Secondary: " +
                              dev.status().message());
}

asio::awaitable<Status> Resource::DemoteWithDevice() {
  if (ublk_ != nullptr) {
    if (ublk_changing_) co_return Status::Invalid("the ublk device is being changed; try again");
    if (stopping_) co_return Status::Invalid("the daemon is stopping");
    if (device_->role() != Role::kPrimary) co_return Status::Ok();
    if (ublk_->InUse()) {
      co_return Status::Invalid(ublk_->path() +
                                " is in use (mounted, or open by a process); unmount it first");
    }
    ChangingUblk changing(ublk_changing_);
    Status s = co_await ublk_->Remove();
    if (!s.ok()) co_return s;
    ublk_.reset();
  }
  if (detached()) co_return Status::Ok();  // Secondary already
  co_return device_->Demote(static_cast<uint32_t>(server_->connection_count()));
}

// At start: a /dev/ublkbN that a killed daemon of this resource left (quiesced, its requests
// waiting) is taken over if this node was Primary then, so that the file system on it carries
// on; otherwise it is deleted, so that its requests fail instead of waiting forever.
asio::awaitable<void> Resource::StartUblk() {
  const uint32_t id = EffectiveUblkDeviceId(config_, node_);
  auto found = co_await UblkDevice::FindLeftOver(id);
  if (!found.ok()) {
    // Served by a live process: not ours to take over or delete.
    spdlog::error("resource {}: {}", config_.name, found.status().message());
    co_return;
  }
  const bool left_over = found.value().has_value();
  if (!replicated_ || (left_over && device_->was_primary())) {
    if (left_over) {
      spdlog::info("resource {}: taking over /dev/ublkb{} from the previous daemon as Primary",
                   config_.name, id);
    }
    Status s = co_await PromoteWithDevice(false);
    if (s.ok()) co_return;
    spdlog::error("resource {}: {}", config_.name, s.message());
    if (!left_over || ublk_ != nullptr) co_return;
    // Nobody will serve it: its requests fail rather than wait forever.
    spdlog::error("resource {}: deleting /dev/ublkb{}: this node cannot serve it", config_.name,
                  id);
    s = co_await UblkDevice::DeleteLeftOver(id);
    if (!s.ok()) spdlog::error("resource {}: {}", config_.name, s.message());
    co_return;
  }
  if (left_over) {
    spdlog::warn(
        "resource {}: deleting /dev/ublkb{}, left by a daemon of a node that was not "
        "Primary",
        config_.name, id);
    Status s = co_await UblkDevice::DeleteLeftOver(id);
    if (!s.ok()) spdlog::error("resource {}: {}", config_.name, s.message());
  }
}

// `replctl events`: the objects as they are now ("exists"), then, when not asked for `now`, the
// connection stays open for the changes PublishEvents sends.
asio::awaitable<nlohmann::json> Resource::HandleControl(const nlohmann::json& request) {
  const std::string command = request.at("command").get<std::string>();
  if (command == "events") {
    PublishEvents();  // the connections already streaming get what changed before this
    event_objects_ = EventObjects(StatusJson());
    nlohmann::json events = nlohmann::json::array();
    for (auto& e : ExistsEvents(event_objects_, EventTimeNow())) events.push_back(std::move(e));
    co_return nlohmann::json{{"events", std::move(events)},
                             {"subscribe", !request.value("now", false)}};
  }
  nlohmann::json answer = co_await HandleCommand(request);
  if (command != "status") PublishEvents();
  co_return answer;
}

void Resource::PublishEvents() {
  if (control_ == nullptr || control_->subscriber_count() == 0) return;
  nlohmann::json objects = EventObjects(StatusJson());
  for (auto& e : ChangeEvents(event_objects_, objects, EventTimeNow())) {
    control_->Publish(ControlResponseLine(nlohmann::json{{"event", std::move(e)}}));
  }
  event_objects_ = std::move(objects);
}

asio::awaitable<nlohmann::json> Resource::HandleCommand(const nlohmann::json& request) {
  const std::string command = request.at("command").get<std::string>();
  auto fail = [](const std::string& message) {
    return nlohmann::json{{"ok", false}, {"error", message}};
  };
  if (command == "status") co_return nlohmann::json{{"status", StatusJson()}};
  if (command == "adjust") co_return Adjust(request.value("dry_run", false));
  if (!replicated_) {
    co_return fail("resource " + config_.name + " has one node in " + config_.path +
                   ": it is not replicated, and has no roles to change");
  }
  if (detaching_) co_return fail("the disk is being detached; try again in a moment");
  if (attaching_) {
    co_return fail("a disk is being attached to this Primary; try again in a moment");
  }
  Status s = Status::Ok();
  std::string message;
  if (command == "detach") {
    s = co_await Detach(message);
  } else if (command == "attach" && device_ != nullptr && device_->diskless_primary()) {
    s = co_await AttachToPrimary(message);
  } else if (command == "attach") {
    s = Attach(message);
  } else if (detached() && command == "secondary") {
    message = "already Secondary (Diskless)";
  } else if (detached() && command != "primary") {
    co_return fail("this node has no disk (Diskless, detached): 'replctl attach " + config_.name +
                   "' first");
  } else if (command == "primary") {
    s = co_await PromoteWithDevice(request.value("force", false));
  } else if (command == "secondary") {
    s = co_await DemoteWithDevice();
  } else if (command == "connect") {
    s = device_->Connect(request.value("discard_my_data", false), message);
  } else if (command == "disconnect") {
    s = device_->Disconnect(message);
  } else if (command == "pause-sync" || command == "resume-sync") {
    const bool pause = command == "pause-sync";
    s = device_->PauseResync(pause);
    message = pause ? "resync paused: this node sends no resync block until 'replctl resume-sync'"
                    : "resync resumed";
  } else if (command == "verify") {
    s = device_->StartVerify();
    message = "online verify started: 'replctl status' shows its progress and what it found";
  } else if (command == "invalidate" || command == "invalidate-remote") {
    const bool remote = command == "invalidate-remote";
    s = device_->Invalidate(remote);
    message = remote ? "the peer's data no longer counts: reconnecting for a full sync to it"
                     : "this node's data no longer counts: reconnecting for a full sync from "
                       "the peer";
  } else {
    co_return fail("unknown command '" + command + "'");
  }
  if (!s.ok()) co_return fail(s.message());
  nlohmann::json answer = {{"status", StatusJson()}};
  if (!message.empty()) answer["message"] = message;
  co_return answer;
}

Status Resource::Start() {
  const std::filesystem::path socket_dir = std::filesystem::path(nbd_.socket).parent_path();
  std::error_code ec;
  if (!socket_dir.empty()) std::filesystem::create_directories(socket_dir, ec);
  const bool ublk = config_.frontend == Frontend::kUblk;
  Status s = Status::Ok();
  if (!ublk) s = server_->ListenUnix(nbd_.socket);
  if (!s.ok()) return Status::Invalid(config_.path + ": key 'nbd.socket': " + s.message());
  if (!ublk && !nbd_.listen.empty()) {
    const auto hp = ParseHostPort(nbd_.listen);
    REPLD_CHECK(hp.has_value());  // validated with the configuration
    s = server_->ListenTcp(hp->host, hp->port);
    if (!s.ok()) return Status::Invalid(config_.path + ": key 'nbd.listen': " + s.message());
  }
  s = control_->Start();
  if (!s.ok()) return Status::Invalid("control socket: " + s.message());
  auto metrics = StartMetrics(config_, node_);
  if (!metrics.ok()) return metrics.status();
  metrics_ = std::move(metrics).value();
  if (device_ != nullptr) {
    s = device_->Start();
    if (!s.ok()) return Status::Invalid(config_.path + ": peer link: " + s.message());
  }
  if (ublk) {
    asio::co_spawn(io_, StartUblk(), asio::detached);
    spdlog::info("resource {}: node {} serves /dev/ublkb{} ({} bytes){}", config_.name, node_.name,
                 EffectiveUblkDeviceId(config_, node_), server_->exported().size_bytes,
                 !replicated_ ? ""
                              : " while Primary (it starts Secondary unless it takes over "
                                "the device of a killed daemon: replctl primary " +
                                    config_.name + ")");
    return Status::Ok();
  }
  server_->Start();
  spdlog::info("resource {}: node {} serving export '{}' ({} bytes) over NBD{}", config_.name,
               node_.name, server_->exported().name, server_->exported().size_bytes,
               !replicated_
                   ? ""
                   : " while Primary (it starts Secondary: replctl primary " + config_.name + ")");
  return Status::Ok();
}

asio::awaitable<bool> Resource::StopDevice(std::chrono::milliseconds max) {
  device_->StopLink();
  // Applies and flushes still on the disk finish first: the bitmap must see their outcome.
  // At least one pause: the link's cancelled timers and handlers run before anything goes.
  asio::steady_timer pause(io_);
  const auto deadline = std::chrono::steady_clock::now() + max;
  do {
    pause.expires_after(std::chrono::milliseconds(10));
    asio::error_code ec;
    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  } while (!device_->Idle() && std::chrono::steady_clock::now() < deadline);
  co_return device_->Idle();
}

Result<std::unique_ptr<MetricsServer>> Resource::StartMetrics(const ResourceConfig& config,
                                                              const NodeConfig& node) {
  const std::string listen = EffectiveMetricsListen(config, node);
  if (listen.empty()) return std::unique_ptr<MetricsServer>();
  auto server =
      std::make_unique<MetricsServer>(io_, listen, [this] { return FormatMetrics(StatusJson()); });
  if (Status s = server->Start(); !s.ok()) {
    return Status::Invalid(config.path + ": key '" +
                           (node.metrics_listen ? "node." + node.name + ".metrics_listen"
                                                : std::string("metrics.listen")) +
                           "': " + s.message());
  }
  return server;
}

void Resource::AbortClients() {
  // Writes waiting for a peer that does not answer complete once the peer is gone.
  if (device_ != nullptr) device_->StopLink();
  server_->AbortConnections();
}

asio::awaitable<Status> Resource::Stop(std::chrono::milliseconds drain_timeout) {
  asio::steady_timer watchdog(co_await asio::this_coro::executor);
  if (device_ != nullptr) {
    // A drain that outlasts its timeout may be waiting for the peer: stop the link, which
    // completes those writes as not confirmed (marked out of sync).
    watchdog.expires_after(drain_timeout);
    watchdog.async_wait([this](const asio::error_code& ec) {
      if (!ec && device_ != nullptr) device_->StopLink();
    });
  }
  stopping_ = true;
  co_await server_->Shutdown(drain_timeout);
  asio::steady_timer settle(co_await asio::this_coro::executor);
  while (ublk_changing_ || detaching_) {  // a device change or a detach finishes first
    settle.expires_after(std::chrono::milliseconds(10));
    asio::error_code ec;
    co_await settle.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  bool abandoned = false;
  if (ublk_ != nullptr) {
    // In use: the device stays, quiesced, for the next daemon (systemd restarts it); else it
    // goes, as on a demotion.
    if (ublk_->InUse()) {
      co_await ublk_->Abandon();
      abandoned = true;
    } else {
      Status removed = co_await ublk_->Remove();
      if (!removed.ok()) spdlog::error("resource {}: {}", config_.name, removed.message());
    }
    ublk_.reset();
  }
  watchdog.cancel();
  bool idle = true;
  if (device_ != nullptr) idle = co_await StopDevice(drain_timeout);
  Status s = store_ != nullptr ? store_->SyncNow() : Status::Ok();
  // Clean: after the data is durable. Not when the device was left to the next daemon: the
  // metadata keeps saying Primary, so that the next daemon takes the device over.
  if (device_ != nullptr && s.ok() && !abandoned) device_->Shutdown();
  control_->Stop();
  if (metrics_ != nullptr) metrics_->Stop();
  if (!idle) {
    // Disk I/O still in the ring: exit without closing it (the kernel reclaims it).
    co_return Status::Invalid("resource " + config_.name +
                              ": disk I/O still in flight after the drain timeout");
  }
  ring_->Close();
  if (s.ok()) spdlog::info("resource {}: stopped; backing disk synced", config_.name);
  co_return s;
}

}  // namespace repld
