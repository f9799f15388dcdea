#include "sim_world.h"

#include <algorithm>
#include <sstream>

namespace repld::sim {

void SimDisk::Write(uint64_t offset, const std::vector<uint64_t>& versions, bool fua) {
  for (size_t i = 0; i < versions.size(); ++i) {
    cache[offset / kBlock + i] = versions[i];
    if (fua) durable[offset / kBlock + i] = versions[i];
  }
}

void SimDisk::Crash(std::mt19937_64& rng) {
  for (size_t b = 0; b < cache.size(); ++b) {
    if (cache[b] != durable[b] && (rng() & 1)) cache[b] = durable[b];
  }
  durable = cache;
}

World::World(SimOptions options) : options_(options), rng_(options.seed) {
  blocks_ = options_.data_bytes / kBlock;
  acked_.assign(blocks_, 0);
  durable_.assign(blocks_, 0);
  for (int i = 0; i < 2; ++i) {
    auto n = std::make_unique<Node>(blocks_);
    n->index = i;
    // [disk] on_io_error per world: node 1 either way; node 0 (the Primary) only pass_on or
    // detach without faults (a Primary's failed disk under detach is not modelled).
    const uint64_t bit = i == 0 ? (options_.seed >> 2) & 1 : (options_.seed >> 1) & 1;
    n->on_io_error = bit != 0 ? OnIoError::kPassOn : OnIoError::kDetach;
    n->al_on_disk.assign(options_.al_extents, kAlEmpty);
    n->bitmap_on_disk.emplace(options_.data_bytes);
    nodes_.push_back(std::move(n));
    MakeReplica(*nodes_.back());
  }
}

void World::MakeReplica(Node& n) {
  ReplicaOptions o;
  o.node_name = n.index == 0 ? "alpha" : "beta";
  o.peer_name = n.index == 0 ? "beta" : "alpha";
  o.data_bytes = options_.data_bytes;
  o.protocol = options_.protocol;
  o.max_buffers = options_.max_buffers;
  o.resync_window = 4;
  o.resync_checksums = options_.seed % 2 == 1;  // half the worlds resync by digests first
  o.on_io_error = n.on_io_error;
  o.seed = options_.seed * 2 + static_cast<uint64_t>(n.index) + n.incarnation * 1000;
  n.replica = std::make_unique<Replica>(
      o, n.md_on_disk, ActivityLog(n.al_on_disk, n.al_seq_on_disk), *n.bitmap_on_disk);
  n.frames.clear();
  n.resync_reads.clear();
  n.csum_frames.clear();
  n.client_writes.clear();
  n.client_reads.clear();
  n.peer_reads.clear();
  Drain(n.index);
}

void World::At(Clock when, int node, std::function<void()> fn) {
  const uint64_t inc = node >= 0 ? nodes_[static_cast<size_t>(node)]->incarnation : 0;
  events_.push(Event{when, event_seq_++, node, inc, std::move(fn)});
}

bool World::Step() {
  if (events_.empty() || !failure_.empty()) return false;
  Event e = events_.top();
  events_.pop();
  now_ = e.when;
  if (e.node >= 0) {
    const Node& n = *nodes_[static_cast<size_t>(e.node)];
    if (!n.up || n.incarnation != e.incarnation) return true;
  }
  e.fn();
  CheckRoles();
  return true;
}

void World::CheckRoles() {
  for (const auto& n : nodes_) {
    if (!n->up) continue;
    if (const std::string broken = n->replica->CheckInvariants(); !broken.empty()) {
      return Fail("node" + std::to_string(n->index) + ": " + broken);
    }
  }
  for (const auto& n : nodes_) {
    if (!n->up || n->replica->role() != Role::kPrimary ||
        n->replica->conn() != ConnState::kConnected) {
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
    if (!n->up) {
      out << "node" << n->index << " down; ";
      continue;
    }
    const ReplicaStatus s = n->replica->Report();
    out << "node" << n->index << " " << RoleName(s.role) << "/" << DiskStateName(s.disk) << "/"
        << ConnStateName(s.conn) << "/" << ReplStateName(s.repl) << " oos=" << s.out_of_sync_bytes
        << " pending=" << s.pending << "; ";
  }
  return out.str();
}

void World::Drain(int index) {
  Node& n = *nodes_[static_cast<size_t>(index)];
  for (int rounds = 0; n.up && rounds < 1000; ++rounds) {
    std::vector<Action> actions = n.replica->TakeActions();
    if (actions.empty()) return;
    for (Action& a : actions) Execute(n, a);
  }
}

void World::Execute(Node& n, Action& action) {
  const int i = n.index;
  Replica& r = *n.replica;
  auto later = [&](Clock lo, Clock hi, std::function<void()> fn) {
    After(Rand(lo, hi), i, [this, i, fn = std::move(fn)] {
      fn();
      Drain(i);
    });
  };
  std::visit(
      [&](auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, SubmitWrite>) {
          later(20, 400, [this, &n, id = a.id] {
            const Node::ClientWrite& w = n.client_writes.at(id);
            if (n.replica->role() == Role::kPrimary) {
              if (const int e = InjectedError(n, counts_.primary_write_errors); e != 0) {
                n.replica->LocalWriteDone(id, e);  // the block keeps what it had
                return;
              }
            }
            n.disk.Write(w.offset, std::vector<uint64_t>(w.length / kBlock, w.version), w.fua);
            n.replica->LocalWriteDone(id, 0);
          });
        } else if constexpr (std::is_same_v<T, SubmitRead>) {
          later(20, 200, [&n, id = a.id] {
            if (auto it = n.client_reads.find(id); it != n.client_reads.end()) {
              it->second.result = n.disk.Read(it->second.offset, it->second.length);
            }
            n.replica->LocalReadDone(id, 0);
          });
        } else if constexpr (std::is_same_v<T, SubmitFlush>) {
          later(100, 800, [this, &n, t = a.token] {
            if (n.replica->role() != Role::kPrimary) {  // a Secondary flushes for the peer only
              if (const int e = InjectedError(n, counts_.flush_errors); e != 0) {
                n.replica->LocalFlushDone(t, e);  // the cache keeps it, but nothing is durable
                return;
              }
            }
            n.disk.Flush();
            n.replica->LocalFlushDone(t, 0);
          });
        } else if constexpr (std::is_same_v<T, SendData>) {
          const Node::ClientWrite& w = n.client_writes.at(a.id);
          Frame f;
          f.type = Frame::Type::kData;
          f.seq = a.seq;
          f.offset = w.offset;
          f.length = w.length;
          f.fua = w.fua;
          f.kind = w.kind;
          f.versions.assign(w.length / kBlock, w.version);
          Send(i, std::move(f));
          later(5, 50, [&n, seq = a.seq] { n.replica->PeerSent(seq); });
        } else if constexpr (std::is_same_v<T, SendFlush>) {
          Frame f;
          f.type = Frame::Type::kFlush;
          f.seq = a.seq;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, ApplyPeerWrite>) {
          if (n.frames.count(a.key) == 0) {
            Fail("node" + std::to_string(i) + " asked to apply frame key " + std::to_string(a.key) +
                 ", which it never received or already applied");
            return;
          }
          later(20, 400, [this, &n, key = a.key] {
            const Frame f = n.frames.at(key);
            n.frames.erase(key);
            if (const int e =
                    InjectedError(n, f.resync ? counts_.resync_write_errors : counts_.apply_errors);
                e != 0) {
              n.replica->ApplyDone(key, e);  // the block keeps what it had
              return;
            }
            n.disk.Write(f.offset, f.versions, f.fua);
            n.replica->ApplyDone(key, 0);
          });
        } else if constexpr (std::is_same_v<T, SendAck>) {
          Frame f;
          f.type = Frame::Type::kAck;
          f.ack = a.kind;
          f.seq = a.seq;
          f.error = a.error;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, ResyncRead>) {
          later(20, 400, [&n, a] {
            Frame f;
            f.type = Frame::Type::kData;
            f.resync = true;
            f.offset = a.offset_bytes;
            f.length = a.length_bytes;
            f.versions = n.disk.Read(a.offset_bytes, a.length_bytes);
            n.resync_reads[a.token] = std::move(f);
            n.replica->ResyncReadDone(a.token, 0);
          });
        } else if constexpr (std::is_same_v<T, SendResync>) {
          auto it = n.resync_reads.find(a.token);
          if (it == n.resync_reads.end()) {
            Fail("SendResync for a block that was not read");
            return;
          }
          Frame f = std::move(it->second);
          n.resync_reads.erase(it);
          f.seq = a.seq;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, SendReadRequest>) {
          Frame f;
          f.type = Frame::Type::kReadRequest;
          f.seq = a.seq;
          f.offset = a.offset_bytes;
          f.length = a.length_bytes;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, ReadForPeer>) {
          later(20, 200, [&n, a] {
            n.peer_reads.at(a.key).versions = n.disk.Read(a.offset_bytes, a.length_bytes);
            n.replica->ReadForPeerDone(a.key, 0);
          });
        } else if constexpr (std::is_same_v<T, SendReadReply>) {
          auto it = n.peer_reads.find(a.key);
          if (a.send) {
            Frame f;
            f.type = Frame::Type::kReadReply;
            f.seq = a.seq;
            f.error = a.error;
            if (it != n.peer_reads.end()) f.versions = it->second.versions;
            Send(i, std::move(f));
          }
          if (it != n.peer_reads.end()) n.peer_reads.erase(it);
          r.ReadReplySent(a.key);  // the frame owns its copy: the buffer is free at once
        } else if constexpr (std::is_same_v<T, Complete>) {
          if (auto f = flushes_.find(a.id); f != flushes_.end()) {
            if (a.error == 0) {
              for (uint64_t b = 0; b < blocks_; ++b) {
                durable_[b] = std::max(durable_[b], f->second[b]);
              }
            }
            flushes_.erase(f);
          }
          if (n.client_reads.count(a.id) != 0) {
            CheckRead(i, a.id, a.error);
            --client_inflight_;
            ScheduleClient();
            return;
          }
          auto it = n.client_writes.find(a.id);
          if (it != n.client_writes.end()) {
            if (failback_phase_) NoteWriteDone(it->second, a.error == 0);
            if (a.error == 0) {
              for (uint64_t b = it->second.offset / kBlock;
                   b < (it->second.offset + it->second.length) / kBlock; ++b) {
                acked_[b] = std::max(acked_[b], it->second.version);
                if (it->second.fua) durable_[b] = std::max(durable_[b], it->second.version);
              }
              ++acked_writes_;
              if (it->second.kind != WriteKind::kData) ++counts_.trims;
            }
            // The payload stays until the request is gone from the replica: SendData copies it.
            n.client_writes.erase(it);
          }
          --client_inflight_;
          ScheduleClient();
        } else if constexpr (std::is_same_v<T, WriteAl>) {
          // A transaction may take an extent out of the log: the writes to it must be durable
          // first (the daemon's FUA write of the log flushes the data file with it).
          n.disk.Flush();
          later(20, 300, [&n, plan = a.plan] {
            n.bitmap_on_disk = n.replica->bitmap();
            n.al_on_disk = plan.table;
            n.al_seq_on_disk = plan.seq;
            n.replica->AlWritten(plan.seq, 0);
          });
        } else if constexpr (std::is_same_v<T, PersistMd>) {
          if (n.md_on_disk.primary && !a.md.primary) n.disk.Flush();  // PersistMd's contract
          n.md_on_disk = a.md;
        } else if constexpr (std::is_same_v<T, PersistBitmap>) {
          n.bitmap_on_disk = r.bitmap();
        } else if constexpr (std::is_same_v<T, SendState>) {
          Frame f;
          f.type = Frame::Type::kState;
          f.state = a.state;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, SendCsums>) {
          auto it = n.resync_reads.find(a.token);
          if (it == n.resync_reads.end()) return Fail("SendCsums for a block that was not read");
          Frame f = std::move(it->second);  // the block's versions stand for its digests
          n.resync_reads.erase(it);
          f.type = Frame::Type::kCsums;
          f.seq = a.seq;
          f.fua = a.verify;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, CompareCsums>) {
          later(20, 400, [&n, key = a.key] {
            const Frame f = n.csum_frames.at(key);
            n.csum_frames.erase(key);
            std::vector<OutOfSyncRun> differing;
            for (size_t b = 0; b < f.versions.size(); ++b) {
              if (n.disk.cache[f.offset / kBlock + b] == f.versions[b]) continue;
              const uint64_t offset = f.offset + b * kBlock;
              if (!differing.empty() &&
                  differing.back().offset_bytes + differing.back().length_bytes == offset) {
                differing.back().length_bytes += kBlock;
              } else {
                differing.push_back({offset, kBlock});
              }
            }
            n.replica->CsumsCompared(key, differing, 0);
          });
        } else if constexpr (std::is_same_v<T, SendCsumReply>) {
          Frame f;
          f.type = Frame::Type::kCsumReply;
          f.seq = a.seq;
          f.runs = a.differing;
          f.error = a.error;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, SendOutOfSync>) {
          Frame f;
          f.type = Frame::Type::kOutOfSync;
          f.runs = a.runs;
          f.fua = a.last;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, DropPeer>) {
          if (!a.reconnect && !split_phase_ && !n.detaching) {
            Fail("node" + std::to_string(i) + " refused the peer: " + a.reason);
          }
          if (!a.reconnect && !n.detaching) refusals_[i].push_back(a.reason);
          After(0, -1, [this, reason = a.reason] { Disconnect(reason); });
        } else if constexpr (std::is_same_v<T, SendPromoteRequest>) {
          Frame f;
          f.type = Frame::Type::kPromoteRequest;
          f.seq = a.token;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, SendPromoteReply>) {
          Frame f;
          f.type = Frame::Type::kPromoteReply;
          f.seq = a.token;
          f.fua = a.granted;
          f.reason = a.reason;
          Send(i, std::move(f));
        } else if constexpr (std::is_same_v<T, PromotionDone>) {
          n.promotion_done = a;
        } else if constexpr (std::is_same_v<T, DiskFailed>) {
          NoteDiskFailed(n, a);
        } else if constexpr (std::is_same_v<T, Log>) {
          log_.push_back(std::to_string(now_) + " node" + std::to_string(i) + ": " + a.text);
        }
      },
      action);
}

void World::Send(int from, Frame f) {
  if (!connected_) return;
  if (muted_from_ == from && mute_epoch_ == conn_epoch_) return;  // half-open: lost silently
  const int to = 1 - from;
  // In order per connection (TCP), with a random delay.
  Clock when = std::max(now_ + Rand(10, 300), last_delivery_[to]);
  last_delivery_[to] = when;
  const uint64_t epoch = conn_epoch_;
  At(when, to, [this, to, epoch, f = std::move(f)] {
    if (!connected_ || epoch != conn_epoch_) return;
    Deliver(to, f);
    Drain(to);
  });
}

void World::Deliver(int to, const Frame& f) {
  Node& n = *nodes_[static_cast<size_t>(to)];
  switch (f.type) {
    case Frame::Type::kData: {
      ++data_delivered_;
      const uint64_t key = next_key_++;
      n.frames.emplace(key, f);
      if (!n.replica->PeerData(key, f.seq, f.offset, f.length, f.kind, f.resync)) {
        n.frames.erase(key);
      }
      break;
    }
    case Frame::Type::kFlush:
      n.replica->PeerFlush(f.seq);
      break;
    case Frame::Type::kAck:
      n.replica->PeerAck(f.ack, f.seq, f.error);
      break;
    case Frame::Type::kState:
      n.replica->PeerStateChanged(f.state);
      break;
    case Frame::Type::kOutOfSync:
      n.replica->PeerOutOfSync(f.runs, f.fua);
      break;
    case Frame::Type::kCsums: {
      const uint64_t key = next_key_++;
      n.csum_frames.emplace(key, f);
      if (!n.replica->PeerCsums(key, f.seq, f.offset, f.length, f.fua)) n.csum_frames.erase(key);
      break;
    }
    case Frame::Type::kCsumReply:
      n.replica->PeerCsumReply(f.seq, f.runs, f.error);
      break;
    case Frame::Type::kReadRequest: {
      const uint64_t key = next_key_++;
      n.peer_reads.emplace(key, f);
      if (!n.replica->PeerReadRequest(key, f.seq, f.offset, f.length)) {
        // Refused: SendReadReply went out already (and erased it), or the peer is dropped.
        n.peer_reads.erase(key);
      }
      break;
    }
    case Frame::Type::kPromoteRequest:
      n.replica->PeerPromoteRequest(f.seq);
      break;
    case Frame::Type::kPromoteReply:
      n.replica->PeerPromoteReply(f.seq, f.fua, f.reason);
      break;
    case Frame::Type::kReadReply:
      if (const std::optional<RequestId> id = n.replica->RemoteRead(f.seq)) {
        auto it = n.client_reads.find(*id);
        if (it == n.client_reads.end())
          return Fail("a read reply for a read the client never made");
        if (f.error == 0 && f.versions.size() * kBlock != it->second.length) {
          return Fail("a read reply of the wrong length");
        }
        it->second.result = f.versions;
        ++remote_reads_;
      }
      n.replica->PeerReadReply(f.seq, f.error);
      break;
  }
}

void World::TryConnect() {
  connect_pending_ = false;
  if (connected_ || !link_up_ || !nodes_[0]->up || !nodes_[1]->up) return;
  // A StandAlone node's link neither listens nor connects (PeerConnecting leaves it so).
  for (const auto& n : nodes_) {
    n->replica->PeerConnecting();
    if (n->replica->conn() == ConnState::kStandAlone) return;
  }
  connected_ = true;
  ++conn_epoch_;
  // The States cross now; each node learns of the connection a little later (its handshake
  // ends when the peer's State arrives), and may have changed in between: a promotion, a
  // demotion. Frames to a node arrive only after its own handshake ended.
  const PeerState sent[2] = {nodes_[0]->replica->LocalState(), nodes_[1]->replica->LocalState()};
  const uint64_t epoch = conn_epoch_;
  for (int i = 0; i < 2; ++i) {
    const Clock up_at = now_ + Rand(0, 400);
    last_delivery_[i] = up_at;
    At(up_at, i, [this, i, epoch, peer = sent[1 - i], mine = sent[i]] {
      Replica& r = *nodes_[static_cast<size_t>(i)]->replica;
      if (connected_ && epoch == conn_epoch_) {
        r.PeerUp(Replica::Handshake{peer, mine, true});
      } else if (!connected_ && conn_epoch_ == epoch + 1) {
        // The peer dropped this connection after the States crossed: this node still ends its
        // handshake with the peer's State (and decides), then finds the connection closed.
        r.PeerUp(Replica::Handshake{peer, mine, true});
        Drain(i);
        r.PeerDown("the peer closed the connection");
      }
      Drain(i);
    });
  }
}

void World::Disconnect(const std::string& why) {
  if (!connected_) return;
  connected_ = false;
  ++conn_epoch_;
  for (auto& n : nodes_) {
    if (!n->up) continue;
    n->replica->PeerDown(why);

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
  Node& n = *nodes_[static_cast<size_t>(index)];
  if (!n.up) return;
  // Down first: a dead node notices nothing, not even the lost connection.
  n.up = false;
  n.detaching = false;  // the detach dies with it
  ++n.incarnation;
  Disconnect("node" + std::to_string(index) + " crashed");
  n.disk.Crash(rng_);
  n.replica.reset();
  n.frames.clear();
  n.csum_frames.clear();
}

void World::RestartNode(int index) {
  Node& n = *nodes_[static_cast<size_t>(index)];
  if (n.up) return;  // faults overlap: an earlier restart already brought it back
  n.up = true;
  n.detached = false;  // a restart opens the disk too (an attach)
  n.detaching = false;
  ++n.incarnation;
  MakeReplica(n);
  if (!connect_pending_) {
    connect_pending_ = true;
    After(Rand(100, 1000), -1, [this] { TryConnect(); });
  }
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

void World::ClientIssue() {
  Node& p = *nodes_[static_cast<size_t>(client_node_)];
  // At most a queue's worth per call: requests that fail at once (a fast-failback Primary
  // without its peer) must not spin here at one instant.
  for (uint32_t issued = 0; client_on_ && p.up && client_inflight_ < options_.queue_depth &&
                            issued < options_.queue_depth;
       ++issued) {
    if (failback_phase_ && Chance(0.4)) {
      IssueRead(p);
      Drain(p.index);
      continue;
    }
    const RequestId id = next_request_++;
    ++client_inflight_;
    if (Chance(0.05)) {
      flushes_[id] = acked_;
      p.replica->ClientFlush(id);
    } else {
      // Half the writes go to a small hot area, so that writes overlap.
      const uint64_t blocks = Rand(1, 8);
      const uint64_t span = Chance(0.5) ? 64 : blocks_;
      const uint64_t first = Rand(0, span - blocks);
      const uint64_t version = next_version_++;
      const bool fua = Chance(0.1);
      // A trim or zeroes reads as zeroes on every node (BackingStore writes zeroes where it
      // cannot punch): the same content on both, so its version stands for it like data.
      const WriteKind kind =
          Chance(0.05) ? (Chance(0.5) ? WriteKind::kTrim : WriteKind::kZeroes) : WriteKind::kData;
      p.client_writes[id] = Node::ClientWrite{first * kBlock, blocks * kBlock, version, fua, kind};
      if (failback_phase_) NoteWriteIssued(first * kBlock, blocks * kBlock);
      p.replica->ClientWrite(id, first * kBlock, blocks * kBlock, kind, fua);
    }
    Drain(p.index);
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
      } else if (Chance(0.2)) {
        SecondaryDiskFaults(t, Rand(2'000, 30'000));
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
  if (s.detached) AttachDisk(1);
  if (!s.up) RestartNode(1);
  if (!connected_ && !connect_pending_) TryConnect();
  auto in_sync = [&] {
    if (!s.up || !connected_ || client_inflight_ > 0) return false;
    const ReplicaStatus ps = p.replica->Report(), ss = s.replica->Report();
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
    if (!in_sync()) Fail("the pair did not get back in sync within 10 s after the disk faults");
    if (!failure_.empty() || !disks_equal("disk faults and the resync")) return failure_;
    // Repaired by the resync: promotable again (phase 3 promotes it when the Primary dies).
    if (s.replica->md().io_error || s.replica->Report().disk_failure) {
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
             [&] { return client_inflight_ == 0 && nodes_[0]->replica->Report().unacked == 0; });
    if (client_inflight_ == 0 && nodes_[0]->replica->Report().unacked == 0 && !Demote(0)) return;
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
  if (Status st = nodes_[0]->replica->Promote(false); !st.ok()) {
    return Fail("promoting node 0 after the power loss failed: " + st.message());
  }
  Drain(0);
}

void World::WriteOn(int index, uint64_t first_block, uint64_t blocks) {
  Node& n = *nodes_[static_cast<size_t>(index)];
  const RequestId id = next_request_++;
  ++client_inflight_;
  n.client_writes[id] =
      Node::ClientWrite{first_block * kBlock, blocks * kBlock, next_version_++, false};
  n.replica->ClientWrite(id, first_block * kBlock, blocks * kBlock, WriteKind::kData, false);
  Drain(index);
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
    Replica& r = *nodes_[static_cast<size_t>(i)]->replica;
    if (r.role() == Role::kPrimary) continue;
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
  for (const auto& [key, frame] : nodes_[1]->frames) {  // aim at one still landing, if any
    newest_first = std::min(frame.offset / kBlock, blocks_ - 4);
    break;
  }
  const uint64_t newest_version = next_version_;
  WriteOn(1, newest_first, 4);
  RunUntil(now_ + 20'000, [&] { return client_inflight_ == 0; });
  if (client_inflight_ != 0) return Fail("the writes of the split did not complete");
  // Half the time one node steps down before they meet: its changes still count.
  if (Chance(0.5) && !Demote(static_cast<int>(Rand(0, 1)))) return;
  // Nothing in flight from before the split may land after the snapshot.
  RunUntil(now_ + 20'000, [&] { return nodes_[0]->frames.empty() && nodes_[1]->frames.empty(); });
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
    if (n.replica->Report().conn != ConnState::kStandAlone) {
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
  n.promotion_done.reset();
  Status st = n.replica->Promote(force);
  Drain(index);
  if (!st.ok() || !n.replica->promotion_pending()) return st;
  RunUntil(now_ + 1'000'000, [&] { return !n.up || !n.replica->promotion_pending(); });
  if (!n.up) return Status::Invalid("the node crashed while its promotion was agreed");
  if (n.replica->promotion_pending()) {
    Fail("node" + std::to_string(index) + "'s promotion got no answer within 1 s");
    return Status::Invalid("no answer");
  }
  if (!n.promotion_done) return Status::Invalid("promotion ended without PromotionDone");
  if (n.promotion_done->error != 0) return Status::Invalid(n.promotion_done->message);
  return Status::Ok();
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
      if (n.replica->conn() != ConnState::kConnected) return;
      n.promotion_done.reset();
      if (Status st = n.replica->Promote(false); !st.ok()) {
        log_.push_back(std::to_string(now_) + " node" + std::to_string(i) +
                       " promotion refused at once: " + st.message());
      }
      Drain(i);
    });
  }
  auto settled = [&] {
    return asked[0] && asked[1] && !nodes_[0]->replica->promotion_pending() &&
           !nodes_[1]->replica->promotion_pending();
  };
  RunUntil(now_ + 1'000'000, settled);
  if (!failure_.empty()) return;
  if (!settled()) return Fail("the crossed promotions did not settle within 1 s");
  RunUntil(std::max(now_, cut_end + 1));  // the cut, if any, has come and gone
  ++promotions_raced_;
  int primaries = 0;
  for (const auto& n : nodes_) primaries += n->replica->role() == Role::kPrimary ? 1 : 0;
  if (primaries == 2) return Fail("both nodes became Primary from crossed promotions");
  if (primaries == 1) ++promotions_won_;
  log_.push_back(std::to_string(now_) + " crossed promotions: " + std::to_string(primaries) +
                 " Primary" + (cut ? " (link cut)" : ""));
  // Back to node 0 Primary, node 1 Secondary, connected and in sync for phase 3.
  if (nodes_[1]->replica->role() == Role::kPrimary && !Demote(1)) return;
  link_up_ = true;
  if (!connected_ && !connect_pending_) TryConnect();
  if (nodes_[0]->replica->role() != Role::kPrimary) {
    auto ready = [&] {
      const ReplicaStatus a = nodes_[0]->replica->Report(), b = nodes_[1]->replica->Report();
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
  Replica& r = *nodes_[static_cast<size_t>(index)]->replica;
  if (r.role() == Role::kSecondary) return true;
  if (Status st = r.Demote(0); !st.ok()) {
    Fail("node" + std::to_string(index) + " could not be demoted: " + st.message());
    return false;
  }
  Drain(index);
  return true;
}

// Phase 5: the split brain is resolved, by the operator (connect --discard-my-data on the
// victim, connect on the survivor) or by a policy (after_sb_1pri = discard-secondary, the
// victim demoted first). The victim must end with exactly the survivor's data: the union of
// both bitmaps covers what either changed.
void World::ResolveSplitBrain() {
  split_phase_ = false;  // from here, any refusal fails the run
  const int victim = static_cast<int>(Rand(0, 1)), survivor = 1 - victim;
  Replica& v = *nodes_[static_cast<size_t>(victim)]->replica;
  Replica& s = *nodes_[static_cast<size_t>(survivor)]->replica;
  if (!Demote(victim)) return;
  const bool by_policy = Chance(0.5);
  std::string how;
  if (by_policy) {
    if (s.role() != Role::kPrimary) {
      if (Status st = PromoteNow(survivor, false); !st.ok()) {
        return Fail("promote survivor: " + st.message());
      }
    }
    for (Replica* r : {&v, &s}) {
      r->SetSplitBrainPolicy({AfterSb0Pri::kDisconnect, AfterSb1Pri::kDiscardSecondary});
    }
    how = "after_sb_1pri = discard-secondary";
  } else {
    how = "connect --discard-my-data";
  }
  Result<bool> a = v.Connect(/*discard_my_data=*/!by_policy);
  Result<bool> b = s.Connect(false);
  if (!a.ok() || !b.ok()) return Fail("connect: " + (a.ok() ? b.status() : a.status()).message());
  Drain(victim);
  Drain(survivor);
  if (!connect_pending_) TryConnect();
  Node& vn = *nodes_[static_cast<size_t>(victim)];
  Node& sn = *nodes_[static_cast<size_t>(survivor)];
  auto resolved = [&] {
    const ReplicaStatus vs = v.Report(), ss = s.Report();
    return connected_ && vs.repl == ReplState::kEstablished && ss.repl == ReplState::kEstablished &&
           vs.disk == DiskState::kUpToDate && ss.out_of_sync_bytes == 0 && ss.unacked == 0 &&
           vn.frames.empty();
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
