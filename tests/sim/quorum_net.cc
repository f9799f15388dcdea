// The quorum world's network and faults: connections and their handshake, cuts, heals, flaps,
// crashes and restarts, the chaos phase, and the final check (quorum_world.h).
#include <algorithm>

#include "quorum_world.h"

namespace repld::qsim {

namespace {
const char* kNames[3] = {"alpha", "beta", "witness"};
}

void QuorumWorld::TryConnect(int a, int b) {
  if (a > b) std::swap(a, b);
  Conn& c = ConnOf(a, b);
  if (c.connected || c.cut || !nodes_[a].up || !nodes_[b].up) return;  // Heal, Restart retry
  if (!c.down_seen[0] || !c.down_seen[1]) {  // an end still holds the old connection
    At(now_ms_ + 100, [this, a, b] { TryConnect(a, b); });
    return;
  }
  if (IsData(a) && IsData(b)) {
    Handshake(a, b);
    return;
  }
  c.connected = true;
  ++c.epoch;
  c.down_seen[0] = c.down_seen[1] = false;
  for (int side = 0; side < 2; ++side) {
    const int x = side == 0 ? a : b, y = side == 0 ? b : a;
    nodes_[x].q->LinkUp(static_cast<NodeId>(y), Local(x));
    Drain(x);
  }
  CheckPrimaries();
}

void QuorumWorld::Handshake(int a, int b) {
  Node& A = nodes_[a];
  Node& B = nodes_[b];
  Conn& c = ConnOf(a, b);
  int src = -1;
  bool refuse = false;
  const bool equal = A.disk == B.disk;
  auto contains = [](const std::set<uint64_t>& x, const std::set<uint64_t>& y) {
    return std::includes(x.begin(), x.end(), y.begin(), y.end());
  };
  const bool outdated_vs_current =
      (A.disk_state == DiskState::kOutdated && B.disk_state == DiskState::kUpToDate) ||
      (B.disk_state == DiskState::kOutdated && A.disk_state == DiskState::kUpToDate);
  if (A.role == Role::kPrimary && B.role == Role::kPrimary) {
    refuse = true;
  } else if (A.fenced_peer != B.fenced_peer) {
    // The node that fenced the other has every acknowledged write; the other acknowledged
    // nothing since (its own promotion, if any, could not fence it at a majority).
    src = A.fenced_peer ? a : b;
  } else if (A.fenced_peer && B.fenced_peer) {
    if (failure_.empty()) failure_ = "each data node fenced the other";
  } else if (outdated_vs_current) {
    // The voters recorded the Outdated one behind (the other's fence): whatever it holds beyond
    // the other, even from a later promotion of its own, was never acknowledged (it could not
    // fence the other at a majority, which then could not have marked it).
    src = A.disk_state == DiskState::kUpToDate ? a : b;
  } else if (A.role == Role::kPrimary || B.role == Role::kPrimary) {
    const int x = A.role == Role::kPrimary ? a : b;
    const int y = a + b - x;
    if (nodes_[x].epoch < nodes_[y].epoch) {
      refuse = true;  // a deposed Primary behind: split brain, not connected
    } else if (!equal || nodes_[y].disk_state != DiskState::kUpToDate) {
      src = x;
    }
  } else if (A.disk_state == DiskState::kInconsistent || B.disk_state == DiskState::kInconsistent) {
    if (A.disk_state != DiskState::kInconsistent) src = a;
    if (B.disk_state != DiskState::kInconsistent) src = b;
  } else if (A.epoch != B.epoch) {
    src = A.epoch > B.epoch ? a : b;
  } else if (!equal) {
    if (contains(A.disk, B.disk)) {
      src = a;
    } else if (contains(B.disk, A.disk)) {
      src = b;
    } else if (failure_.empty()) {
      failure_ = "the data nodes diverged within one epoch";
    }
  }
  // A Primary is never a sync target (sync_decision's kRefuse): the deposed one demotes first.
  if (src >= 0 && nodes_[a + b - src].role == Role::kPrimary) refuse = true;
  if (refuse) {
    ++counts_.refused_handshakes;
    Log("handshake refused: split brain");
    At(now_ms_ + 500, [this, a, b] { TryConnect(a, b); });
    return;
  }
  c.connected = true;
  ++c.epoch;
  c.down_seen[0] = c.down_seen[1] = false;
  A.data_connected = B.data_connected = true;
  if (src < 0 && equal) {
    for (Node* n : {&A, &B}) {
      n->fenced_peer = false;
      if (n->disk_state == DiskState::kOutdated) n->disk_state = DiskState::kUpToDate;
      if (n->role == Role::kPrimary) n->peer_acked.insert(n->pending.begin(), n->pending.end());
    }
  }
  Log(std::string("connected") + (src >= 0 ? std::string(", source ") + kNames[src] : ""));
  for (int side = 0; side < 2; ++side) {
    const int x = side == 0 ? a : b, y = side == 0 ? b : a;
    nodes_[x].q->LinkUp(static_cast<NodeId>(y), Local(x));
    Drain(x);
  }
  if (src >= 0) StartResync(src, a + b - src, c.epoch);
  UpdateLocal(a);
  UpdateLocal(b);
  CheckPrimaries();
}

void QuorumWorld::StartResync(int src, int dst, uint64_t conn_epoch) {
  nodes_[dst].syncing = true;
  nodes_[dst].disk_state = DiskState::kInconsistent;
  ++counts_.resyncs;
  const uint64_t t = now_ms_ + std::uniform_int_distribution<uint64_t>(50, 1500)(rng_);
  At(t, [this, src, dst, conn_epoch] {
    const Conn& c = ConnOf(src, dst);
    if (c.epoch != conn_epoch || !c.connected) return;
    Node& s = nodes_[src];
    Node& d = nodes_[dst];
    d.disk = s.disk;
    d.epoch = s.epoch;
    d.disk_state = DiskState::kUpToDate;
    d.syncing = false;
    // An Outdated source only ever meets an Inconsistent target: its mark is older than the
    // data it holds (no Primary could have gone on writing without it since), so the two now
    // hold the newest data there is.
    if (s.disk_state == DiskState::kOutdated) s.disk_state = DiskState::kUpToDate;
    s.fenced_peer = d.fenced_peer = false;  // in sync again
    if (s.role == Role::kPrimary) s.peer_acked.insert(s.pending.begin(), s.pending.end());
    Log(std::string(kNames[dst]) + " resynced from " + kNames[src]);
    UpdateLocal(src);
    UpdateLocal(dst);
    TryComplete(src);
    CheckPrimaries();
  });
}

void QuorumWorld::Cut(int a, int b) {
  if (a > b) std::swap(a, b);
  Conn& c = ConnOf(a, b);
  if (c.cut) return;
  c.cut = true;
  ++counts_.cuts;
  Log(std::string("cut ") + kNames[a] + "-" + kNames[b]);
  if (!c.connected) return;
  c.connected = false;
  ++c.epoch;
  for (int side = 0; side < 2; ++side) {
    const int x = side == 0 ? a : b;
    if (!nodes_[x].up) continue;
    const uint64_t life = nodes_[x].life;
    const uint64_t t =
        now_ms_ + std::uniform_int_distribution<uint64_t>(0, 2 * qopt_.lease_ms)(rng_);
    At(t, [this, a, b, side, life] { DetectDown(a, b, side, life); });
  }
}

void QuorumWorld::Heal(int a, int b) {
  if (a > b) std::swap(a, b);
  Conn& c = ConnOf(a, b);
  if (!c.cut) return;
  c.cut = false;
  Log(std::string("heal ") + kNames[a] + "-" + kNames[b]);
  At(now_ms_ + std::uniform_int_distribution<uint64_t>(10, 500)(rng_),
     [this, a, b] { TryConnect(a, b); });
}

void QuorumWorld::DetectDown(int a, int b, int side, uint64_t life) {
  const int x = side == 0 ? a : b, y = side == 0 ? b : a;
  Node& node = nodes_[x];
  if (!node.up || node.life != life) return;
  ConnOf(a, b).down_seen[side] = true;
  node.q->LinkDown(static_cast<NodeId>(y), Local(x));
  Drain(x);
  if (IsData(x) && IsData(y)) {
    node.data_connected = false;
    node.syncing = false;  // an unfinished resync leaves it Inconsistent
    UpdateLocal(x);
    TryComplete(x);
  }
  CheckPrimaries();
  At(now_ms_ + 50, [this, a, b] { TryConnect(a, b); });
}

void QuorumWorld::Crash(int n) {
  Node& node = nodes_[n];
  if (!node.up) return;
  node.up = false;
  node.q.reset();
  node.role = Role::kSecondary;
  node.candidate = node.syncing = node.data_connected = node.outdated_pending = false;
  node.pending.clear();
  node.peer_acked.clear();
  ++counts_.crashes;
  Log(std::string(kNames[n]) + " crashes");
  for (int m = 0; m < 3; ++m) {
    if (m == n) continue;
    const int a = std::min(n, m), b = std::max(n, m);
    Conn& c = ConnOf(a, b);
    c.down_seen[n == a ? 0 : 1] = true;
    if (!c.connected) continue;
    c.connected = false;
    ++c.epoch;
    if (!nodes_[m].up) continue;
    const uint64_t life = nodes_[m].life;
    // A process killed resets its connections at once; a power loss leaves them to time out.
    const uint64_t t =
        now_ms_ + (std::uniform_int_distribution<int>(0, 1)(rng_) == 0
                       ? 1
                       : std::uniform_int_distribution<uint64_t>(0, 2 * qopt_.lease_ms)(rng_));
    const int side = m == a ? 0 : 1;
    At(t, [this, a, b, side, life] { DetectDown(a, b, side, life); });
  }
}

void QuorumWorld::Restart(int n) {
  Node& node = nodes_[n];
  if (node.up) return;
  node.up = true;
  node.clock_offset_ms = std::uniform_int_distribution<int64_t>(0, 1'000'000)(rng_);
  Log(std::string(kNames[n]) + " starts");
  StartNode(n);
  for (int m = 0; m < 3; ++m) {
    if (m == n) continue;
    At(now_ms_ + std::uniform_int_distribution<uint64_t>(10, 300)(rng_),
       [this, n, m] { TryConnect(n, m); });
  }
}

void QuorumWorld::Chaos() {
  if (settling_) return;
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); };
  static constexpr int kPairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  const int r = pick(0, 99);
  const int p = pick(0, 2);
  const int a = kPairs[p][0], b = kPairs[p][1];
  if (r < 28) {
    Cut(a, b);
  } else if (r < 50) {
    Heal(a, b);
  } else if (r < 64) {
    const int n = pick(0, 2);
    int down = 0;
    for (const Node& x : nodes_) down += !x.up;
    if (down < 2) {
      Crash(n);
      At(now_ms_ + std::uniform_int_distribution<uint64_t>(200, 8000)(rng_),
         [this, n] { Restart(n); });
    }
  } else if (r < 76) {  // a flap
    Cut(a, b);
    At(now_ms_ + std::uniform_int_distribution<uint64_t>(20, 2 * qopt_.lease_ms)(rng_),
       [this, a, b] { Heal(a, b); });
  } else if (r < 88) {  // one node cut from both others
    const int n = pick(0, 2);
    for (int m = 0; m < 3; ++m) {
      if (m != n) Cut(n, m);
    }
  } else if (r < 94) {
    for (const auto& pr : kPairs) Heal(pr[0], pr[1]);
  } else {
    for (const auto& pr : kPairs) Cut(pr[0], pr[1]);
  }
  At(now_ms_ + std::uniform_int_distribution<uint64_t>(200, 4000)(rng_), [this] { Chaos(); });
}

std::string QuorumWorld::Final() {
  if (!failure_.empty()) return failure_;
  std::string state;
  int primaries = 0, primary = -1;
  for (int n = 0; n < 2; ++n) {
    const Node& node = nodes_[n];
    state += std::string(" ") + kNames[n] + ": " + RoleName(node.role) + " " +
             DiskStateName(node.disk_state) + (node.data_connected ? " connected" : "") + " (" +
             node.q->WhyNotCandidate(Local(n)) + ")";
    if (node.role == Role::kPrimary && node.q->HasQuorum(Local(n))) {
      ++primaries;
      primary = n;
    }
  }
  if (primaries != 1) return "after healing, " + std::to_string(primaries) + " Primaries;" + state;
  const Node& p = nodes_[primary];
  const Node& s = nodes_[1 - primary];
  if (!p.pending.empty()) return "writes still held after healing;" + state;
  if (!s.data_connected || s.disk_state != DiskState::kUpToDate || s.disk != p.disk) {
    return "the data nodes did not converge;" + state;
  }
  for (uint64_t w : acked_) {
    if (!p.disk.contains(w)) return "acknowledged write " + std::to_string(w) + " lost";
  }
  if (nodes_[kWitness].outdated_mask != 0) {
    return "the witness still holds a node Outdated (mask " +
           std::to_string(nodes_[kWitness].outdated_mask) + ");" + state;
  }
  return "";
}

std::string QuorumWorld::Run() {
  for (Conn& c : conns_) c.down_seen[0] = c.down_seen[1] = true;
  for (int n = 0; n < 3; ++n) StartNode(n);
  static constexpr int kPairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  for (const auto& pr : kPairs) {
    At(std::uniform_int_distribution<uint64_t>(0, 300)(rng_),
       [this, a = pr[0], b = pr[1]] { TryConnect(a, b); });
  }
  At(std::uniform_int_distribution<uint64_t>(1000, 5000)(rng_), [this] { Chaos(); });
  At(options_.chaos_ms, [this] {
    settling_ = true;
    Log("settle: every link heals, every node starts");
    for (const auto& pr : kPairs) Heal(pr[0], pr[1]);
    for (int n = 0; n < 3; ++n) Restart(n);
    for (const auto& pr : kPairs) TryConnect(pr[0], pr[1]);
  });
  const uint64_t end = options_.chaos_ms + options_.settle_ms;
  At(end - 10'000, [this] { settling_end_ = true; });
  while (!events_.empty() && failure_.empty()) {
    auto [key, f] = events_.top();
    events_.pop();
    if (key.first > end) break;
    now_ms_ = key.first;
    f();
  }
  return Final();
}

}  // namespace repld::qsim
