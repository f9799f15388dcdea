#include "quorum_world.h"

#include <algorithm>

namespace repld::qsim {

namespace {
const char* kNames[3] = {"alpha", "beta", "witness"};
}

QuorumWorld::QuorumWorld(const QuorumSimOptions& options) : options_(options), rng_(options.seed) {
  auto pick = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  };
  qopt_.members = 3;
  qopt_.witness = kWitness;
  qopt_.ping_interval_ms = pick(100, 1000);
  qopt_.lease_ms = qopt_.ping_interval_ms * pick(2, 4) + pick(0, 200);
  qopt_.startup_wait_ms = pick(0, 1) == 0 ? 0 : pick(0, 3000);
  // Mostly short delays; sometimes a congested link whose round trip takes most of what the
  // lease leaves after a ping interval. Longer delays would only keep quorum away (a lease
  // counts from the ping's sending), which the final check would report as a stuck cluster.
  max_delay_ms_ = pick(0, 4) == 0 ? (qopt_.lease_ms - qopt_.ping_interval_ms) * 2 / 5
                                  : std::max<uint64_t>(2, qopt_.ping_interval_ms / 4);
  Log("ping every " + std::to_string(qopt_.ping_interval_ms) + " ms, lease " +
      std::to_string(qopt_.lease_ms) + " ms, delays up to " + std::to_string(max_delay_ms_) +
      " ms, startup wait " + std::to_string(qopt_.startup_wait_ms) + " ms");
  for (int n = 0; n < 3; ++n) {
    const uint32_t d = options_.drift_per_mille;
    nodes_[n].rate_per_mille = static_cast<int32_t>(pick(1000 - d, 1000 + d));
    nodes_[n].clock_offset_ms = static_cast<int64_t>(pick(0, 1'000'000));
  }
}

uint64_t QuorumWorld::Local(int n) const {
  const Node& node = nodes_[n];
  return static_cast<uint64_t>(node.clock_offset_ms) + now_ms_ * node.rate_per_mille / 1000;
}

int QuorumWorld::ConnIndex(int a, int b) const { return a + b - 1; }  // 0-1: 0, 0-2: 1, 1-2: 2
QuorumWorld::Conn& QuorumWorld::ConnOf(int a, int b) { return conns_[ConnIndex(a, b)]; }

void QuorumWorld::At(uint64_t real_ms, std::function<void()> f) {
  events_.push({{real_ms, seq_++}, std::move(f)});
}

void QuorumWorld::Log(const std::string& line) {
  log_.push_back(std::to_string(now_ms_) + " " + line);
}

quorum::LocalState QuorumWorld::LocalOf(int n) {
  const Node& node = nodes_[n];
  const Node& other = nodes_[1 - n];
  return {.role = node.role,
          .disk = node.disk_state,
          .data_peer_connected = node.data_connected,
          .data_peer_disk = node.data_connected ? other.disk_state : DiskState::kDiskless};
}

void QuorumWorld::UpdateLocal(int n) {
  if (!nodes_[n].up || !IsData(n)) return;
  nodes_[n].q->SetLocal(LocalOf(n), Local(n));
  Drain(n);
}

void QuorumWorld::Drain(int n) {
  Node& node = nodes_[n];
  for (;;) {
    std::vector<quorum::Action> actions = node.q->TakeActions();
    if (actions.empty()) return;
    for (quorum::Action& a : actions) {
      if (auto* s = std::get_if<quorum::Send>(&a)) {
        Send(n, s->to, s->message);
      } else if (auto* p = std::get_if<quorum::PersistOutdated>(&a)) {
        node.outdated_mask = p->mask;
        Log(std::string(kNames[n]) + " persists Outdated mask " + std::to_string(p->mask));
      } else if (auto* qc = std::get_if<quorum::QuorumChanged>(&a)) {
        Log(std::string(kNames[n]) + (qc->quorum ? " has quorum" : " lost quorum"));
      } else if (auto* c = std::get_if<quorum::CandidacyDone>(&a)) {
        node.candidate = false;
        if (!c->won) {
          ++counts_.refusals;
          Log(std::string(kNames[n]) + " lost the vote: " + c->reason);
        } else if (node.role == Role::kSecondary && node.disk_state == DiskState::kUpToDate &&
                   (!node.data_connected || nodes_[1 - n].role == Role::kSecondary)) {
          // Connected by now to a Primary peer, the replica's own promotion would be refused
          // (the peer agrees first: replica_promote.cc), so the vote won is given up.
          Promote(n);
        } else {
          node.q->Abandon();
        }
      } else if (std::holds_alternative<quorum::PeerFenced>(a)) {
        ++counts_.fences;
        node.fenced_peer = true;  // persisted before any write it lets through
        Log(std::string(kNames[n]) + " fenced its peer");
      } else if (std::holds_alternative<quorum::BecomeOutdated>(a)) {
        ++counts_.outdated_notices;
        Log(std::string(kNames[n]) + " is told it is Outdated");
        if (node.role == Role::kPrimary) {
          node.outdated_pending = true;
        } else if (node.disk_state == DiskState::kUpToDate) {
          node.disk_state = DiskState::kOutdated;
          node.q->SetLocal(LocalOf(n), Local(n));
        }
      }
    }
  }
}

void QuorumWorld::Send(int from, int to, Wire w) {
  Conn& c = ConnOf(from, to);
  if (!c.connected || c.cut) return;  // lost with the connection
  const int dir = from < to ? 0 : 1;
  const uint64_t t =
      std::max(now_ms_ + std::uniform_int_distribution<uint64_t>(1, max_delay_ms_)(rng_),
               c.last_delivery_ms[dir]);
  c.last_delivery_ms[dir] = t;
  const uint64_t epoch = c.epoch;
  At(t, [this, from, to, epoch, w = std::move(w)] {
    Conn& cc = ConnOf(from, to);
    if (cc.epoch != epoch || !cc.connected || cc.cut) return;
    Deliver(from, to, w);
  });
}

void QuorumWorld::Deliver(int from, int to, const Wire& w) {
  Node& node = nodes_[to];
  if (const auto* m = std::get_if<quorum::Message>(&w)) {
    node.q->Receive(static_cast<NodeId>(from), *m, Local(to));
    Drain(to);
  } else if (const auto* d = std::get_if<DataMsg>(&w)) {
    node.disk.insert(d->write);
    node.epoch = std::max(node.epoch, d->epoch);
    Send(to, from, AckMsg{d->write});
  } else if (const auto* a = std::get_if<AckMsg>(&w)) {
    if (std::find(node.pending.begin(), node.pending.end(), a->write) != node.pending.end()) {
      node.peer_acked.insert(a->write);
    }
  }
  if (IsData(to)) TryComplete(to);
  CheckPrimaries();
}

void QuorumWorld::StartNode(int n) {
  Node& node = nodes_[n];
  quorum::QuorumOptions o = qopt_;
  o.self = static_cast<NodeId>(n);
  node.q = std::make_unique<quorum::QuorumNode>(o, node.outdated_mask, Local(n));
  ++node.life;
  UpdateLocal(n);
  const uint64_t life = node.life;
  At(now_ms_ + 1, [this, n, life] { TickNode(n, life); });
}

void QuorumWorld::TickNode(int n, uint64_t life) {
  Node& node = nodes_[n];
  if (!node.up || node.life != life) return;
  node.q->Tick(Local(n));
  Drain(n);
  if (IsData(n)) {
    Promoter(n);
    if (node.role == Role::kPrimary && !settling_end_) ClientWrite(n);
    TryComplete(n);
  }
  CheckPrimaries();
  const uint64_t step = std::uniform_int_distribution<uint64_t>(
      std::max<uint64_t>(1, qopt_.ping_interval_ms / 8), qopt_.ping_interval_ms / 3)(rng_);
  At(now_ms_ + step, [this, n, life] { TickNode(n, life); });
}

void QuorumWorld::Promoter(int n) {
  Node& node = nodes_[n];
  const uint64_t local = Local(n);
  if (node.role == Role::kPrimary) {
    if (node.q->HasQuorum(local)) {
      node.no_quorum_since_ms = 0;
    } else if (node.no_quorum_since_ms == 0) {
      node.no_quorum_since_ms = local;
    } else if (local - node.no_quorum_since_ms > 2 * qopt_.lease_ms) {
      ++counts_.demotions_without_quorum;
      Demote(n, "no quorum");
    }
    if (!settling_ && std::uniform_int_distribution<int>(0, 2000)(rng_) == 0) {
      Demote(n, "switchover");
    }
    return;
  }
  if (node.candidate || node.syncing) return;
  const Node& other = nodes_[1 - n];
  if (!settling_ && node.data_connected && other.up && other.data_connected &&
      other.role == Role::kSecondary && node.disk_state == DiskState::kUpToDate &&
      std::uniform_int_distribution<int>(0, 3000)(rng_) == 0) {
    // Promoted through the replica's own agreement with its connected peer, not a vote: it
    // must start without quorum and earn it only from voters that back it then.
    ++counts_.promotions_without_vote;
    Log(std::string(kNames[n]) + " is promoted without a vote");
    Promote(n);
    return;
  }
  if (!node.q->WhyNotCandidate(local).empty()) return;
  if (std::uniform_int_distribution<int>(0, 2)(rng_) != 0) return;  // jitter: not in lockstep
  node.candidate = true;
  Log(std::string(kNames[n]) + " stands as candidate");
  node.q->StartCandidacy(local);
  Drain(n);
}

void QuorumWorld::Promote(int n) {
  Node& node = nodes_[n];
  for (uint64_t w : acked_) {
    if (!node.disk.contains(w) && failure_.empty()) {
      failure_ = std::string(kNames[n]) + " became Primary without acknowledged write " +
                 std::to_string(w);
    }
  }
  node.role = Role::kPrimary;
  node.epoch = ++promotion_epoch_;
  node.no_quorum_since_ms = 0;
  node.pending.clear();
  node.peer_acked.clear();
  ++counts_.promotions;
  if (!node.data_connected) ++counts_.promotions_fenced;
  Log(std::string(kNames[n]) + " is Primary, epoch " + std::to_string(node.epoch));
  UpdateLocal(n);
  CheckPrimaries();
}

void QuorumWorld::Demote(int n, const char* why) {
  Node& node = nodes_[n];
  node.role = Role::kSecondary;
  node.pending.clear();  // failed: never acknowledged
  node.peer_acked.clear();
  node.no_quorum_since_ms = 0;
  if (node.outdated_pending && node.disk_state == DiskState::kUpToDate) {
    node.disk_state = DiskState::kOutdated;
  }
  node.outdated_pending = false;
  node.q->Abandon();
  Log(std::string(kNames[n]) + " demotes: " + why);
  UpdateLocal(n);
}

void QuorumWorld::ClientWrite(int n) {
  Node& node = nodes_[n];
  if (node.pending.size() >= 64) return;  // the client waits: bounded like max_buffers
  const uint64_t w = next_write_++;
  node.disk.insert(w);
  node.pending.push_back(w);
  if (node.data_connected) Send(n, 1 - n, DataMsg{w, node.epoch});
}

void QuorumWorld::TryComplete(int n) {
  Node& node = nodes_[n];
  if (!node.up || node.role != Role::kPrimary || node.pending.empty()) return;
  if (!node.q->HasQuorum(Local(n))) return;  // held: suspend-io
  const bool fenced = !node.data_connected && (node.q->PeerSafe() || options_.ack_without_fence);
  std::vector<uint64_t> still;
  for (uint64_t w : node.pending) {
    if (node.peer_acked.contains(w) || fenced) {
      acked_.insert(w);
      ++counts_.writes_acked;
    } else {
      still.push_back(w);
    }
  }
  node.pending.swap(still);
}

void QuorumWorld::CheckPrimaries() {
  int with_quorum = 0;
  for (int n = 0; n < 2; ++n) {
    const Node& node = nodes_[n];
    with_quorum += node.up && node.role == Role::kPrimary && node.q->HasQuorum(Local(n));
  }
  if (with_quorum > 1 && failure_.empty()) failure_ = "two Primaries with quorum";
}

}  // namespace repld::qsim
