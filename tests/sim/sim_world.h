// A deterministic world for the replication core: two nodes, each a Replica with a simulated
// disk (a volatile cache that a crash partly loses), a simulated network between them (in-order
// per connection, random delay, disconnects), a clock, and a client that writes versioned blocks
// to the Primary. Everything random comes from one seed, so a failing seed replays exactly.
#pragma once

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

#include "replication/replica.h"

namespace repld::sim {

inline constexpr uint64_t kBlock = 4096;

// One 4 KiB block holds the version of the write that wrote it (0: never written).
struct SimDisk {
  std::vector<uint64_t> durable, cache;
  explicit SimDisk(uint64_t blocks) : durable(blocks, 0), cache(blocks, 0) {}
  void Write(uint64_t offset, const std::vector<uint64_t>& versions, bool fua);
  void Flush() { durable = cache; }
  // The versions of the blocks of [offset, offset+length), as the cache holds them.
  std::vector<uint64_t> Read(uint64_t offset, uint64_t length) const {
    const auto first = cache.begin() + static_cast<std::ptrdiff_t>(offset / kBlock);
    return {first, first + static_cast<std::ptrdiff_t>(length / kBlock)};
  }
  // Power loss: each block written since the last flush keeps its new content or loses it.
  void Crash(std::mt19937_64& rng);
};

struct Frame {
  enum class Type {
    kData,
    kFlush,
    kAck,
    kState,
    kOutOfSync,
    kCsums,
    kCsumReply,
    kReadRequest,
    kReadReply,
    kPromoteRequest,  // seq carries the token
    kPromoteReply     // seq: token; fua: granted; reason in `reason`
  } type = Type::kData;
  uint64_t seq = 0, offset = 0, length = 0;
  std::vector<uint64_t> versions;  // data, read reply: one per 4 KiB block; kCsums: as digests
  bool fua = false, resync = false;
  WriteKind kind = WriteKind::kData;  // a trim or zeroes carries its write's version as data
  AckKind ack = AckKind::kWritten;
  int error = 0;
  PeerState state;
  std::vector<OutOfSyncRun> runs;  // kOutOfSync (`fua` carries its `last`), kCsumReply
  std::string reason;              // kPromoteReply
};

struct Node {
  int index = 0;
  std::unique_ptr<Replica> replica;
  SimDisk disk;
  bool up = true;
  uint64_t incarnation = 0;  // bumped by a crash: events of the old life are dropped
  // What survives a crash.
  MdState md_on_disk;
  std::optional<Bitmap> bitmap_on_disk;
  std::vector<uint32_t> al_on_disk;
  uint64_t al_seq_on_disk = 0;
  // In-flight payloads.
  struct ClientWrite {
    uint64_t offset, length, version;
    bool fua;
    WriteKind kind = WriteKind::kData;  // kTrim / kZeroes: the version stands for the zeroes
  };
  std::unordered_map<RequestId, ClientWrite> client_writes;  // request -> what it writes
  struct ClientRead {
    uint64_t offset, length;
    bool checkable;                  // no overlapping write was in flight meanwhile
    std::vector<uint64_t> expected;  // per block, when it was issued (kUnknown: unchecked)
    std::vector<uint64_t> result;    // what the read returned
  };
  std::unordered_map<RequestId, ClientRead> client_reads;
  std::unordered_map<uint64_t, Frame> peer_reads;    // key -> the peer's read request
  std::unordered_map<uint64_t, Frame> frames;        // key -> received data frame
  std::unordered_map<uint64_t, Frame> resync_reads;  // token -> block read
  std::unordered_map<uint64_t, Frame> csum_frames;   // key -> the peer's digests
  std::optional<PromotionDone> promotion_done;       // the last promotion agreed or refused
  // Disk faults (sim_faults.cc): while `fault_error` is set, the disk fails some I/O with it
  // (a Secondary: applies, resync writes and flushes; a Primary: its client's writes).
  OnIoError on_io_error = OnIoError::kDetach;
  int fault_error = 0;
  uint64_t io_failures = 0;  // I/O failed by an injected fault, in this life of the disk
  bool detaching = false;    // DiskFailed{detach}: the I/O drains, then the disk closes
  bool detached = false;     // Diskless (no replica) until AttachDisk
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
  explicit World(SimOptions options);
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
    uint64_t detaches = 0, pass_on_failures = 0;
    uint64_t refusals_checked = 0;       // promotions of a node that failed a write, refused
    uint64_t refusals_primary_dead = 0;  // of which with the Primary dead, the node behind it
    uint64_t verifies = 0;               // online verifies after healing (0 differing bytes)
    uint64_t half_open = 0;              // links that dropped one direction until the ping timeout
    uint64_t trims = 0;                  // trims and zeroes acknowledged
  };
  const FaultCounts& fault_counts() const { return counts_; }

 private:
  using Clock = uint64_t;  // microseconds
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

  void MakeReplica(Node& n);
  void Drain(int node);
  void Execute(Node& n, Action& a);
  void Send(int from, Frame f);
  void Deliver(int to, const Frame& f);
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
  void NoteWriteDone(const Node::ClientWrite& w, bool ok);
  void CheckRead(int node, RequestId id, int error);
  void CheckFailbackData(int target, const std::string& how);
  // sim_faults.cc: disk errors on the Secondary (or a pass_on Primary), the detach and a later
  // attach of the same disk, the promotion refusals; half-open links; verify after healing.
  int InjectedError(Node& n, uint64_t& counter);
  void NoteDiskFailed(Node& n, const DiskFailed& a);
  void DetachDisk(int node);
  void AttachDisk(int node);
  void DiskFaults();
  // Phase 1: node 1's disk fails some I/O from `when` for `for_us` (with the other faults).
  void SecondaryDiskFaults(Clock when, Clock for_us);
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
  uint64_t next_key_ = 1;
  std::vector<uint64_t> acked_;  // per block: the highest acknowledged version
  // Per block: the highest version that a completed FLUSH (issued after the write completed)
  // or a completed FUA write made durable; and, per flush in flight, acked_ when it was issued.
  std::vector<uint64_t> durable_;
  std::unordered_map<RequestId, std::vector<uint64_t>> flushes_;
  uint64_t acked_writes_ = 0;

  // Phase 4: refusals are expected, and counted instead of failing the run.
  bool split_phase_ = false;
  std::vector<std::string> refusals_[2];
  uint64_t data_delivered_ = 0;  // Data frames that reached a node
  uint64_t promotions_raced_ = 0, promotions_won_ = 0;

  // Phase 7: what each block must read as (the highest version acknowledged, unless a failed
  // write's version is higher: then either may be there, kUnknown), and the reads checked.
  static constexpr uint64_t kUnknown = ~uint64_t{0};
  bool failback_phase_ = false;
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
