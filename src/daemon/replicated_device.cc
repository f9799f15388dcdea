#include "daemon/replicated_device.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/post.hpp>
#include <cerrno>
#include <cstring>

#include "common/check.h"
#include "common/units.h"
#include "daemon/event_feed.h"
#include "replication/block_digest.h"
#include "replication/md_state.h"
#include "replication/peer_auth.h"

namespace repld {

ReplicatedDevice::ReplicatedDevice(asio::io_context& io, const ResourceConfig& config,
                                   const NodeConfig& node, DiskSink& store, Options options)
    : io_(io), config_(config), node_(node), store_(&store), options_(options), tick_(io) {}

ReplicatedDevice::~ReplicatedDevice() {
  for (auto& [key, work] : csum_work_) std::free(work.buffer);
  for (auto& [key, read] : peer_reads_) std::free(read.data);
  std::free(al_buffer_);
}

Result<std::unique_ptr<ReplicatedDevice>> ReplicatedDevice::Open(asio::io_context& io,
                                                                 const ResourceConfig& config,
                                                                 const NodeConfig& node,
                                                                 DiskSink& store,
                                                                 Options options) {
  std::unique_ptr<ReplicatedDevice> d(new ReplicatedDevice(io, config, node, store, options));
  if (Status s = d->Load(); !s.ok()) return s;
  return d;
}

Status ReplicatedDevice::Load() {
  const MdLocation where{node_.disk, EffectiveMetaDisk(config_, node_)};
  if (options_.open_metadata) {
    auto md = options_.open_metadata(where);
    if (!md.ok()) return md.status();
    md_ = std::move(md).value();
  } else {
    auto md = MdDevice::Open(where, MdOpenOptions{.writable = true, .lock = false});
    if (!md.ok()) return md.status();
    md_ = std::move(md).value();
  }
  auto probe = md_->Probe();
  if (!probe.ok()) return probe.status();
  if (probe->presence == MdPresence::kNone) {
    return Status::Invalid("no repld metadata on '" + md_->md_path() + "' (node " + node_.name +
                           "); create it first: replctl create-md " + config_.name);
  }
  auto contents = md_->Read();
  if (!contents.ok()) {
    return Status::Invalid(contents.status().message() +
                           "; the metadata is damaged: see docs/metadata.md (replctl dump-md " +
                           config_.name + ")");
  }
  for (const std::string& w : contents->al_warnings) spdlog::warn("activity log: {}", w);
  superblock_ = contents->superblock;
  degraded_at_start_ = superblock_.bitmap_uuid != 0 || (superblock_.flags & kMdPeerOutdated) != 0;
  if (superblock_.resource_name != config_.name) {
    return Status::Invalid("the metadata on '" + md_->md_path() + "' belongs to resource '" +
                           superblock_.resource_name + "', not '" + config_.name +
                           "'; check node." + node_.name + ".disk");
  }
  if (superblock_.al_extents != config_.meta.al_extents) {
    spdlog::warn(
        "disk.al_extents is {} but the metadata was created with {}; using {} (run "
        "create-md again to change it)",
        config_.meta.al_extents, superblock_.al_extents, superblock_.al_extents);
  }
  // Every request must fit in the activity log with room to spare: half of it for a data write
  // at most (trims and write-zeroes go in parts of this size).
  const uint64_t al_slots = superblock_.al_extents;
  const uint64_t write_extents = config_.nbd.request_bytes_max / kAlExtentBytes + 1;
  if (al_slots < 2 * write_extents) {
    return Status::Invalid(
        "the activity log on '" + md_->md_path() + "' has " + std::to_string(al_slots) +
        " extents; nbd.request_bytes_max = " + std::to_string(config_.nbd.request_bytes_max) +
        " needs at least " + std::to_string(2 * write_extents) +
        ": raise disk.al_extents and run create-md again, or lower "
        "nbd.request_bytes_max");
  }
  part_bytes_max_ = (al_slots / 2 - 1) * kAlExtentBytes;
  if (superblock_.layout.internal) {
    al_buffer_ = static_cast<uint8_t*>(
        std::aligned_alloc(BufferPool::kAlignBytes, superblock_.layout.al_slot_bytes));
    REPLD_CHECK(al_buffer_ != nullptr);
  }
  data_bytes_ = superblock_.layout.data_bytes;
  if (data_bytes_ > store_->info().size_bytes) {
    return Status::Invalid("the metadata on '" + md_->md_path() + "' describes " +
                           std::to_string(data_bytes_) + " data bytes but the disk has only " +
                           std::to_string(store_->info().size_bytes) + "; the disk shrank?");
  }

  const auto peer = PeerOf(config_, node_);
  REPLD_CHECK(peer.has_value());
  uint64_t seed = options_.core_seed;
  if (seed == 0) {
    if (Status s = peer::RandomBytes(std::span(reinterpret_cast<uint8_t*>(&seed), sizeof seed));
        !s.ok()) {
      return s;
    }
  }
  ReplicaOptions ro;
  ro.node_name = node_.name;
  ro.peer_name = peer->name;
  ro.data_bytes = data_bytes_;
  ro.protocol = config_.protocol;
  ro.max_buffers = config_.net.max_buffers;
  ro.resync_block_bytes = resync_block_bytes_;
  if (options_.resync_window != 0) ro.resync_window = options_.resync_window;
  ro.resync_rate_bytes = config_.resync.rate_bytes;
  ro.rate_slices_per_tick = kRateSlicesPerTick;
  ro.split_brain = config_.net.split_brain;
  ro.resync_checksums = config_.resync.checksums;
  ro.csums_window = peer::kCsumsInFlightMax;
  ro.controller = config_.resync.controller;
  ro.out_of_sync_runs_max = peer::kOutOfSyncRunsMax;
  ro.seed = seed;
  ro.on_io_error = config_.on_io_error;
  MdState md = MdStateFromSuperblock(superblock_);
  if (options_.disk_failed_before && !md.io_error) {
    spdlog::warn(
        "resource {}: the disk failed before it was detached and its metadata does not record "
        "it (that write failed too): it is Inconsistent until a full resync from the peer",
        config_.name);
    md.io_error = true;
  }
  replica_ = std::make_unique<Replica>(ro, md,
                                       ActivityLog(contents->al.table, contents->al.seq),
                                       std::move(contents->bitmap));

  slots_.resize(options_.requests_max);
  for (uint32_t i = options_.requests_max; i-- > 0;) free_slots_.push_back(i);
  const size_t iov_max = BufferPool::ChunksFor(config_.nbd.request_bytes_max) + 1;
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    ClientSlot& s = slots_[i];
    s.device = this;
    s.index = i;
    s.local_iov.reserve(iov_max);
    s.local.context = &s;
    s.local.done = &ReplicatedDevice::OnLocalDone;
  }
  receive_pool_ = std::make_unique<BufferPool>(io_.get_executor(), options_.receive_pool_bytes);

  auto& handler = static_cast<PeerLinkHandler&>(*this);
  if (options_.make_peer_port) {
    link_ = options_.make_peer_port(LinkConfig(), handler, *receive_pool_);
  } else {
    link_ = std::make_unique<PeerLink>(io_, LinkConfig(), handler, *receive_pool_);
  }
  const ReplicaStatus st = replica_->Report();
  spdlog::info("resource {}: metadata on {}: disk {}, {} out of sync, generation {:016X}",
               config_.name, md_->md_path(), DiskStateName(st.disk),
               FormatSizeBytes(st.out_of_sync_bytes), st.ids.current);
  Drain();  // the core may have marked a crashed Primary's activity log
  return Status::Ok();
}

// A command that changes the metadata: refused while stopping or after a metadata write failed
// (the disk's state is unknown), and reported if its own metadata write fails.
Status ReplicatedDevice::ChangeMd(const std::function<Status()>& change,
                                  const std::string& done_but_failed) {
  if (stopped_ || link_stopped_) return Status::Invalid("the daemon is stopping");
  if (md_failed_) {
    return Status::Invalid(
        "a metadata write failed earlier (see the log); fix the disk and restart the daemon");
  }
  Status s = change();
  Drain();
  if (s.ok() && md_failed_) return Status::Invalid(done_but_failed);
  return s;
}

Status ReplicatedDevice::Demote(uint32_t open_clients) {
  if (stopped_ || link_stopped_) return Status::Invalid("the daemon is stopping");
  Status s = replica_->Demote(open_clients);
  Drain();
  return s;
}

Status ReplicatedDevice::Connect(bool discard_my_data, std::string& message) {
  if (stopped_ || link_stopped_) return Status::Invalid("the daemon is stopping");
  Result<bool> left_standalone = replica_->Connect(discard_my_data);
  Drain();
  if (!left_standalone.ok()) return left_standalone.status();
  if (!left_standalone.value()) {
    message = "not StandAlone: the link is already connected or trying to connect";
    return Status::Ok();
  }
  Status s = link_->Start();
  Drain();
  if (!s.ok()) {
    replica_->Disconnect("the link could not start: " + s.message());
    Drain();
    return s;
  }
  message = discard_my_data ? "connecting to the peer; a split brain there discards this "
                              "node's changes"
                            : "connecting to the peer";
  return Status::Ok();
}

Status ReplicatedDevice::Disconnect(std::string& message) {
  if (stopped_ || link_stopped_) return Status::Invalid("the daemon is stopping");
  if (replica_->conn() == ConnState::kStandAlone) {
    message = "already StandAlone";
    return Status::Ok();
  }
  replica_->Disconnect("disconnected by the operator (replctl disconnect)");
  Drain();
  message = "disconnected; StandAlone until 'replctl connect'";
  return Status::Ok();
}

void ReplicatedDevice::DisconnectFor(const std::string& why) {
  replica_->Disconnect(why);
  Drain();
}

Status ReplicatedDevice::Invalidate(bool remote) {
  return ChangeMd([&] { return remote ? replica_->InvalidateRemote() : replica_->Invalidate(); },
                  "writing the metadata failed (see the log); nothing was started");
}

PeerLinkConfig ReplicatedDevice::LinkConfig() const {
  const auto peer = PeerOf(config_, node_);
  REPLD_CHECK(peer.has_value());
  PeerLinkConfig lc;
  lc.resource = config_.name;
  lc.node = node_.name;
  lc.peer_node = peer->name;
  lc.address = node_.address.value_or("");
  lc.peer_address = peer->address.value_or("");
  lc.secret = config_.net.secret;
  lc.protocol = config_.protocol;
  lc.data_bytes = data_bytes_;
  lc.ping_interval = config_.net.ping_interval;
  lc.ping_timeout = config_.net.ping_timeout;
  lc.ko_count = config_.net.ko_count;
  lc.connect_timeout = config_.net.connect_timeout;
  lc.reconnect_max = config_.net.reconnect_max;
  return lc;
}

void ReplicatedDevice::Retune(const ResourceConfig& live) {
  config_.net = live.net;
  config_.resync = live.resync;
  config_.startup = live.startup;
  config_.on_io_error = live.on_io_error;
  replica_->SetOnIoError(config_.on_io_error);
  replica_->SetResyncTunables(config_.resync.rate_bytes, config_.resync.controller,
                              config_.resync.checksums);
  replica_->SetSplitBrainPolicy(config_.net.split_brain);
  link_->Retune(LinkConfig());
  Drain();
}

Status ReplicatedDevice::PauseResync(bool pause) {
  if (stopped_ || link_stopped_) return Status::Invalid("the daemon is stopping");
  Status s = replica_->PauseResync(pause);
  Drain();
  return s;
}

Status ReplicatedDevice::StartVerify() {
  if (stopped_ || link_stopped_) return Status::Invalid("the daemon is stopping");
  Status s = replica_->StartVerify();
  Drain();
  return s;
}

Status ReplicatedDevice::Start() {
  if (Status s = link_->Start(); !s.ok()) return s;
  if (!options_.timer) return Status::Ok();
  tick_.expires_after(std::chrono::seconds(0));
  StartTick();
  return Status::Ok();
}

void ReplicatedDevice::RateSlice() {
  replica_->RateSlice();
  Drain();
}

void ReplicatedDevice::Tick() {
  replica_->Tick();
  Drain();
  const ReplicaStatus st = replica_->Report();
  if (st.repl == ReplState::kSyncSource || st.repl == ReplState::kSyncTarget) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    progress_.Sample(std::chrono::duration<double>(now).count(), st.resync_done_bytes,
                     st.resync_total_bytes);
  } else {
    progress_.Reset();
  }
}

// Every 100 ms the resync gets a slice of its rate's budget; every tenth time the core's Tick
// (its one-second work) brings it. Timed from the last expiry, so the seconds do not drift.
void ReplicatedDevice::StartTick() {
  const auto slice =
      std::chrono::duration_cast<asio::steady_timer::duration>(std::chrono::seconds(1)) /
      kRateSlicesPerTick;
  const auto now = asio::steady_timer::clock_type::now();
  // After a stall of the loop, start again from now rather than catching up in a burst.
  tick_.expires_at(std::max(tick_.expiry() + slice, now - std::chrono::seconds(1)));
  tick_.async_wait([this](const asio::error_code& ec) {
    if (ec || stopped_) return;
    if (++slices_ < kRateSlicesPerTick) {
      RateSlice();
    } else {
      slices_ = 0;
      Tick();
    }
    StartTick();
  });
}

std::string ReplicatedDevice::link_error() const { return link_->last_error(); }

bool ReplicatedDevice::Idle() const {
  return free_slots_.size() == slots_.size() && free_aux_.size() == aux_.size() &&
         received_.empty();
}

void ReplicatedDevice::StopLink() {
  if (link_stopped_) return;
  link_stopped_ = true;
  tick_.cancel();
  link_->Stop();  // OnDown: the core marks what the peer did not confirm
  Drain();
}

void ReplicatedDevice::ReleaseDisk() {
  REPLD_CHECK(diskless_primary() && !released_);
  auto released = std::make_unique<ReleasedDisk>(io_, store_->info(), md_->md_path());
  store_ = released.get();
  md_ = std::move(released);
  released_ = true;
}

void ReplicatedDevice::Shutdown() {
  if (stopped_) return;
  if (!Idle()) {
    // Leave the metadata as it is (Primary: the crash flag stays set, so the next start
    // resyncs the activity log's extents).
    spdlog::error(
        "resource {}: stopping with I/O still in flight; the metadata is not marked "
        "clean",
        config_.name);
    stopped_ = true;
    return;
  }
  replica_->Shutdown();
  Drain();
  stopped_ = true;
}

// --- Frontend requests ---

void ReplicatedDevice::Submit(DiskIo* io) {
  REPLD_CHECK(!free_slots_.empty());  // the frontends bound their requests by requests_max
  const uint32_t index = free_slots_.back();
  free_slots_.pop_back();
  ClientSlot& slot = slots_[index];
  slot.client = io;
  slot.part_offset_bytes = io->request.offset_bytes;
  slot.part_length_bytes = 0;
  in_submit_ = true;
  StartPart(slot);
  Drain();
  in_submit_ = false;
}

void ReplicatedDevice::StartPart(ClientSlot& slot) {
  // Bits 63 and 62 of a send cookie mark resync blocks and read replies (replicated_peer.cc).
  slot.generation = (slot.generation + 1) & 0x3FFFFFFFu;
  const RequestId id = IdOf(slot);
  slot.seq = 0;
  slot.sending = slot.completed = false;
  slot.error = 0;
  const BlockRequest& r = slot.client->request;
  const uint64_t end = r.offset_bytes + r.length_bytes;
  uint64_t length = end - slot.part_offset_bytes;
  if ((r.op == BlockOp::kTrim || r.op == BlockOp::kWriteZeroes) && length > part_bytes_max_) {
    // A trim may cover gigabytes: in parts the activity log can hold, ending on extent bounds.
    const uint64_t cut =
        (slot.part_offset_bytes + part_bytes_max_) / kAlExtentBytes * kAlExtentBytes;
    length = std::min(end, std::max(cut, slot.part_offset_bytes + kAlExtentBytes)) -
             slot.part_offset_bytes;
  }
  slot.part_length_bytes = length;
  const uint64_t offset = slot.part_offset_bytes;
  switch (r.op) {
    case BlockOp::kRead:
      replica_->ClientRead(id, offset, length);
      break;
    case BlockOp::kWrite:
      replica_->ClientWrite(id, offset, length, WriteKind::kData, r.fua);
      break;
    case BlockOp::kWriteZeroes:
      replica_->ClientWrite(id, offset, length, WriteKind::kZeroes, r.fua);
      break;
    case BlockOp::kTrim:
      replica_->ClientWrite(id, offset, length, WriteKind::kTrim, r.fua);
      break;
    case BlockOp::kFlush:
      replica_->ClientFlush(id);
      break;
  }
}

void ReplicatedDevice::OnLocalDone(DiskIo* io, int error) {
  auto* slot = static_cast<ClientSlot*>(io->context);
  ReplicatedDevice* self = slot->device;
  if (io->request.op == BlockOp::kRead) {
    self->replica_->LocalReadDone(IdOf(*slot), error);
  } else {
    self->replica_->LocalWriteDone(IdOf(*slot), error);
  }
  self->Drain();
}

ReplicatedDevice::ClientSlot& ReplicatedDevice::SlotOf(RequestId id) {
  ClientSlot& slot = slots_.at(id & 0xFFFFFFFFu);
  REPLD_CHECK(slot.generation == (id >> 32) && slot.client != nullptr);
  return slot;
}

void ReplicatedDevice::CompleteClient(RequestId id, int error) {
  ClientSlot& slot = SlotOf(id);
  REPLD_CHECK(!slot.completed);
  slot.completed = true;
  slot.error = error;
  if (!slot.sending) finished_.push_back(slot.index);
}

void ReplicatedDevice::AnswerFinished() {
  while (!finished_.empty()) {
    const uint32_t index = finished_.back();
    finished_.pop_back();
    ClientSlot& slot = slots_[index];
    DiskIo* client = slot.client;
    const int error = slot.error;
    const BlockRequest& r = client->request;
    if (error == 0 &&
        slot.part_offset_bytes + slot.part_length_bytes < r.offset_bytes + r.length_bytes) {
      slot.part_offset_bytes += slot.part_length_bytes;
      StartPart(slot);  // the next part of a split request
      Drain();
      continue;
    }
    slot.client = nullptr;
    free_slots_.push_back(index);
    client->done(client, error);
  }
}

// --- Actions ---

void ReplicatedDevice::Drain() {
  if (draining_) return;  // an event raised while executing: the loop below picks it up
  draining_ = true;
  for (;;) {
    replica_->TakeActions(drained_);
    if (drained_.empty()) break;
    for (Action& a : drained_) Execute(a);
  }
  draining_ = false;
  if (on_state_change_) {
    const Replica::StateKey key = replica_->state_key();
    if (key != state_key_) {
      state_key_ = key;
      on_state_change_();
    }
  }
  if (finished_.empty()) return;
  if (!in_submit_) {
    AnswerFinished();
  } else if (!answer_posted_) {
    // A frontend's done() must never run inside its own Submit().
    answer_posted_ = true;
    asio::post(io_, [this] {
      answer_posted_ = false;
      AnswerFinished();
    });
  }
}

void ReplicatedDevice::Execute(Action& action) {
  std::visit(
      [&](auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, SubmitWrite>) {
          ExecuteSubmit(a.id);
        } else if constexpr (std::is_same_v<T, SubmitRead>) {
          ExecuteSubmit(a.id);
        } else if constexpr (std::is_same_v<T, SubmitFlush>) {
          AuxIo& aux = TakeAux(AuxIo::Kind::kFlush, a.token);
          aux.io.request = BlockRequest{.op = BlockOp::kFlush};
          store_->Submit(&aux.io);
        } else if constexpr (std::is_same_v<T, SendData>) {
          ExecuteSendData(a);
        } else if constexpr (std::is_same_v<T, SendFlush>) {
          link_->SendFlush(a.seq);
        } else if constexpr (std::is_same_v<T, ApplyPeerWrite>) {
          ExecuteApply(a.key);
        } else if constexpr (std::is_same_v<T, SendAck>) {
          if (a.kind == AckKind::kReceived) link_->SendRecvAck(a.seq);
          if (a.kind == AckKind::kWritten) link_->SendWriteAck(a.seq, a.error);
          if (a.kind == AckKind::kFlushed) link_->SendFlushAck(a.seq, a.error);
        } else if constexpr (std::is_same_v<T, ResyncRead>) {
          ExecuteResyncRead(a);
        } else if constexpr (std::is_same_v<T, SendResync>) {
          ExecuteSendResync(a);
        } else if constexpr (std::is_same_v<T, repld::Complete>) {
          CompleteClient(a.id, a.error);
        } else if constexpr (std::is_same_v<T, WriteAl>) {
          ExecuteWriteAl(a);
        } else if constexpr (std::is_same_v<T, PersistMd>) {
          ExecutePersistMd(a.md);
        } else if constexpr (std::is_same_v<T, PersistBitmap>) {
          ExecutePersistBitmap();
        } else if constexpr (std::is_same_v<T, SyncDisk>) {
          if (Status s = store_->SyncNow(); !s.ok()) {
            spdlog::error("resource {}: {} failed: {}", config_.name, a.what, s.message());
            replica_->DiskSyncFailed(a.what, s.code() > 0 ? s.code() : EIO);
          }
        } else if constexpr (std::is_same_v<T, SendState>) {
          link_->SendState(a.state);
        } else if constexpr (std::is_same_v<T, SendOutOfSync>) {
          link_->SendOutOfSync(a.runs, a.last);
        } else if constexpr (std::is_same_v<T, SendCsums>) {
          ExecuteSendCsums(a);
        } else if constexpr (std::is_same_v<T, CompareCsums>) {
          ExecuteCompareCsums(a);
        } else if constexpr (std::is_same_v<T, SendCsumReply>) {
          link_->SendCsumReply(a.seq, a.differing, a.error);
        } else if constexpr (std::is_same_v<T, SendReadRequest>) {
          link_->SendReadRequest(a.seq, a.offset_bytes, static_cast<uint32_t>(a.length_bytes));
        } else if constexpr (std::is_same_v<T, ReadForPeer>) {
          ExecuteReadForPeer(a);
        } else if constexpr (std::is_same_v<T, SendReadReply>) {
          ExecuteSendReadReply(a);
        } else if constexpr (std::is_same_v<T, DropPeer>) {
          link_->Drop(a.reason, a.reconnect);
        } else if constexpr (std::is_same_v<T, SendPromoteRequest>) {
          link_->SendPromoteRequest(a.token);
        } else if constexpr (std::is_same_v<T, SendPromoteReply>) {
          link_->SendPromoteReply({.token = a.token, .granted = a.granted, .reason = a.reason});
        } else if constexpr (std::is_same_v<T, PromotionDone>) {
          promotion_done_ = std::move(a);
          if (promotion_wait_ != nullptr) promotion_wait_->cancel();
        } else if constexpr (std::is_same_v<T, DiskFailed>) {
          ExecuteDiskFailed(a);
        } else if constexpr (std::is_same_v<T, Log>) {
          if (a.level == 0) spdlog::info("resource {}: {}", config_.name, a.text);
          if (a.level == 1) spdlog::warn("resource {}: {}", config_.name, a.text);
          if (a.level >= 2) spdlog::error("resource {}: {}", config_.name, a.text);
        }
      },
      action);
}

void ReplicatedDevice::ExecuteSubmit(RequestId id) {
  ClientSlot& slot = SlotOf(id);
  slot.local.request = slot.client->request;
  slot.local.request.offset_bytes = slot.part_offset_bytes;
  slot.local.request.length_bytes = slot.part_length_bytes;
  slot.local_iov.assign(slot.client->iov, slot.client->iov + slot.client->iov_count);
  slot.local.iov = slot.local_iov.data();
  slot.local.iov_count = static_cast<unsigned>(slot.local_iov.size());
  store_->Submit(&slot.local);
}

void ReplicatedDevice::ExecuteSendData(const SendData& a) {
  ClientSlot& slot = SlotOf(a.id);
  const BlockRequest& r = slot.client->request;
  peer::Data head;
  head.seq = a.seq;
  head.offset_bytes = slot.part_offset_bytes;
  head.length_bytes = static_cast<uint32_t>(slot.part_length_bytes);
  head.flags = r.fua ? peer::kDataFlagFua : 0;
  std::span<const iovec> data;
  if (r.op == BlockOp::kWriteZeroes) {
    head.flags |= peer::kDataFlagZeroes;
  } else if (r.op == BlockOp::kTrim) {
    head.flags |= peer::kDataFlagTrim;
  } else {
    data = std::span<const iovec>(slot.client->iov, slot.client->iov_count);
  }
  slot.seq = a.seq;
  slot.sending = link_->SendData(head, data, a.id);
}

// The pending transaction's slot, written with FUA: durable before AlWritten.
void ReplicatedDevice::SubmitAlWrite() {
  const AlContext ctx = AlContextOf(superblock_);
  const AlTransaction t = *al_pending_;
  al_pending_.reset();
  const uint64_t slot = t.seq % ctx.al_slots;
  EncodeAlTransaction(t, ctx, std::span(al_buffer_, ctx.al_slot_bytes));
  AuxIo& aux = TakeAux(AuxIo::Kind::kAlWrite, t.seq);
  aux.iov.push_back(iovec{al_buffer_, static_cast<size_t>(ctx.al_slot_bytes)});
  aux.io.iov = aux.iov.data();
  aux.io.iov_count = 1;
  aux.io.request =
      BlockRequest{.op = BlockOp::kWrite,
                   .offset_bytes = superblock_.layout.al_offset + slot * ctx.al_slot_bytes,
                   .length_bytes = ctx.al_slot_bytes,
                   .fua = true};
  store_->Submit(&aux.io);
}

void ReplicatedDevice::ExecuteWriteAl(const WriteAl& a) {
  // The bitmap first: an extent leaving the log must have its out-of-sync bits on disk.
  Status s = WriteDirtyBitmap();
  if (s.ok() && al_buffer_ != nullptr) {
    // Through the ring, so the loop keeps serving hot-extent writes and the peer meanwhile.
    // A transaction that takes extents out of the log flushes the data first: the writes to
    // those extents must be durable before the log stops naming them.
    REPLD_CHECK(!al_pending_);
    al_pending_ = AlTransaction{a.plan.seq, a.plan.table};
    if (a.plan.evicted.empty()) return SubmitAlWrite();
    AuxIo& aux = TakeAux(AuxIo::Kind::kAlFlush, a.plan.seq);
    aux.io.request = BlockRequest{.op = BlockOp::kFlush};
    store_->Submit(&aux.io);
    return;
  }
  // External metadata: the log's fdatasync does not reach the data file, whose completed writes
  // must be durable before an extent with them leaves the log (the internal layout's FUA write
  // syncs the data file itself).
  if (s.ok() && !a.plan.evicted.empty()) s = store_->SyncNow();
  if (s.ok()) s = md_->WriteAlTransaction(AlTransaction{a.plan.seq, a.plan.table});
  if (!s.ok()) {
    spdlog::error("resource {}: activity log write failed: {}; the writes waiting for it fail",
                  config_.name, s.message());
  }
  if (!s.ok()) md_failed_ = true;
  replica_->AlWritten(a.plan.seq, s.ok() ? 0 : (s.code() > 0 ? s.code() : EIO));
}

void ReplicatedDevice::ExecutePersistMd(const MdState& md) {
  if (md_failed_ && !md.primary && !md.io_error) {
    // After a failed metadata write, never mark the disk clean: the next start must treat
    // this node as crashed and resync its activity log. (Recording the failure is another
    // matter: that makes the next start resync the whole disk.)
    spdlog::error(
        "resource {}: not writing a clean superblock after an earlier metadata "
        "write failed",
        config_.name);
    return;
  }
  const Superblock next = WithMdState(superblock_, md);
  if (next == superblock_) return;
  if ((superblock_.flags & kMdCrashedPrimary) != 0 && (next.flags & kMdCrashedPrimary) == 0) {
    // The flag that makes a crash resync the activity log goes only once every completed data
    // write is durable (the metadata may be on another device than the data).
    if (Status s = store_->SyncNow(); !s.ok()) {
      spdlog::error(
          "resource {}: flushing the data disk failed: {}; the superblock keeps saying this "
          "node was Primary, so a restart resyncs its activity log",
          config_.name, s.message());
      md_failed_ = true;
      replica_->MetadataWriteFailed("flushing the disk before marking it clean",
                                    s.code() > 0 ? s.code() : EIO);
      return;
    }
  }
  if (Status s = md_->WriteSuperblock(next); !s.ok()) {
    spdlog::error(
        "resource {}: writing the superblock failed: {}; the state on disk is stale "
        "until the next successful write",
        config_.name, s.message());
    md_failed_ = true;
    replica_->MetadataWriteFailed("writing the superblock", s.code() > 0 ? s.code() : EIO);
    return;
  }
  superblock_ = next;
}

void ReplicatedDevice::ExecuteDiskFailed(const DiskFailed& a) {
  // The first failure since the disk was attached or last repaired is the one status shows.
  const std::optional<DiskFailure> first = replica_->Report().disk_failure;
  const DiskFailure& f = first ? *first : a.failure;
  if (!disk_error_ || disk_error_->what != f.what || disk_error_->error != f.error) {
    disk_error_ = DiskErrorRecord{f.what, f.error, a.detach ? "detach" : "pass_on", EventTimeNow()};
  }
  if (a.primary) {
    // The replica went Diskless and serves through the peer: this device and its link stay.
    // The disk gets no more I/O from it (what was in flight finishes) and no metadata write.
    spdlog::error(
        "resource {}: the disk {} failed {} (error {}: {}); on_io_error = detach: this Primary "
        "is Diskless and serves through its peer while an UpToDate one is connected; replace "
        "the disk and run 'replctl attach {}'",
        config_.name, node_.disk, a.failure.what, a.failure.error, ErrnoText(a.failure.error),
        config_.name);
    if (on_detach_needed_ && !released_) on_detach_needed_("");  // the owner releases the disk
    return;
  }
  if (!a.detach || !on_detach_needed_) return;
  const std::string why = "node '" + node_.name + "': the disk failed " + a.failure.what +
                          " (error " + std::to_string(a.failure.error) + ": " +
                          ErrnoText(a.failure.error) + "); on_io_error = detach: it detaches";
  on_detach_needed_(why);
}

std::optional<DiskErrorRecord> ReplicatedDevice::disk_error() const {
  const ReplicaStatus st = replica_->Report();
  if (!st.disk_failure) return std::nullopt;  // none, or repaired by a resync
  if (disk_error_) return disk_error_;
  return DiskErrorRecord{st.disk_failure->what, st.disk_failure->error,
                         OnIoErrorName(config_.on_io_error), ""};
}

void ReplicatedDevice::ExecutePersistBitmap() {
  if (Status s = WriteDirtyBitmap(); !s.ok()) {
    spdlog::error("resource {}: writing the bitmap failed: {}", config_.name, s.message());
    md_failed_ = true;
    replica_->MetadataWriteFailed("writing the bitmap", s.code() > 0 ? s.code() : EIO);
  }
}

Status ReplicatedDevice::WriteDirtyBitmap() {
  Bitmap& bitmap = replica_->bitmap();
  const std::vector<uint64_t> pages = bitmap.DirtyPages();
  if (pages.empty()) return Status::Ok();
  Status s = md_->WriteBitmapPages(bitmap, pages);
  if (s.ok()) bitmap.ClearDirty();
  return s;
}

// --- Auxiliary I/O: applies, flushes, resync reads ---

ReplicatedDevice::AuxIo& ReplicatedDevice::TakeAux(AuxIo::Kind kind, uint64_t key) {
  if (free_aux_.empty()) {
    AuxIo& fresh = aux_.emplace_back();
    fresh.device = this;
    fresh.io.context = &fresh;
    fresh.io.done = &ReplicatedDevice::OnAuxDone;
    free_aux_.push_back(&fresh);
  }
  AuxIo* aux = free_aux_.back();
  free_aux_.pop_back();
  aux->kind = kind;
  aux->key = key;
  aux->iov.clear();
  aux->io.iov = nullptr;
  aux->io.iov_count = 0;
  return *aux;
}

void ReplicatedDevice::SubmitAuxRead(AuxIo::Kind kind, uint64_t key, iovec into,
                                     uint64_t offset_bytes, uint64_t length_bytes) {
  AuxIo& aux = TakeAux(kind, key);
  aux.iov.push_back(into);
  aux.io.iov = aux.iov.data();
  aux.io.iov_count = 1;
  aux.io.request = BlockRequest{
      .op = BlockOp::kRead, .offset_bytes = offset_bytes, .length_bytes = length_bytes};
  store_->Submit(&aux.io);
}

void ReplicatedDevice::OnAuxDone(DiskIo* io, int error) {
  auto* aux = static_cast<AuxIo*>(io->context);
  ReplicatedDevice* self = aux->device;
  const uint64_t key = aux->key;
  const AuxIo::Kind kind = aux->kind;
  self->free_aux_.push_back(aux);
  switch (kind) {
    case AuxIo::Kind::kApply: {
      auto it = self->received_.find(key);
      REPLD_CHECK(it != self->received_.end());
      self->receive_pool_->Release(it->second.chunks);
      self->received_.erase(it);
      self->replica_->ApplyDone(key, error);
      break;
    }
    case AuxIo::Kind::kFlush:
      self->replica_->LocalFlushDone(key, error);
      break;
    case AuxIo::Kind::kResyncRead:
      if (ResyncBuffer* b = self->FindResyncBuffer(key); error == 0 && b->want_digests) {
        b->digests.clear();
        AppendBlockDigests(std::span<const uint8_t>(b->data, b->iov.iov_len), self->digest_kind_,
                           b->digests);
      }
      self->replica_->ResyncReadDone(key, error);
      break;
    case AuxIo::Kind::kCsumRead:
      self->FinishCompareCsums(key, error);
      break;
    case AuxIo::Kind::kPeerRead:
      self->replica_->ReadForPeerDone(key, error);
      break;
    case AuxIo::Kind::kAlFlush:
      if (error == 0) {
        self->SubmitAlWrite();
        break;
      }
      self->al_pending_.reset();
      [[fallthrough]];
    case AuxIo::Kind::kAlWrite:
      if (error != 0) {
        spdlog::error(
            "resource {}: activity log write failed: {}; the writes waiting for it "
            "fail",
            self->config_.name, ErrnoText(error));
        self->md_failed_ = true;
      }
      self->replica_->AlWritten(key, error);
      break;
  }
  self->Drain();
  if (kind == AuxIo::Kind::kResyncRead) {
    // Not sent (the peer left, or the read failed): the buffer is free again.
    if (ResyncBuffer* b = self->FindResyncBuffer(key); b != nullptr && !b->sending) {
      b->in_use = false;
    }
  }
}

void ReplicatedDevice::ExecuteApply(uint64_t key) {
  auto it = received_.find(key);
  REPLD_CHECK(it != received_.end());
  const peer::Data& head = it->second.head;
  AuxIo& aux = TakeAux(AuxIo::Kind::kApply, key);
  BlockRequest r;
  r.offset_bytes = head.offset_bytes;
  r.length_bytes = head.length_bytes;
  r.fua = (head.flags & peer::kDataFlagFua) != 0;
  r.may_punch = false;  // the Primary may have kept the range allocated (NBD's NO_HOLE)
  if ((head.flags & peer::kDataFlagZeroes) != 0) {
    r.op = BlockOp::kWriteZeroes;
  } else if ((head.flags & peer::kDataFlagTrim) != 0) {
    r.op = BlockOp::kTrim;
  } else {
    r.op = BlockOp::kWrite;
    uint64_t left = head.length_bytes;
    for (uint8_t* chunk : it->second.chunks) {
      const uint64_t n = std::min<uint64_t>(left, BufferPool::kChunkBytes);
      aux.iov.push_back(iovec{chunk, static_cast<size_t>(n)});
      left -= n;
    }
    aux.io.iov = aux.iov.data();
    aux.io.iov_count = static_cast<unsigned>(aux.iov.size());
  }
  aux.io.request = r;
  store_->Submit(&aux.io);
}

}  // namespace repld
