// A deterministic world for the replication core and the adapter repld runs around it: two
// nodes, each a ReplicatedDevice (replicated_device.h) built on simulated parts (sim_parts.h: a
// disk with a volatile cache that a crash partly loses, its metadata, a network port), on an
// io_context of its own that the world polls after every event; a simulated network between
// them (in-order per connection, random delay, disconnects), a clock, and a client that writes
// versioned blocks to the Primary through the device's frontend interface (DiskIo). Everything
// random comes from one seed, so a failing seed replays exactly.
#pragma once

#include <asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/replicated_device.h"
#include "sim_parts.h"

namespace repld::sim {

// A request of the client, from its DiskIo to its completion.
struct ClientRequest {
  DiskIo io{};
  class World* world = nullptr;
  int node = 0;
  uint64_t id = 0;
  uint64_t offset = 0, length = 0, version = 0;
  bool fua = false;
  WriteKind kind = WriteKind::kData;  // writes: kTrim / kZeroes stand for their version
  std::vector<uint8_t> buffer;        // data written, or read into
  iovec iov{};
  // Reads (phase 7): checked against the model unless a write overlapped them.
  bool checkable = true;
  std::vector<uint64_t> expected;  // per block, when issued (kUnknown: unchecked)
};

struct Node {
  int index = 0;
  // The parts that outlive the device: the disk and its metadata (a crash keeps what they made
  // durable) and the loop. The device and its port die with a crash or a detach.
  SimDisk disk;
  SimMdMedia md;
  std::unique_ptr<asio::io_context> io;
  std::unique_ptr<SimDiskSink> sink;
  ResourceConfig config;
  std::unique_ptr<ReplicatedDevice> device;
  SimPeerPort* port = nullptr;  // the device's
  bool up = true;
  uint64_t incarnation = 0;  // bumped by a crash: events of the old life are dropped
  std::unordered_map<uint64_t, std::unique_ptr<ClientRequest>> requests;  // id -> in flight
  // Disk faults (sim_faults.cc): while `fault_error` is set, the disk fails some I/O with it
  // (a Secondary: applies, resync writes, flushes, metadata writes and reads; a Primary: its
  // client's writes, reads and flushes, its metadata writes, its reads as a sync source);
  // only reads while `fault_reads_only`.
  OnIoError on_io_error = OnIoError::kDetach;
  int fault_error = 0;
  bool fault_reads_only = false;
  uint64_t io_failures = 0;  // I/O failed by an injected fault, in this life of the disk
  uint64_t metadata_failures = 0;  // of which metadata writes and flushes
  bool failure_noted = false;  // its disk failure was checked (NoteDiskFailed)
  bool detaching = false;    // the device asked for a detach: the I/O drains, then it closes
  bool detached = false;     // Diskless (no device) until AttachDisk
  bool detached_failed = false;  // detached after a disk failure (until the attach opened it)
  const Replica& core() const { return device->core(); }
  explicit Node(uint64_t blocks) : disk(blocks) {}
};

struct SimOptions {
  uint64_t seed = 1;
  Protocol protocol = Protocol::kC;
  uint64_t data_bytes = 16ULL << 20;
  uint32_t al_extents = 3;
  uint32_t max_buffers = 64;
  uint32_t queue_depth = 8;
  bool faults = true;
};

class World {
 public:
  using Clock = uint64_t;  // microseconds
  explicit World(SimOptions options);
  ~World();
  // Runs the whole story; returns "" on success or what went wrong.
  std::string Run();
  const std::vector<std::string>& log() const { return log_; }
  // Phase 7's reads: checked against the model, and of those served by the peer.
  uint64_t reads_checked() const { return reads_checked_; }
  uint64_t remote_reads() const { return remote_reads_; }
  // Phase 2b: promotions asked on both nodes at once, and how many ended with one Primary.
  uint64_t promotions_raced() const { return promotions_raced_; }
  uint64_t promotions_won() const { return promotions_won_; }
  // What the faults of sim_faults.cc exercised (each must happen over many seeds).
  struct FaultCounts {
    uint64_t apply_errors = 0, flush_errors = 0, resync_write_errors = 0, primary_write_errors = 0;
    uint64_t metadata_errors = 0;  // a Secondary's metadata writes (it detaches either way)
    // A Primary's flushes, and its metadata writes (under detach: it goes Diskless).
    uint64_t primary_flush_errors = 0, primary_metadata_errors = 0;
    // Reads: by a sync source (its resync reads, and a Primary's client reads meanwhile), and
    // any other (a Primary's client reads, a sync target's reads for checksums).
    uint64_t source_read_errors = 0, read_errors = 0;
    uint64_t detaches = 0, pass_on_failures = 0;
    // A Primary's disk failed under detach: it served through its peer, then took its disk again
    // (Resource::AttachToPrimary) and was promoted as a resync target.
    uint64_t diskless_primaries = 0, primary_attaches = 0;
    uint64_t refusals_checked = 0;       // promotions of a node that failed a write, refused
    uint64_t refusals_primary_dead = 0;  // of which with the Primary dead, the node behind it
    uint64_t verifies = 0;               // online verifies after healing (0 differing bytes)
    uint64_t half_open = 0;              // links that dropped one direction until the ping timeout
    uint64_t trims = 0;                  // trims and zeroes acknowledged
  };
  const FaultCounts& fault_counts() const { return counts_; }

 private:
  friend class SimDiskSink;
  friend class SimMetadataStore;
  friend class SimPeerPort;
  friend void ClientDone(DiskIo* io, int error);

  // For the parts.
  enum class IoKind { kRead, kWrite, kFlush, kSync, kMetadata };
  // The error an injected fault gives this I/O of `node`'s disk; 0: none.
  int DiskFault(int node, IoKind kind);
  Node& NodeAt(int node) { return *nodes_[static_cast<size_t>(node)]; }
  // An activity-log slot of the internal layout, written through the disk.
  void AlSlotWritten(int node, uint64_t offset, std::span<const iovec> iov, uint64_t length);
  // What the sim's disk stores for the zeroes of a trim or write-zeroes of exactly this range:
  // its version (each range is trimmed once per world, so the range names the write).
  uint64_t ZeroVersion(uint64_t offset, uint64_t length);
  void PortStarted();
  void PortDropped(int node, const std::string& reason, bool reconnect);
  void DataDelivered(const peer::Data& head);

  void At(Clock when, int node, std::function<void()> fn);
  void After(Clock delay, int node, std::function<void()> fn) {
    At(now_ + delay, node, std::move(fn));
  }
  bool Step();
  void RunUntil(Clock t, const std::function<bool()>& stop = nullptr);
  Clock Rand(Clock lo, Clock hi) { return std::uniform_int_distribution<Clock>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  bool Demote(int node);
  // Promote() and, when the peer must agree, run until it has answered: how it ended.
  Status PromoteNow(int node, bool force);
  // Phase 2b: both nodes of a connected pair ask to be promoted at about the same moment
  // (sometimes with the link cut around it); at most one may win.
  void ConcurrentPromotion();
  // After every event: two connected nodes are never both Primary.
  void CheckRoles();

  // Builds the node's device on its parts (as at start: the metadata read, the link started).
  void MakeDevice(Node& n);
  // Runs what the node's loop has ready (handlers the device posted).
  void Drain(int node);
  void Send(int from, Frame f);
  // The client's requests.
  ClientRequest& NewRequest(Node& n, BlockOp op, uint64_t offset, uint64_t length);
  void SubmitRequest(Node& n, ClientRequest& r);
  void RequestDone(ClientRequest& r, int error);
  void ClientWrite(Node& n, uint64_t first_block, uint64_t blocks, WriteKind kind, bool fua);
  void TryConnect();
  void Disconnect(const std::string& why);
  // The link goes down at `when` and comes back `down_for` later (a reconnect follows).
  void CutLink(Clock when, Clock down_for, const std::string& why);
  void CrashNode(int node);
  void PowerLoss();  // phase 2b
  void RestartNode(int node);
  void ClientIssue();
  void ScheduleClient();
  void WriteOn(int node, uint64_t first_block, uint64_t blocks);
  void SplitBrain();
  void ResolveSplitBrain();
  // Phase 7 (sim_failback.cc): fast failback.
  void FastFailback();
  bool MakeTarget(int target, std::string& how);
  void IssueRead(Node& n);
  void NoteWriteIssued(uint64_t offset, uint64_t length);
  void NoteWriteDone(const ClientRequest& w, bool ok);
  void CheckRead(const ClientRequest& r, int error);
  void CheckFailbackData(int target, const std::string& how);
  // sim_faults.cc: disk errors on the Secondary (or a pass_on Primary), the detach and a later
  // attach of the same disk, the promotion refusals; half-open links; verify after healing.
  int InjectedError(Node& n, uint64_t& counter);
  // The device reported a disk failure (its state changed so, or it asked for a detach).
  void NoteDiskFailed(int node, bool detach);
  void DetachDisk(int node);
  void FinishDetach(int node);  // once the device's I/O has drained
  void AttachDisk(int node);
  // Resource::AttachToPrimary on node's diskless Primary, the client drained.
  void AttachToDisklessPrimary(int node);
  void DiskFaults();
  // Phase 1: the node's disk fails some I/O (or only reads) from `when` for `for_us`, with the
  // other faults: node 1's, or node 0's reads as the sync source of the resyncs there (the
  // client does not read in phase 1), which the resync retries pass after pass.
  void FaultWindow(int node, Clock when, Clock for_us, bool reads_only);
  void ClearFaultsAt(int node, Clock when);
  void CheckFailedNodeRefused(const std::string& when);
  void HalfOpen(Clock when, Clock for_us);
  void StartTicks();
  void VerifyHealed();
  void Fail(const std::string& what);
  std::string Where() const;

  SimOptions options_;
  std::mt19937_64 rng_;
  Clock now_ = 0;
  uint64_t event_seq_ = 0;
  struct Event {
    Clock when;
    uint64_t seq;
    int node;  // -1: the world; else dropped if the node crashed since
    uint64_t incarnation;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return when != o.when ? when > o.when : seq > o.seq; }
  };
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  std::vector<std::unique_ptr<Node>> nodes_;
  uint64_t blocks_ = 0;

  // Network: one connection at a time; frames of an old connection are dropped.
  bool link_up_ = true;
  bool connected_ = false;
  uint64_t conn_epoch_ = 0;
  Clock last_delivery_[2] = {0, 0};
  bool connect_pending_ = false;

  // Client on the Primary (node 0 until phase 7).
  int client_node_ = 0;
  bool client_on_ = false;
  bool client_scheduled_ = false;
  uint32_t client_inflight_ = 0;
  uint64_t next_request_ = 1;
  uint64_t next_version_ = 1;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> zero_versions_;  // (offset, length) -> version
  std::vector<uint64_t> acked_;  // per block: the highest acknowledged version
  // Per block: the highest version that a completed FLUSH (issued after the write completed)
  // or a completed FUA write made durable; and, per flush in flight, acked_ when it was issued.
  std::vector<uint64_t> durable_;
  std::unordered_map<uint64_t, std::vector<uint64_t>> flushes_;
  uint64_t acked_writes_ = 0;

  // Phase 4: refusals are expected, and counted instead of failing the run.
  bool split_phase_ = false;
  std::vector<std::string> refusals_[2];
  uint64_t data_delivered_ = 0;  // Data frames that reached a node
  uint64_t promotions_raced_ = 0, promotions_won_ = 0;

  // Phase 7 and the Primary's disk faults of phase 2a: the client reads too (reads_on_). What
  // each block must read as (the highest version acknowledged, unless a failed write's version
  // is higher: then either may be there, kUnknown), and the reads checked.
  static constexpr uint64_t kUnknown = ~uint64_t{0};
  bool reads_on_ = false;
  int victim_ = 1;
  std::vector<uint64_t> known_max_, failed_max_;
  uint64_t reads_checked_ = 0, remote_reads_ = 0;

  // sim_faults.cc: Ticks (the daemon's once a second, here every kTickUs) while disk faults
  // run: pass_on's reconnect and the resync's retry of failed passes come from Tick.
  static constexpr Clock kTickUs = 5'000;
  bool ticking_ = false, tick_scheduled_ = false;
  int muted_from_ = -1;  // half-open link: frames from this node vanish on connection mute_epoch_
  uint64_t mute_epoch_ = 0;
  FaultCounts counts_;

  std::string failure_;
  std::vector<std::string> log_;
};

}  // namespace repld::sim
