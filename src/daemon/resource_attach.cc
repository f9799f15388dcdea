// replctl detach / attach: a Secondary lets go of its backing disk and takes one again.
//
// Detach: the peer link drops (the peer hears why; a Primary there keeps serving and records in
// its bitmap every write this node misses, as for any disconnect), the disk's I/O finishes, the
// bitmap and a clean superblock are written, and the disk and its metadata are closed: the node
// is Diskless, StandAlone, and its disk free for replctl create-md, a disk check, or a swap.
// Attach: the disk is opened and its metadata read as at start, and the link starts again; the
// connect decides the resync as after a restart (a bitmap resync for the same disk, a full sync
// for a replacement with fresh metadata). The operator cannot detach a Primary; a Primary whose
// disk failed under on_io_error = detach is diskless already (the replica serves through its
// peer: replica_diskless.cc), and attach on it is resource_attach_primary.cc's.
#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>

#include "common/units.h"
#include "daemon/resource.h"

namespace repld {

namespace {
constexpr std::chrono::seconds kDetachDrainMax{60};
}  // namespace

ReplicaStatus Resource::DetachedReport() const {
  ReplicaStatus r{};
  r.role = Role::kSecondary;
  r.disk = DiskState::kDiskless;
  r.conn = ConnState::kStandAlone;
  r.repl = ReplState::kOff;
  r.protocol = config_.protocol;
  return r;
}

void Resource::WireDevice(ReplicatedDevice& device) {
  device.set_on_state_change([this] { PublishEvents(); });
  device.set_on_detach_needed([this](const std::string& why) {
    // Out of the device's work: the detach waits for its I/O.
    asio::post(io_, [this, why] { asio::co_spawn(io_, DetachFailedDisk(why), asio::detached); });
  });
}

asio::awaitable<void> Resource::DetachFailedDisk(std::string why) {
  if (detached() || detaching_ || stopping_ || device_ == nullptr) co_return;
  std::string message;
  Status s = co_await Detach(message, why);
  if (!s.ok()) {
    spdlog::error("resource {}: detaching the failed disk {}: {}", config_.name, node_.disk,
                  s.message());
  }
  PublishEvents();
}

asio::awaitable<void> Resource::ReleaseFailedDisk() {
  if (device_->disk_released()) co_return;
  // The requests on the disk when it failed finish first (their errors are on their way).
  const bool idle = co_await WaitUntil(
      [this] { return store_ == nullptr || store_->in_flight() == 0; }, kDetachDrainMax);
  if (!idle || device_ == nullptr || !device_->diskless_primary() || device_->disk_released() ||
      store_ == nullptr) {
    if (!idle && !stopping_) {
      spdlog::error("resource {}: the failed disk {} did not finish its requests in {} s; it "
                    "stays open until the daemon stops",
                    config_.name, node_.disk, kDetachDrainMax.count());
    }
    co_return;
  }
  device_->ReleaseDisk();
  store_.reset();
  spdlog::warn("resource {}: released the failed disk {} (and its metadata): replace or repair "
               "it ('replctl create-md {}' for a new one), then 'replctl attach {}' gives this "
               "Primary a disk again without stopping its clients",
               config_.name, node_.disk, config_.name, config_.name);
}

asio::awaitable<Status> Resource::Detach(std::string& message, std::string why) {
  if (detached()) {
    message = "already Diskless: the disk is detached";
    co_return Status::Ok();
  }
  if (stopping_) co_return Status::Invalid("the daemon is stopping");
  if (device_->diskless_primary()) {
    co_await ReleaseFailedDisk();
    message = "already Diskless: this Primary's disk failed and it serves through its peer";
    co_return Status::Ok();
  }
  if (device_->role() == Role::kPrimary) {
    co_return Status::Invalid(
        "this node is Primary: repld has no diskless Primary (it would serve every read and "
        "write over the network); 'replctl secondary " +
        config_.name + "' first, after moving the service to the peer");
  }
  detaching_ = true;
  const bool failed = !why.empty();
  if (!failed) why = "node " + node_.name + " detaches its disk (replctl detach)";
  device_->DisconnectFor(why);
  if (!co_await StopDevice(kDetachDrainMax)) {
    detaching_ = false;
    co_return Status::Invalid("the disk did not finish its I/O in " +
                              std::to_string(kDetachDrainMax.count()) +
                              " s; it stays attached, without its peer: restart the daemon "
                              "(replctl down, up)");
  }
  Status synced = store_->SyncNow();
  if (synced.ok()) device_->Shutdown();  // the bitmap, and a clean superblock
  // A failure of the disk stays in the status, and in the refusal of a promotion, until attach
  // (also when the operator detached it before on_io_error's detach ran).
  disk_error_ = device_->disk_error();
  failed_disk_uuid_ = device_->device_uuid();
  switch_->set(nullptr);
  device_.reset();
  store_.reset();
  detaching_ = false;
  spdlog::warn("resource {}: disk {} detached{}: this node is Diskless until 'replctl attach {}'",
               config_.name, node_.disk, failed ? " after it failed an I/O" : "", config_.name);
  if (!synced.ok()) {
    co_return Status::Error(synced.code(), "detached, but syncing the disk failed first (" +
                                               synced.message() +
                                               "); its metadata was not marked clean");
  }
  message = "detached " + node_.disk + ": this node is Diskless and StandAlone; the peer " +
            "records what it misses; 'replctl attach " + config_.name + "' takes the disk again";
  co_return Status::Ok();
}

Status Resource::OpenDisk(bool disk_failed_before) {
  const std::string context = "cannot attach " + node_.disk + ": ";
  auto store = BackingStore::Open(node_.disk, config_.direct_io, *ring_);
  if (!store.ok()) return Status::Error(store.status().code(), context + store.status().message());
  ReplicatedDevice::Options options = device_options_;
  options.disk_failed_before = disk_failed_before;
  auto device = ReplicatedDevice::Open(io_, config_, node_, *store.value(), options);
  if (!device.ok()) {
    return Status::Error(device.status().code(), context + device.status().message());
  }
  const uint64_t exported = server_->exported().size_bytes;
  if (device.value()->data_bytes() != exported) {
    return Status::Invalid(context + "its data area is " +
                           std::to_string(device.value()->data_bytes()) +
                           " bytes, and the resource exports " + std::to_string(exported) +
                           ": a disk of another size needs a restart of the daemon (replctl "
                           "down, up)");
  }
  WireDevice(*device.value());
  if (Status s = device.value()->Start(); !s.ok()) return Status::Invalid(context + s.message());
  store_ = std::move(store).value();
  device_ = std::move(device).value();
  return Status::Ok();
}

Status Resource::Attach(std::string& message) {
  if (!detached()) {
    message = "already attached: " + node_.disk;
    return Status::Ok();
  }
  if (stopping_) return Status::Invalid("the daemon is stopping");
  // The disk that failed, back: resynced whole whatever its metadata says (it may not have
  // recorded the failure). A replacement (other metadata) is what its metadata says: new
  // metadata is Inconsistent and resynced whole anyway, without the old disk's error shown.
  bool failed_before = disk_error_.has_value();
  if (failed_before && failed_disk_uuid_) {
    const Result<Superblock> checked = CheckDiskToAttach();
    if (checked.ok() && checked->device_uuid != *failed_disk_uuid_) failed_before = false;
  }
  if (Status s = OpenDisk(failed_before); !s.ok()) return s;
  disk_error_.reset();  // a new record, if the disk (its metadata) still names a failure
  failed_disk_uuid_.reset();
  switch_->set(device_.get());
  const ReplicaStatus st = device_->Report();
  spdlog::info("resource {}: disk {} attached ({}, {} out of sync)", config_.name, node_.disk,
               DiskStateName(st.disk), FormatSizeBytes(st.out_of_sync_bytes));
  message = "attached " + node_.disk + " (" + DiskStateName(st.disk) +
            "); connecting to the peer, which decides the resync";
  return Status::Ok();
}

}  // namespace repld
