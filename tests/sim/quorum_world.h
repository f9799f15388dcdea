// A deterministic world for quorum, votes and fencing (src/replication/quorum.h): two data
// nodes and a witness, each running the real QuorumNode on a clock of its own (rates up to 5%
// apart, or beyond for the self-test), over a network whose three links are cut, healed and
// flapped in every shape, with crashes and restarts of any node. The replica around it is a
// model: a disk is the set of write numbers on it, a resync copies the source's set, a Primary
// acknowledges a write once its peer has it or is fenced, and only while it has quorum. A
// promoter on each data node stands as candidate whenever WhyNotCandidate allows, and demotes a
// Primary that has been without quorum for a while. Everything random comes from one seed.
//
// Checked after every event: never two Primaries with quorum; a node that becomes Primary has
// every acknowledged write. At the end, with every link healed and every node up: one Primary,
// both disks UpToDate and equal, every acknowledged write on them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "replication/quorum.h"

namespace repld::qsim {

using quorum::NodeId;

struct QuorumSimOptions {
  uint64_t seed = 1;
  // Clock rates are drawn from [1000 - drift, 1000 + drift] per mille: the model allows 50 (5%).
  uint32_t drift_per_mille = 50;
  // The self-test of the write check: a Primary that lost its data peer acknowledges writes
  // without fencing it first.
  bool ack_without_fence = false;
  uint64_t chaos_ms = 60'000;   // faults happen in this phase
  uint64_t settle_ms = 40'000;  // then everything heals
};

struct QuorumSimCounts {
  uint64_t promotions = 0, promotions_fenced = 0, refusals = 0, fences = 0;
  uint64_t writes_acked = 0, demotions_without_quorum = 0, crashes = 0, cuts = 0;
  uint64_t outdated_notices = 0, resyncs = 0, refused_handshakes = 0;
  uint64_t promotions_without_vote = 0;
};

class QuorumWorld {
 public:
  explicit QuorumWorld(const QuorumSimOptions& options);
  // "" when every check held; else what broke.
  std::string Run();
  const std::vector<std::string>& log() const { return log_; }
  const QuorumSimCounts& counts() const { return counts_; }

 private:
  struct DataMsg {
    uint64_t write;
    uint64_t epoch;
  };
  struct AckMsg {
    uint64_t write;
  };
  using Wire = std::variant<quorum::Message, DataMsg, AckMsg>;
  struct Node {
    // Kept across crashes (the disk and the metadata).
    std::set<uint64_t> disk;
    uint64_t epoch = 0;  // the promotion whose writes it holds last
    DiskState disk_state = DiskState::kUpToDate;
    uint8_t outdated_mask = 0;
    // It fenced the other data node (PeerFenced) and may have acknowledged writes the other
    // lacks since: its data wins the next handshake. Cleared once the two are in sync.
    bool fenced_peer = false;
    int32_t rate_per_mille = 1000;
    // One life of the process.
    bool up = true;
    uint64_t life = 0;
    int64_t clock_offset_ms = 0;
    std::unique_ptr<quorum::QuorumNode> q;
    Role role = Role::kSecondary;
    bool candidate = false;
    bool outdated_pending = false;    // told Outdated while Primary
    uint64_t no_quorum_since_ms = 0;  // local, while Primary without quorum (0: has it)
    std::vector<uint64_t> pending;    // writes not acknowledged yet
    std::set<uint64_t> peer_acked;    // of those, the peer has
    bool syncing = false;             // a resync target
    bool data_connected = false;      // its own view of the link to the other data node
  };
  struct Conn {  // one of the three node pairs
    bool cut = false;
    bool connected = false;  // both ends up, and the handshake passed
    uint64_t epoch = 0;      // of the connection: messages of an older one are dropped
    bool down_seen[2] = {false, false};
    uint64_t last_delivery_ms[2] = {0, 0};  // in order per direction
  };

  uint64_t Local(int n) const;
  Conn& ConnOf(int a, int b);
  int ConnIndex(int a, int b) const;
  void At(uint64_t real_ms, std::function<void()> f);
  void Log(const std::string& line);
  bool IsData(int n) const { return n != kWitness; }
  quorum::LocalState LocalOf(int n);
  void UpdateLocal(int n);
  void Drain(int n);
  void Send(int from, int to, Wire w);
  void Deliver(int from, int to, const Wire& w);
  void TickNode(int n, uint64_t life);
  void Promoter(int n);
  void Promote(int n);
  void Demote(int n, const char* why);
  void ClientWrite(int n);
  void TryComplete(int n);
  void Cut(int a, int b);
  void Heal(int a, int b);
  void DetectDown(int a, int b, int side, uint64_t life);
  void TryConnect(int a, int b);
  void Handshake(int a, int b);
  void StartResync(int src, int dst, uint64_t conn_epoch);
  void Crash(int n);
  void Restart(int n);
  void StartNode(int n);
  void CheckPrimaries();
  void Chaos();
  std::string Final();

  static constexpr int kWitness = 2;
  QuorumSimOptions options_;
  quorum::QuorumOptions qopt_;
  std::mt19937_64 rng_;
  uint64_t now_ms_ = 0;
  uint64_t seq_ = 0;
  using Event = std::pair<std::pair<uint64_t, uint64_t>, std::function<void()>>;
  struct Later {
    bool operator()(const Event& a, const Event& b) const { return a.first > b.first; }
  };
  std::priority_queue<Event, std::vector<Event>, Later> events_;
  Node nodes_[3];
  Conn conns_[3];
  uint64_t max_delay_ms_ = 20;
  uint64_t next_write_ = 1;
  uint64_t promotion_epoch_ = 0;
  std::set<uint64_t> acked_;
  std::string failure_;
  bool settling_ = false;
  bool settling_end_ = false;  // the client stopped writing, for the final comparison
  std::vector<std::string> log_;
  QuorumSimCounts counts_;
};

}  // namespace repld::qsim
