#include "sim_world.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>

#include "common/check.h"

namespace repld::sim {

namespace {

// The device's log lines go to the running world's log (one world runs at a time).
std::vector<std::string>* g_log = nullptr;
const uint64_t* g_now = nullptr;

class WorldLogSink : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (g_log == nullptr) return;
    g_log->push_back(std::to_string(*g_now) + " " +
                     std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}
};

void UseWorldLog() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto logger = std::make_shared<spdlog::logger>("sim", std::make_shared<WorldLogSink>());
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  });
}

// The names the world gives its nodes (the resource file's).
const char* const kNames[2] = {"alpha", "beta"};

}  // namespace

void ClientDone(DiskIo* io, int error) {
  auto* r = static_cast<ClientRequest*>(io->context);
  r->world->RequestDone(*r, error);
}

World::World(SimOptions options) : options_(options), rng_(options.seed) {
  UseWorldLog();
  g_log = &log_;
  g_now = &now_;
  blocks_ = options_.data_bytes / kBlock;
  acked_.assign(blocks_, 0);
  durable_.assign(blocks_, 0);
  // Half the worlds keep the metadata on the data disk (activity-log transactions go through
  // the disk with FUA, as repld's default), half on a device of its own.
  const bool internal = ((options_.seed >> 3) & 1) == 0;
  for (int i = 0; i < 2; ++i) {
    auto n = std::make_unique<Node>(blocks_);
    n->index = i;
    // [disk] on_io_error per world: node 1 either way; node 0 (the Primary) only pass_on or
    // detach without faults (a Primary's failed disk under detach is not modelled).
    const uint64_t bit = i == 0 ? (options_.seed >> 2) & 1 : (options_.seed >> 1) & 1;
    n->on_io_error = bit != 0 ? OnIoError::kPassOn : OnIoError::kDetach;

    // create-md: a fresh superblock (Inconsistent, no generation yet), an empty log and bitmap.
    // The layout is computed for the smallest log create-md allows, then given the sim's
    // smaller one (al_extents), so that extents leave the log often.
    const uint64_t md_bytes = MdBytesFor(options_.data_bytes, kAlExtentsMin);
    auto layout = ComputeLayout(internal ? options_.data_bytes + md_bytes : options_.data_bytes,
                                internal, internal ? 0 : md_bytes, kAlExtentsMin);
    REPLD_CHECK(layout.ok());
    Superblock& sb = n->md.superblock;
    sb.layout = layout.value();
    sb.layout.al_slot_bytes = AlSlotBytes(options_.al_extents);
    REPLD_CHECK(sb.layout.data_bytes >= options_.data_bytes);
    sb.layout.data_bytes = options_.data_bytes;
    sb.al_extents = options_.al_extents;
    sb.backing_bytes = internal ? options_.data_bytes + md_bytes : options_.data_bytes;
    sb.device_uuid[0] = static_cast<uint8_t>(i + 1);
    sb.device_uuid[1] = static_cast<uint8_t>(options_.seed);
    sb.node_name = kNames[i];
    // The resource is named for the node in each world's log ("resource node1: ...").
    sb.resource_name = "node" + std::to_string(i);
    n->md.al_table.assign(options_.al_extents, kAlEmpty);
    n->md.bitmap.assign(Bitmap(options_.data_bytes).page_count() * kMdBlockBytes, 0);
    n->io = std::make_unique<asio::io_context>();
    n->sink = std::make_unique<SimDiskSink>(*this, i, sb.backing_bytes, options_.data_bytes);

    ResourceConfig& c = n->config;
    c.name = sb.resource_name;
    c.protocol = options_.protocol;
    c.on_io_error = n->on_io_error;
    c.net.secret = "sim";
    c.net.max_buffers = options_.max_buffers;
    c.resync.checksums = options_.seed % 2 == 1;  // half the worlds resync by digests first
    c.meta.al_extents = options_.al_extents;
    c.meta.meta_disk = internal ? "internal" : "sim-md";
    c.nbd.request_bytes_max = 64 * 1024;
    for (int k = 0; k < 2; ++k) {
      NodeConfig node;
      node.name = kNames[k];
      node.disk = std::string("sim-disk-") + kNames[k];
      node.address = "sim:" + std::to_string(k);
      c.nodes.push_back(node);
    }
    nodes_.push_back(std::move(n));
  }
  for (auto& n : nodes_) MakeDevice(*n);
}

World::~World() {
  for (auto& n : nodes_) {
    n->device.reset();
    n->io.reset();  // the handlers the device posted, never run
  }
  if (g_log == &log_) g_log = nullptr;
}

void World::MakeDevice(Node& n) {
  const int i = n.index;
  ReplicatedDevice::Options o;
  o.requests_max = 64;
  // Small: every device of every world maps its pools afresh (huge pages, zeroed when touched).
  o.receive_pool_bytes = 8ULL << 20;
  o.resync_window = 4;
  o.disk_failed_before = n.detached_failed;  // as Resource::Attach: its disk_error_
  o.timer = false;
  o.core_seed = options_.seed * 2 + static_cast<uint64_t>(i) + n.incarnation * 1000 + 1;
  o.open_metadata = [this, &n](const MdLocation&) -> Result<std::unique_ptr<MetadataStore>> {
    return std::unique_ptr<MetadataStore>(std::make_unique<SimMetadataStore>(*this, n.index, n.md));
  };
  o.make_peer_port = [this, &n](const PeerLinkConfig&, PeerLinkHandler& handler,
                                BufferPool& pool) -> std::unique_ptr<PeerPort> {
    auto port = std::make_unique<SimPeerPort>(*this, n.index, handler, pool);
    n.port = port.get();
    return port;
  };
  n.requests.clear();
  n.failure_noted = false;
  auto device = ReplicatedDevice::Open(*n.io, n.config, n.config.nodes[static_cast<size_t>(i)],
                                       *n.sink, std::move(o));
  if (!device.ok()) return Fail("node" + std::to_string(i) + ": " + device.status().message());
  n.device = std::move(device).value();
  // A failure the metadata records was checked when it happened.
  n.failure_noted = n.core().Report().disk_failure.has_value();
  n.device->set_on_detach_needed([this, i](const std::string&) {
    After(0, i, [this, i] { NoteDiskFailed(i, true); });
  });
  n.device->set_on_state_change([this, i] {
    const Node& n = NodeAt(i);
    if (!n.failure_noted && n.core().Report().disk_failure) {
      After(0, i, [this, i] { NoteDiskFailed(i, false); });
    }
  });
  if (Status s = n.device->Start(); !s.ok()) {
    return Fail("node" + std::to_string(i) + ": " + s.message());
  }
  Drain(i);
}

void World::At(Clock when, int node, std::function<void()> fn) {
  const uint64_t inc = node >= 0 ? nodes_[static_cast<size_t>(node)]->incarnation : 0;
  events_.push(Event{when, event_seq_++, node, inc, std::move(fn)});
}

bool World::Step() {
  if (events_.empty() || !failure_.empty()) return false;
  // Moved out (it is popped at once): a copy would copy the frames its function holds.
  Event e = std::move(const_cast<Event&>(events_.top()));
  events_.pop();
  now_ = e.when;
  if (e.node >= 0) {
    const Node& n = *nodes_[static_cast<size_t>(e.node)];
    if (!n.up || n.incarnation != e.incarnation) return true;
  }
  e.fn();
  for (int i = 0; i < 2; ++i) Drain(i);
  CheckRoles();
  return true;
}

void World::Drain(int index) {
  Node& n = NodeAt(index);
  if (!n.up || !n.device) return;
  n.io->restart();
  n.io->poll();
}

void World::CheckRoles() {
  for (const auto& n : nodes_) {
    if (!n->up || !n->device) continue;
    if (const std::string broken = n->core().CheckInvariants(); !broken.empty()) {
      return Fail("node" + std::to_string(n->index) + ": " + broken);
    }
  }
  for (const auto& n : nodes_) {
    if (!n->up || !n->device || n->core().role() != Role::kPrimary ||
        n->core().conn() != ConnState::kConnected) {
      return;
    }
  }
  Fail("two connected nodes are both Primary");
}

void World::RunUntil(Clock t, const std::function<bool()>& stop) {
  while (failure_.empty() && !events_.empty() && events_.top().when <= t) {
    if (stop && stop()) return;
    Step();
  }
  if (now_ < t) now_ = t;
}

void World::Fail(const std::string& what) {
  if (failure_.empty()) failure_ = what + " (at " + std::to_string(now_) + " us; " + Where() + ")";
}

std::string World::Where() const {
  std::ostringstream out;
  for (const auto& n : nodes_) {
    if (!n->up || !n->device) {
      out << "node" << n->index << " down; ";
      continue;
    }
    const ReplicaStatus s = n->core().Report();
    out << "node" << n->index << " " << RoleName(s.role) << "/" << DiskStateName(s.disk) << "/"
        << ConnStateName(s.conn) << "/" << ReplStateName(s.repl) << " oos=" << s.out_of_sync_bytes
        << " pending=" << s.pending << "; ";
  }
  return out.str();
}

// --- What the parts ask of the world ---

int World::DiskFault(int node, IoKind kind) {
  Node& n = NodeAt(node);
  if (n.fault_error == 0) return 0;
  if (n.fault_reads_only && kind != IoKind::kRead) return 0;
  const bool primary = n.device && n.core().role() == Role::kPrimary;
  switch (kind) {
    case IoKind::kRead:
      return InjectedError(n, n.device && n.core().Report().repl == ReplState::kSyncSource
                                  ? counts_.source_read_errors
                                  : counts_.read_errors);
    case IoKind::kWrite:
      if (primary) return InjectedError(n, counts_.primary_write_errors);
      return InjectedError(n, n.device && n.core().Report().repl == ReplState::kSyncTarget
                                  ? counts_.resync_write_errors
                                  : counts_.apply_errors);
    case IoKind::kFlush:
      // A Secondary's flushes for the peer; a Primary's for its client (and before an activity
      // log transaction that evicts extents).
      return InjectedError(n, primary ? counts_.primary_flush_errors : counts_.flush_errors);
    case IoKind::kSync:
    case IoKind::kMetadata: {
      // Bitmap, superblock and (external) activity-log writes, and the flushes before them: a
      // Secondary detaches under either policy, a detach Primary goes Diskless. (A pass_on
      // Primary keeps its disk and writes no more metadata, md_failed_: not modelled.)
      if (primary && n.on_io_error == OnIoError::kPassOn) return 0;
      const int e =
          InjectedError(n, primary ? counts_.primary_metadata_errors : counts_.metadata_errors);
      if (e != 0) ++n.metadata_failures;
      return e;
    }
  }
  return 0;
}

void World::AlSlotWritten(int node, uint64_t offset, std::span<const iovec> iov,
                          uint64_t length) {
  SimMdMedia& md = NodeAt(node).md;
  const AlContext ctx = AlContextOf(md.superblock);
  const uint64_t at = offset - md.superblock.layout.al_offset;
  if (offset < md.superblock.layout.al_offset || length != ctx.al_slot_bytes ||
      at % ctx.al_slot_bytes != 0 || at / ctx.al_slot_bytes >= ctx.al_slots || iov.size() != 1) {
    return Fail("node" + std::to_string(node) + " wrote " + std::to_string(length) +
                " bytes at " + std::to_string(offset) + ", past the data, not an AL slot");
  }
  const AlSlot slot = DecodeAlSlot(
      std::span<const uint8_t>(static_cast<const uint8_t*>(iov[0].iov_base), length), ctx,
      static_cast<uint32_t>(at / ctx.al_slot_bytes));
  if (slot.state != AlSlotState::kValid) {
    return Fail("node" + std::to_string(node) + " wrote a bad AL slot: " + slot.error);
  }
  if (slot.txn.seq > md.al_seq) {
    md.al_seq = slot.txn.seq;
    md.al_table = slot.txn.extents;
  }
}

uint64_t World::ZeroVersion(uint64_t offset, uint64_t length) {
  auto it = zero_versions_.find({offset, length});
  if (it == zero_versions_.end()) {
    Fail("a trim or zeroes of " + std::to_string(length) + " bytes at " + std::to_string(offset) +
         " reached a disk, but the client never sent one");
    return 0;
  }
  return it->second;
}

void World::PortStarted() {
  if (!connect_pending_) {
    connect_pending_ = true;
    After(Rand(100, 1000), -1, [this] { TryConnect(); });
  }
}

void World::PortDropped(int node, const std::string& reason, bool reconnect) {
  const Node& n = NodeAt(node);
  // A Primary whose disk failed drops a peer that cannot serve all its data (replica_diskless.cc).
  const bool diskless_primary = n.device && n.device->diskless_primary();
  if (!reconnect && !split_phase_ && !n.detaching && !diskless_primary) {
    Fail("node" + std::to_string(node) + " refused the peer: " + reason);
  }
  if (!reconnect && !n.detaching && !diskless_primary) refusals_[node].push_back(reason);
  After(0, -1, [this, reason] { Disconnect(reason); });
}

void World::DataDelivered(const peer::Data& head) {
  if ((head.flags & peer::kDataFlagReadReply) != 0) {
    ++remote_reads_;
  } else {
    ++data_delivered_;
  }
}

// --- The network ---

void World::Send(int from, Frame f) {
  if (!connected_) return;
  if (muted_from_ == from && mute_epoch_ == conn_epoch_) return;  // half-open: lost silently
  const int to = 1 - from;
  // In order per connection (TCP), with a random delay.
  Clock when = std::max(now_ + Rand(10, 300), last_delivery_[to]);
  last_delivery_[to] = when;
  const uint64_t epoch = conn_epoch_;
  At(when, to, [this, to, epoch, f = std::move(f)]() mutable {
    if (!connected_ || epoch != conn_epoch_) return;
    NodeAt(to).port->Receive(std::move(f));
  });
}

void World::TryConnect() {
  connect_pending_ = false;
  if (connected_ || !link_up_) return;
  // A StandAlone node's link neither listens nor connects.
  for (const auto& n : nodes_) {
    if (!n->up || !n->device || !n->port->wants_connection() ||
        n->core().conn() == ConnState::kStandAlone) {
      return;
    }
  }
  connected_ = true;
  ++conn_epoch_;
  // The States cross now; each node learns of the connection a little later (its handshake
  // ends when the peer's State arrives), and may have changed in between: a promotion, a
  // demotion. Frames to a node arrive only after its own handshake ended.
  const PeerState sent[2] = {nodes_[0]->port->HandshakeState(), nodes_[1]->port->HandshakeState()};
  const uint64_t epoch = conn_epoch_;
  for (int i = 0; i < 2; ++i) {
    const Clock up_at = now_ + Rand(0, 400);
    last_delivery_[i] = up_at;
    At(up_at, i, [this, i, epoch, peer = sent[1 - i], mine = sent[i]] {
      SimPeerPort& port = *NodeAt(i).port;
      if (connected_ && epoch == conn_epoch_) {
        port.Up(epoch, peer, mine);
      } else if (!connected_ && conn_epoch_ == epoch + 1) {
        // The peer dropped this connection after the States crossed: this node still ends its
        // handshake with the peer's State (and decides), then finds the connection closed.
        port.Up(epoch, peer, mine);
        Drain(i);
        port.Lost("the peer closed the connection");
      }
    });
  }
}

void World::Disconnect(const std::string& why) {
  if (!connected_) return;
  connected_ = false;
  ++conn_epoch_;
  for (auto& n : nodes_) {
    if (!n->up || !n->device) continue;
    n->port->Lost(why);
    Drain(n->index);
  }
  if (!connect_pending_) {
    connect_pending_ = true;
    After(Rand(1000, 5000), -1, [this] { TryConnect(); });
  }
}

void World::CutLink(Clock when, Clock down_for, const std::string& why) {
  At(when, -1, [this, why] {
    link_up_ = false;
    Disconnect(why);
  });
  At(when + down_for, -1, [this] {
    link_up_ = true;
    if (!connect_pending_) {
      connect_pending_ = true;
      After(Rand(100, 2000), -1, [this] { TryConnect(); });
    }
  });
}

void World::CrashNode(int index) {
  Node& n = NodeAt(index);
  if (!n.up) return;
  // Down first: a dead node notices nothing, not even the lost connection.
  n.up = false;
  n.detaching = false;  // the detach dies with it
  ++n.incarnation;
  Disconnect("node" + std::to_string(index) + " crashed");
  n.disk.Crash(rng_);
  // The process dies: the device with everything in flight, and the handlers it posted.
  n.device.reset();
  n.port = nullptr;
  n.io = std::make_unique<asio::io_context>();
  n.requests.clear();
}

void World::RestartNode(int index) {
  Node& n = NodeAt(index);
  if (n.up) return;  // faults overlap: an earlier restart already brought it back
  n.up = true;
  // A new life of the disk (a restart opens it too, as an attach does): a failure it reports
  // from here comes from a new I/O failure (one its metadata records was checked already).
  n.io_failures = 0;
  n.metadata_failures = 0;
  n.detached = false;
  n.detaching = false;
  ++n.incarnation;
  MakeDevice(n);
  n.detached_failed = false;
}

// One pending wake-up at most: completions that come at once (failures) do not multiply it.
void World::ScheduleClient() {
  if (client_scheduled_) return;
  client_scheduled_ = true;
  After(Rand(0, 100), -1, [this] {  // a world event: a crash of the node does not drop it
    client_scheduled_ = false;
    ClientIssue();
  });
}

ClientRequest& World::NewRequest(Node& n, BlockOp op, uint64_t offset, uint64_t length) {
  auto owned = std::make_unique<ClientRequest>();
  ClientRequest& r = *owned;
  r.world = this;
  r.node = n.index;
  r.id = next_request_++;
  r.offset = offset;
  r.length = length;
  r.io.request = BlockRequest{.op = op, .offset_bytes = offset, .length_bytes = length};
  r.io.context = &r;
  r.io.done = &ClientDone;
  if (op == BlockOp::kRead || op == BlockOp::kWrite) {
    r.buffer.resize(length);
    r.iov = iovec{r.buffer.data(), r.buffer.size()};
    r.io.iov = &r.iov;
    r.io.iov_count = 1;
  }
  n.requests.emplace(r.id, std::move(owned));
  ++client_inflight_;
  return r;
}

void World::SubmitRequest(Node& n, ClientRequest& r) {
  n.device->Submit(&r.io);
  Drain(n.index);
}

void World::ClientWrite(Node& n, uint64_t first_block, uint64_t blocks, WriteKind kind,
                        bool fua) {
  const uint64_t offset = first_block * kBlock, length = blocks * kBlock;
  if (kind != WriteKind::kData && zero_versions_.count({offset, length}) != 0) {
    kind = WriteKind::kData;  // each range is trimmed once (ZeroVersion)
  }
  const BlockOp op = kind == WriteKind::kTrim     ? BlockOp::kTrim
                     : kind == WriteKind::kZeroes ? BlockOp::kWriteZeroes
                                                  : BlockOp::kWrite;
  ClientRequest& r = NewRequest(n, op, offset, length);
  r.version = next_version_++;
  r.fua = fua;
  r.kind = kind;
  r.io.request.fua = fua;
  if (op == BlockOp::kWrite) {
    EncodeBlocks(std::vector<uint64_t>(blocks, r.version), std::span<const iovec>(&r.iov, 1));
  } else {
    zero_versions_[{offset, length}] = r.version;
  }
  if (reads_on_) NoteWriteIssued(offset, length);
  SubmitRequest(n, r);
}

// A request's completion (its DiskIo's done): the model learns what was acknowledged.
void World::RequestDone(ClientRequest& r, int error) {
  Node& n = NodeAt(r.node);
  auto owned = std::move(n.requests.at(r.id));
  n.requests.erase(r.id);
  --client_inflight_;
  const BlockOp op = r.io.request.op;
  if (op == BlockOp::kFlush) {
    if (auto f = flushes_.find(r.id); f != flushes_.end()) {
      if (error == 0) {
        for (uint64_t b = 0; b < blocks_; ++b) durable_[b] = std::max(durable_[b], f->second[b]);
      }
      flushes_.erase(f);
    }
  } else if (op == BlockOp::kRead) {
    CheckRead(r, error);
  } else {
    if (reads_on_) NoteWriteDone(r, error == 0);
    if (error == 0) {
      for (uint64_t b = r.offset / kBlock; b < (r.offset + r.length) / kBlock; ++b) {
        acked_[b] = std::max(acked_[b], r.version);
        if (r.fua) durable_[b] = std::max(durable_[b], r.version);
      }
      ++acked_writes_;
      if (r.kind != WriteKind::kData) ++counts_.trims;
    }
  }
  ScheduleClient();
}

void World::ClientIssue() {
  Node& p = NodeAt(client_node_);
  // At most a queue's worth per call: requests that fail at once (a fast-failback Primary
  // without its peer) must not spin here at one instant.
  for (uint32_t issued = 0; client_on_ && p.up && p.device &&
                            client_inflight_ < options_.queue_depth &&
                            issued < options_.queue_depth;
       ++issued) {
    if (reads_on_ && Chance(0.4)) {
      IssueRead(p);
      continue;
    }
    if (Chance(0.05)) {
      ClientRequest& r = NewRequest(p, BlockOp::kFlush, 0, 0);
      flushes_[r.id] = acked_;
      SubmitRequest(p, r);
      continue;
    }
    // Half the writes go to a small hot area, so that writes overlap.
    const uint64_t blocks = Rand(1, 8);
    const uint64_t span = Chance(0.5) ? 64 : blocks_;
    const uint64_t first = Rand(0, span - blocks);
    const bool fua = Chance(0.1);
    // A trim or zeroes reads as zeroes on every node (BackingStore writes zeroes where it
    // cannot punch): the same content on both, so its version stands for it like data.
    const WriteKind kind =
        Chance(0.05) ? (Chance(0.5) ? WriteKind::kTrim : WriteKind::kZeroes) : WriteKind::kData;
    ClientWrite(p, first, blocks, kind, fua);
  }
}

std::string World::Run() {
  // A fresh pair: node 0 takes over with --force and syncs node 1 in full, while writing.
  Node& p = *nodes_[0];
  Node& s = *nodes_[1];
  if (Status st = PromoteNow(0, true); !st.ok()) return "promote: " + st.message();
  TryConnect();
  client_on_ = true;
  ClientIssue();

  // Phase 1: faults while the client writes.
  const Clock phase1_end = 200'000;
  if (options_.faults) {
    for (int k = 0, faults = static_cast<int>(Rand(1, 4)); k < faults; ++k) {
      const Clock t = Rand(10'000, phase1_end - 40'000);
      if (Chance(0.2)) {
        HalfOpen(t, Rand(2'000, 30'000));
      } else if (Chance(0.15)) {
        FaultWindow(0, t, Rand(2'000, 30'000), /*reads_only=*/true);
      } else if (Chance(0.2)) {
        FaultWindow(1, t, Rand(2'000, 30'000), /*reads_only=*/false);
      } else if (Chance(0.5)) {
        CutLink(t, Rand(2'000, 30'000), "link cut");
      } else {
        At(t, -1, [this] { CrashNode(1); });
        At(t + Rand(2'000, 30'000), -1, [this] { RestartNode(1); });
      }
    }
  }
  RunUntil(phase1_end);
  if (!failure_.empty()) return failure_;

  // Phase 2: heal; the client pauses until the pair is in sync, then the disks must match.
  client_on_ = false;
  link_up_ = true;
  RunUntil(now_ + 10'000, [&] { return !s.detaching; });
  s.fault_error = 0;
  p.fault_error = 0;
  p.fault_reads_only = false;
  if (s.detached) AttachDisk(1);
  if (!s.up) RestartNode(1);
  if (!connected_ && !connect_pending_) TryConnect();
  auto in_sync = [&] {
    if (!s.up || !connected_ || client_inflight_ > 0) return false;
    const ReplicaStatus ps = p.core().Report(), ss = s.core().Report();
    return ps.repl == ReplState::kEstablished && ss.repl == ReplState::kEstablished &&
           ss.disk == DiskState::kUpToDate && ps.out_of_sync_bytes == 0 && ps.unacked == 0 &&
           ss.pending == 0;
  };
  RunUntil(now_ + 5'000'000, in_sync);
  if (!failure_.empty()) return failure_;
  if (!in_sync()) {
    Fail("the pair did not get back in sync within 5 s after healing");
    return failure_;
  }
  auto disks_equal = [&](const std::string& after) {
    RunUntil(now_ + 2'000);  // let the Secondary's last applies land
    for (uint64_t b = 0; b < blocks_ && failure_.empty(); ++b) {
      if (p.disk.cache[b] != s.disk.cache[b]) {
        Fail("after " + after + ", block " + std::to_string(b) + " differs: Primary has version " +
             std::to_string(p.disk.cache[b]) + ", Secondary " + std::to_string(s.disk.cache[b]));
      }
    }
    return failure_.empty();
  };
  if (!disks_equal("the resync")) return failure_;
  ticking_ = false;  // phase 1's disk faults, if any, are healed
  if (Chance(0.5)) VerifyHealed();
  if (!failure_.empty()) return failure_;

  // Phase 2a (half the worlds): disk errors on the Secondary, or on a pass_on Primary's writes.
  if (options_.faults && Chance(0.5)) {
    DiskFaults();
    if (!failure_.empty()) return failure_;
    RunUntil(now_ + 10'000'000, in_sync);
    // The Primary's reads may fail a while longer (through the resync it is the source of):
    // the verify below would stop on them.
    RunUntil(now_ + 30'000, [&] { return p.fault_error == 0; });
    RunUntil(now_ + 10'000'000, in_sync);
    if (!in_sync()) Fail("the pair did not get back in sync within 10 s after the disk faults");
    if (!failure_.empty() || !disks_equal("disk faults and the resync")) return failure_;
    // Repaired by the resync: promotable again (phase 3 promotes it when the Primary dies).
    if (s.core().md().io_error || s.core().Report().disk_failure) {
      Fail("node1's disk is in sync but still recorded as failed after the resync");
      return failure_;
    }
    if (Chance(0.5)) VerifyHealed();  // also after a detach and attach, or a pass_on resync
    if (!failure_.empty()) return failure_;
    ticking_ = false;
    acked_ = p.disk.cache;  // a Primary that crashed lost its acknowledged writes not durable
  }

  // Phase 2b (half the worlds): both nodes lose power at once.
  if (Chance(0.5)) {
    PowerLoss();
    if (!failure_.empty()) return failure_;
    RunUntil(now_ + 5'000'000, in_sync);
    if (!in_sync()) Fail("the pair did not get back in sync within 5 s after a power loss");
    if (!failure_.empty() || !disks_equal("a power loss of both nodes and the resync")) {
      return failure_;
    }
    acked_ = p.disk.cache;  // acknowledged writes that were not yet durable died with the power
  }

  ConcurrentPromotion();
  if (!failure_.empty()) return failure_;
  RunUntil(now_ + 5'000'000, in_sync);
  if (!in_sync()) Fail("the pair did not get back in sync after the crossed promotions");
  if (!failure_.empty()) return failure_;

  // Phase 3: writes on a healthy pair, then the Primary dies at a random moment.
  client_on_ = true;
  ClientIssue();
  RunUntil(now_ + Rand(1'000, 50'000));
  if (!failure_.empty()) return failure_;
  if (options_.protocol != Protocol::kC) {
    // Under A and B the Secondary may lack acknowledged writes: it must still take over.
    CrashNode(0);
    if (Status st = PromoteNow(1, false); !st.ok()) {
      Fail("promoting the surviving UpToDate Secondary failed: " + st.message());
      return failure_;
    }
  } else {
    CrashNode(0);
    for (uint64_t b = 0; b < blocks_; ++b) {
      if (s.disk.cache[b] < acked_[b]) {
        Fail("the Primary died and block " + std::to_string(b) + " on the Secondary has version " +
             std::to_string(s.disk.cache[b]) + ", but version " + std::to_string(acked_[b]) +
             " was acknowledged under protocol C");
        return failure_;
      }
    }
    if (Status st = PromoteNow(1, false); !st.ok()) {
      Fail("promoting the surviving UpToDate Secondary failed: " + st.message());
      return failure_;
    }
  }
  if (acked_writes_ == 0) Fail("no write was acknowledged: the sim did not exercise anything");
  if (!failure_.empty()) return failure_;
  SplitBrain();
  return failure_;
}

// Both nodes lose power at once while the client writes, the Primary first (so that the
// Secondary's PeerDown marks nothing that could help). After the restart node 0 is promoted
// again and resyncs node 1 from its bitmap, which the crash filled from its activity log. Then
// the disks must be equal: every block that neither bitmap marks must hold the same data on
// both sides, so the log must have covered every write the Secondary could lose from its cache.
void World::PowerLoss() {
  client_on_ = true;
  ClientIssue();
  RunUntil(now_ + Rand(1'000, 30'000));
  if (!failure_.empty()) return;
  client_on_ = false;
  if (Chance(0.3)) {
    // The Primary steps down just before: the peer may not have flushed its last writes yet.
    // (Under A and B a completed write stays in the core until the peer confirms it.)
    RunUntil(now_ + 20'000,
             [&] { return client_inflight_ == 0 && nodes_[0]->core().Report().unacked == 0; });
    if (client_inflight_ == 0 && nodes_[0]->core().Report().unacked == 0 && !Demote(0)) return;
    RunUntil(now_ + Rand(0, 300));
  }
  CrashNode(0);
  CrashNode(1);
  client_inflight_ = 0;  // the requests in flight died with the Primary
  flushes_.clear();
  log_.push_back(std::to_string(now_) + " power loss of both nodes");
  // What a completed FLUSH or FUA covered is on the Primary's disk; under C on the
  // Secondary's too (the flush waited for the peer's, and FUA travels with the write).
  for (int i = 0; i < 2; ++i) {
    if (i == 1 && options_.protocol != Protocol::kC) continue;
    const Node& n = *nodes_[static_cast<size_t>(i)];
    for (uint64_t b = 0; b < blocks_; ++b) {
      if (n.disk.cache[b] < durable_[b]) {
        return Fail("after a power loss of both nodes, block " + std::to_string(b) + " of node" +
                    std::to_string(i) + " has version " + std::to_string(n.disk.cache[b]) +
                    ", but a completed FLUSH or FUA covered version " +
                    std::to_string(durable_[b]));
      }
    }
  }
  RestartNode(0);
  RestartNode(1);
  if (Status st = nodes_[0]->device->BeginPromote(false); !st.ok()) {
    return Fail("promoting node 0 after the power loss failed: " + st.message());
  }
}

void World::WriteOn(int index, uint64_t first_block, uint64_t blocks) {
  ClientWrite(NodeAt(index), first_block, blocks, WriteKind::kData, false);
}

// Phase 4: the nodes are cut apart and both become Primary and write; when they meet, both
// must refuse (split brain), stay StandAlone, and move no data, however often they meet.
void World::SplitBrain() {
  client_on_ = false;
  RunUntil(now_ + 20'000, [&] { return client_inflight_ == 0; });
  if (!nodes_[0]->up) client_inflight_ = 0;  // requests in flight died with the node
  link_up_ = false;
  Disconnect("partition");
  if (!nodes_[0]->up) RestartNode(0);
  RunUntil(now_ + 1'000);
  for (int i = 0; i < 2; ++i) {
    if (NodeAt(i).core().role() == Role::kPrimary) continue;
    if (Status st = PromoteNow(i, false); !st.ok()) {
      if (Status forced = PromoteNow(i, true); !forced.ok()) {
        return Fail("node" + std::to_string(i) +
                    " could not be promoted alone: " + forced.message());
      }
    }
    Drain(i);
  }
  // Node 1 was Secondary: the old Primary's writes it received may still be landing. Writes of
  // its own that overlap them must land after them (they are newer).
  WriteOn(0, 0, 4);
  WriteOn(1, 8, 4);
  uint64_t newest_first = Rand(0, blocks_ - 4);
  for (const auto& [submission, offset] : nodes_[1]->sink->writes_in_flight()) {  // the oldest
    newest_first = std::min(offset / kBlock, blocks_ - 4);
    break;
  }
  const uint64_t newest_version = next_version_;
  WriteOn(1, newest_first, 4);
  RunUntil(now_ + 20'000, [&] { return client_inflight_ == 0; });
  if (client_inflight_ != 0) return Fail("the writes of the split did not complete");
  // Half the time one node steps down before they meet: its changes still count.
  if (Chance(0.5) && !Demote(static_cast<int>(Rand(0, 1)))) return;
  // Nothing in flight from before the split may land after the snapshot.
  RunUntil(now_ + 20'000, [&] { return nodes_[0]->device->Idle() && nodes_[1]->device->Idle(); });
  for (uint64_t b = newest_first; b < newest_first + 4; ++b) {
    if (nodes_[1]->disk.cache[b] != newest_version) {
      return Fail("block " + std::to_string(b) + " of node1 has version " +
                  std::to_string(nodes_[1]->disk.cache[b]) + " after node1, promoted, wrote " +
                  std::to_string(newest_version) + ": an older write landed over it");
    }
  }
  const std::vector<uint64_t> before[2] = {nodes_[0]->disk.cache, nodes_[1]->disk.cache};
  const uint64_t delivered = data_delivered_;
  split_phase_ = true;
  link_up_ = true;
  if (!connect_pending_) TryConnect();
  RunUntil(now_ + 20'000'000);  // many reconnect attempts' worth
  if (!failure_.empty()) return;
  for (int i = 0; i < 2; ++i) {
    const Node& n = *nodes_[static_cast<size_t>(i)];
    const std::string who = "node" + std::to_string(i);
    if (refusals_[i].empty()) return Fail(who + " never refused the split brain");
    if (refusals_[i].front().find("split brain") == std::string::npos) {
      return Fail(who + " refused for another reason: " + refusals_[i].front());
    }
    if (n.core().Report().conn != ConnState::kStandAlone) {
      return Fail(who + " is not StandAlone after the split brain");
    }
    if (n.disk.cache != before[i]) return Fail(who + "'s data changed after the split brain");
  }
  if (data_delivered_ != delivered) return Fail("data moved between split-brained nodes");
  log_.push_back(std::to_string(now_) + " split brain refused by both: " + refusals_[0].front());
  ResolveSplitBrain();
}

Status World::PromoteNow(int index, bool force) {
  Node& n = *nodes_[static_cast<size_t>(index)];
  Status st = n.device->BeginPromote(force);
  Drain(index);
  if (!st.ok() || !n.device->promotion_pending()) return st;
  RunUntil(now_ + 1'000'000, [&] { return !n.up || !n.device->promotion_pending(); });
  if (!n.up) return Status::Invalid("the node crashed while its promotion was agreed");
  if (n.device->promotion_pending()) {
    Fail("node" + std::to_string(index) + "'s promotion got no answer within 1 s");
    return Status::Invalid("no answer");
  }
  return n.device->FinishPromote();
}

void World::ConcurrentPromotion() {
  if (!Demote(0)) return;
  RunUntil(now_ + 2'000);
  const bool cut = Chance(0.3);
  Clock cut_end = now_;
  if (cut) {
    const Clock at = now_ + Rand(0, 600), down_for = Rand(1'000, 5'000);
    CutLink(at, down_for, "link cut during the promotions");
    cut_end = at + down_for;
  }
  // A node that already lost the link does not ask: a disconnected promotion is the operator's
  // split-brain choice, which phase 4 covers.
  bool asked[2] = {false, false};
  for (int i = 0; i < 2; ++i) {
    After(Rand(0, 400), -1, [this, i, &asked] {
      Node& n = *nodes_[static_cast<size_t>(i)];
      asked[i] = true;
      if (!n.up || n.core().conn() != ConnState::kConnected) return;
      if (Status st = n.device->BeginPromote(false); !st.ok()) {
        log_.push_back(std::to_string(now_) + " node" + std::to_string(i) +
                       " promotion refused at once: " + st.message());
      }
      Drain(i);
    });
  }
  auto settled = [&] {
    return asked[0] && asked[1] && !nodes_[0]->device->promotion_pending() &&
           !nodes_[1]->device->promotion_pending();
  };
  RunUntil(now_ + 1'000'000, settled);
  if (!failure_.empty()) return;
  if (!settled()) return Fail("the crossed promotions did not settle within 1 s");
  RunUntil(std::max(now_, cut_end + 1));  // the cut, if any, has come and gone
  ++promotions_raced_;
  int primaries = 0;
  for (const auto& n : nodes_) primaries += n->core().role() == Role::kPrimary ? 1 : 0;
  if (primaries == 2) return Fail("both nodes became Primary from crossed promotions");
  if (primaries == 1) ++promotions_won_;
  log_.push_back(std::to_string(now_) + " crossed promotions: " + std::to_string(primaries) +
                 " Primary" + (cut ? " (link cut)" : ""));
  // Back to node 0 Primary, node 1 Secondary, connected and in sync for phase 3.
  if (nodes_[1]->core().role() == Role::kPrimary && !Demote(1)) return;
  link_up_ = true;
  if (!connected_ && !connect_pending_) TryConnect();
  if (nodes_[0]->core().role() != Role::kPrimary) {
    auto ready = [&] {
      const ReplicaStatus a = nodes_[0]->core().Report(), b = nodes_[1]->core().Report();
      return a.conn == ConnState::kConnected && b.conn == ConnState::kConnected &&
             a.repl == ReplState::kEstablished && b.repl == ReplState::kEstablished &&
             a.disk == DiskState::kUpToDate && b.disk == DiskState::kUpToDate && a.peer &&
             a.peer->role == Role::kSecondary;
    };
    RunUntil(now_ + 5'000'000, ready);
    if (!ready()) return Fail("the pair did not reconnect in sync after the crossed promotions");
    if (Status st = PromoteNow(0, false); !st.ok() && failure_.empty()) {
      return Fail("promoting node0 back failed: " + st.message());
    }
  }
}

bool World::Demote(int index) {
  Node& n = NodeAt(index);
  if (n.core().role() == Role::kSecondary) return true;
  if (Status st = n.device->Demote(0); !st.ok()) {
    Fail("node" + std::to_string(index) + " could not be demoted: " + st.message());
    return false;
  }
  return true;
}

// Phase 5: the split brain is resolved, by the operator (connect --discard-my-data on the
// victim, connect on the survivor) or by a policy (after_sb_1pri = discard-secondary, the
// victim demoted first). The victim must end with exactly the survivor's data: the union of
// both bitmaps covers what either changed.
void World::ResolveSplitBrain() {
  split_phase_ = false;  // from here, any refusal fails the run
  const int victim = static_cast<int>(Rand(0, 1)), survivor = 1 - victim;
  Node& vn = NodeAt(victim);
  Node& sn = NodeAt(survivor);
  if (!Demote(victim)) return;
  const bool by_policy = Chance(0.5);
  std::string how;
  if (by_policy) {
    if (sn.core().role() != Role::kPrimary) {
      if (Status st = PromoteNow(survivor, false); !st.ok()) {
        return Fail("promote survivor: " + st.message());
      }
    }
    for (Node* n : {&vn, &sn}) {  // replctl adjust
      n->config.net.split_brain = {AfterSb0Pri::kDisconnect, AfterSb1Pri::kDiscardSecondary};
      n->device->Retune(n->config);
    }
    how = "after_sb_1pri = discard-secondary";
  } else {
    how = "connect --discard-my-data";
  }
  std::string message;
  Status a = vn.device->Connect(/*discard_my_data=*/!by_policy, message);
  Status b = sn.device->Connect(false, message);
  if (!a.ok() || !b.ok()) return Fail("connect: " + (a.ok() ? b : a).message());
  Drain(victim);
  Drain(survivor);
  if (!connect_pending_) TryConnect();
  auto resolved = [&] {
    const ReplicaStatus vs = vn.core().Report(), ss = sn.core().Report();
    return connected_ && vs.repl == ReplState::kEstablished && ss.repl == ReplState::kEstablished &&
           vs.disk == DiskState::kUpToDate && ss.out_of_sync_bytes == 0 && ss.unacked == 0 &&
           vn.device->Idle();
  };
  RunUntil(now_ + 5'000'000, resolved);
  if (!failure_.empty()) return;
  if (!resolved()) return Fail("the split brain was not resolved by " + how + " within 5 s");
  for (uint64_t b = 0; b < blocks_; ++b) {
    if (vn.disk.cache[b] != sn.disk.cache[b]) {
      return Fail("after resolving the split brain by " + how + ", block " + std::to_string(b) +
                  " differs: the survivor node" + std::to_string(survivor) + " has version " +
                  std::to_string(sn.disk.cache[b]) + ", the victim " +
                  std::to_string(vn.disk.cache[b]));
    }
  }
  log_.push_back(std::to_string(now_) + " split brain resolved by " + how + ", node" +
                 std::to_string(victim) + "'s changes discarded");
  victim_ = victim;
  FastFailback();
}

}  // namespace repld::sim
