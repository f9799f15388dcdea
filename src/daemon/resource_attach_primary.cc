// replctl attach on a diskless Primary: a Primary whose disk failed under on_io_error =
// "detach" serves through its UpToDate peer (replica_diskless.cc); attach gives it a disk again
// (the same one back, or a replacement with fresh metadata) without stopping its clients.
//
// The running device cannot take a disk: its disk and metadata are part of it. So the device is
// replaced, while the frontends' requests wait in the switch (sink_switch.h):
//  1. the new disk's metadata is checked, read-only, before anything changes;
//  2. the switch holds new requests, and the requests in flight finish through the peer;
//  3. the old device goes (the peer link drops; the peer, UpToDate, stays Secondary and keeps
//     everything: every write of a diskless Primary is on the peer before it completes), and
//     with it the failed disk's lock;
//  4. the new device opens the disk (the failed one back: as one that failed, Inconsistent and
//     marked whole; a replacement: with its fresh metadata), connects, and becomes the sync
//     target of a full resync from the peer;
//  5. it is promoted as any node is (the peer agrees; a resync target with an UpToDate peer is
//     Primary at once, reading the blocks not yet synced from the peer), and the held requests
//     go to it.
// The clients see a pause of about a reconnect. If the peer does not come back, or refuses
// the promotion (the operator promoted it meanwhile), the held requests fail with EIO, as they
// would have on a diskless Primary without its peer, and this node stays Secondary with its
// new disk.
#include <spdlog/spdlog.h>

#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "common/units.h"
#include "daemon/resource.h"

namespace repld {

namespace {
constexpr std::chrono::seconds kInFlightMax{60};
constexpr std::chrono::milliseconds kPoll{20};

// Ends a hold on every way out that did not release it already: the held requests fail.
struct HoldGuard {
  SinkSwitch& sink;
  bool& attaching;
  ~HoldGuard() {
    if (sink.holding()) sink.Release(nullptr);
    attaching = false;
  }
};
}  // namespace

asio::awaitable<bool> Resource::WaitUntil(std::function<bool()> done,
                                          std::chrono::milliseconds max) {
  asio::steady_timer pause(io_);
  const auto deadline = std::chrono::steady_clock::now() + max;
  while (!done() && !stopping_ && std::chrono::steady_clock::now() < deadline) {
    pause.expires_after(kPoll);
    asio::error_code ec;
    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return done() && !stopping_;
}

Result<Superblock> Resource::CheckDiskToAttach() const {
  const MdLocation where{node_.disk, EffectiveMetaDisk(config_, node_)};
  const std::string context = "cannot attach " + node_.disk + ": ";
  auto md = MdDevice::Open(where, MdOpenOptions{.writable = false, .lock = false});
  if (!md.ok()) return Status::Error(md.status().code(), context + md.status().message());
  auto probe = md.value()->Probe();
  if (!probe.ok()) return Status::Error(probe.status().code(), context + probe.status().message());
  if (probe->presence != MdPresence::kValid) {
    return Status::Invalid(context + "'" + md.value()->md_path() + "' has " +
                           (probe->presence == MdPresence::kNone
                                ? "no repld metadata"
                                : "damaged repld metadata (" + probe->detail + ")") +
                           "; for a new disk: replctl create-md " + config_.name);
  }
  auto contents = md.value()->Read();
  if (!contents.ok()) {
    return Status::Invalid(context + contents.status().message() + " (replctl dump-md " +
                           config_.name + ")");
  }
  const Superblock& sb = contents->superblock;
  if (sb.resource_name != config_.name) {
    return Status::Invalid(context + "its metadata belongs to resource '" + sb.resource_name +
                           "', not '" + config_.name + "'");
  }
  const uint64_t exported = server_->exported().size_bytes;
  if (sb.layout.data_bytes != exported) {
    return Status::Invalid(context + "its data area is " + std::to_string(sb.layout.data_bytes) +
                           " bytes, and the resource exports " + std::to_string(exported) +
                           ": a disk of another size needs a restart of the daemon");
  }
  return sb;
}

asio::awaitable<Status> Resource::AttachToPrimary(std::string& message) {
  const ReplicaStatus before = device_->Report();
  if (before.conn != ConnState::kConnected || !before.peer ||
      before.peer->disk != DiskState::kUpToDate) {
    co_return Status::Invalid(
        "this Primary has no disk and no UpToDate peer connected: a new disk here would have "
        "nothing to resync from. Connect the peer first, or stop the clients and 'replctl "
        "secondary " +
        config_.name + "', 'replctl detach " + config_.name + "', 'replctl attach " +
        config_.name + "'");
  }
  auto checked = CheckDiskToAttach();
  if (!checked.ok()) co_return checked.status();
  // The failed disk back (its metadata, whatever it could record of the failure), or a new one
  // with fresh metadata (Inconsistent and new: a full sync all the same, and no failure to
  // report).
  const bool same_disk = checked->device_uuid == device_->device_uuid();

  attaching_ = true;
  switch_->Hold(FrontendRequestsMax());
  HoldGuard guard{*switch_, attaching_};
  PublishEvents();
  spdlog::info("resource {}: attaching {} to this diskless Primary: holding client requests "
               "until it is connected and Primary again",
               config_.name, node_.disk);
  if (!co_await WaitUntil([this] { return device_->Idle(); }, kInFlightMax)) {
    switch_->Release(device_.get());  // still the diskless Primary, serving as before
    co_return Status::Invalid(stopping_ ? std::string("the daemon is stopping")
                                        : "requests in flight did not finish through the peer in " +
                                              std::to_string(kInFlightMax.count()) +
                                              " s; nothing changed, try again");
  }

  // The old device and its failed disk go: the disk's lock with them. The link's cancelled
  // handlers run first (StopDevice pauses at least once); nothing is in flight any more.
  if (!co_await StopDevice(kInFlightMax)) {
    spdlog::error("resource {}: the diskless Primary's device did not go idle as its link "
                  "stopped; closing it anyway",
                  config_.name);
  }
  // The failure stays on record until a disk is attached (a later plain attach then takes the
  // disk as failed, should this one not open).
  disk_error_ = device_->disk_error();
  failed_disk_uuid_ = device_->device_uuid();
  device_.reset();
  store_.reset();
  // whatever its metadata says, the failed disk back is resynced whole
  if (Status s = OpenDisk(same_disk); !s.ok()) {
    spdlog::error("resource {}: {}; this node is no longer Primary, and the requests it held "
                  "fail",
                  config_.name, s.message());
    co_return Status::Error(s.code(), s.message() +
                                          "; this node is no longer Primary (it could not serve "
                                          "without a disk), and the client requests it held "
                                          "failed");
  }
  disk_error_.reset();
  failed_disk_uuid_.reset();

  // Connected, and the resync decided: the peer first sees the old link go.
  const auto connect_max = 2 * config_.net.connect_timeout + config_.net.reconnect_max;
  const bool synced = co_await WaitUntil(
      [this] {
        if (device_ == nullptr) return true;  // the new disk failed at once, and detached
        const ReplicaStatus st = device_->Report();
        return st.conn == ConnState::kStandAlone ||
               (st.conn == ConnState::kConnected && st.peer &&
                st.peer->disk == DiskState::kUpToDate &&
                (st.repl == ReplState::kSyncTarget || st.repl == ReplState::kEstablished));
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(connect_max));
  if (device_ == nullptr) {
    co_return Status::Invalid("attached " + node_.disk +
                              ", but it failed at once and was detached again (the log says "
                              "how); the client requests this node held failed");
  }
  if (!synced || device_->Report().conn == ConnState::kStandAlone) {
    co_return Status::Invalid(
        "attached " + node_.disk + ", but the peer did not connect as an UpToDate sync source" +
        (device_->link_error().empty() ? std::string() : " (" + device_->link_error() + ")") +
        "; this node is Secondary now, and the client requests it held failed. 'replctl "
        "status' shows the link; 'replctl primary " +
        config_.name + "' once the peer is connected");
  }
  Status promoted = co_await device_->Promote(false);
  if (!promoted.ok()) {
    co_return Status::Invalid("attached " + node_.disk + ", but the promotion failed: " +
                              promoted.message() +
                              "; this node is Secondary now, and the client requests it held "
                              "failed");
  }
  const size_t held = switch_->held();
  switch_->Release(device_.get());
  const ReplicaStatus st = device_->Report();
  spdlog::info("resource {}: disk {} attached; Primary again ({}, {} to resync from the peer), "
               "{} held requests go on",
               config_.name, node_.disk, DiskStateName(st.disk),
               FormatSizeBytes(st.out_of_sync_bytes), held);
  message = "attached " + node_.disk + " to this Primary (" + DiskStateName(st.disk) +
            "): a full resync from the peer runs; until it ends, blocks not yet synced are read "
            "from the peer";
  co_return Status::Ok();
}

}  // namespace repld
