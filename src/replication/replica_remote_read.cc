// Fast failback: a sync target promoted while connected to its UpToDate peer serves at once. Its
// client reads of blocks not yet synced go to the peer (ReadRequest; the peer answers with the
// data after every earlier write of ours to the range has landed there); reads of synced blocks
// stay local. The rest of the mode (writes, stale resync frames) is in replica.cc and
// replica_peer.cc; docs/replication.md ("Fast failback") has the whole story.
#include <cerrno>

#include "common/check.h"
#include "replication/replica.h"

namespace repld {

bool Replica::PeerCanServe() const {
  return Connected() && peer_ && peer_->disk == DiskState::kUpToDate &&
         peer_->role != Role::kPrimary;
}

bool Replica::RangeInSync(uint64_t offset, uint64_t length) const {
  if (!bitmap_complete_) return false;
  if (length == 0) return true;
  const uint64_t first = offset / kBitmapGrainBytes;
  const uint64_t last = (offset + length - 1) / kBitmapGrainBytes;
  return bitmap_.FindNextSet(first) > last;
}

void Replica::ClientRead(RequestId id, uint64_t offset, uint64_t length) {
  app_bytes_since_tick_ += length;
  // A diskless Primary reads everything from the peer.
  const bool local = HasDisk() && (md_.disk == DiskState::kUpToDate || RangeInSync(offset, length));
  if (role_ != Role::kPrimary || (!local && !PeerCanServe())) {
    // Never serve data from a disk that is not UpToDate (but for blocks it has in sync).
    Emit(Complete{id, EIO});
    return;
  }
  Request r;
  r.type = Request::Type::kRead;
  r.offset = offset;
  r.length = length;
  r.remote = !local;
  requests_.emplace(id, r);
  if (local) {
    Emit(SubmitRead{id});
    return;
  }
  remote_waiting_.push_back(id);
  PumpRemoteReads();
}

void Replica::LocalReadDone(RequestId id, int error) {
  auto it = requests_.find(id);
  REPLD_CHECK(it != requests_.end() && !it->second.remote);
  if (error != 0 && PrimaryDetaches()) {
    const Request& r = it->second;
    if (PrimaryDiskFailed("reading the client's block at " + std::to_string(r.offset) + " (+" +
                              std::to_string(r.length) + ")",
                          error)) {
      it->second.remote = true;  // retried from the peer, which has the data
      remote_waiting_.push_back(id);
      PumpRemoteReads();
      return;
    }
  }
  if (error == 0) counters_.read_bytes += it->second.length;
  requests_.erase(it);
  Emit(Complete{id, error});
}

void Replica::PumpRemoteReads() {
  while (!remote_waiting_.empty() && remote_reads_.size() < options_.remote_reads_window) {
    const RequestId id = remote_waiting_.front();
    remote_waiting_.pop_front();
    const Request& r = requests_.at(id);
    const uint64_t seq = next_seq_++;
    remote_reads_.emplace(seq, id);
    Emit(SendReadRequest{seq, id, r.offset, r.length});
  }
}

std::optional<RequestId> Replica::RemoteRead(uint64_t seq) const {
  auto it = remote_reads_.find(seq);
  if (it == remote_reads_.end()) return std::nullopt;
  return it->second;
}

void Replica::PeerReadReply(uint64_t seq, int error) {
  auto it = remote_reads_.find(seq);
  if (it == remote_reads_.end()) {
    Warn("peer answered read " + std::to_string(seq) + ", which is not outstanding");
    return;
  }
  const RequestId id = it->second;
  remote_reads_.erase(it);
  auto req = requests_.find(id);
  REPLD_CHECK(req != requests_.end());
  if (error == 0) {
    counters_.read_bytes += req->second.length;
    counters_.peer_read_bytes += req->second.length;
  } else {
    Warn("the peer failed to read " + std::to_string(req->second.length) + " bytes at " +
         std::to_string(req->second.offset) + " for this node: error " + std::to_string(error));
  }
  requests_.erase(req);
  Emit(Complete{id, error});
  PumpRemoteReads();
}

// The peer left: its answers will not come, and no other copy of those blocks is good.
void Replica::FailRemoteReads() {
  std::vector<RequestId> failed;
  for (const auto& [seq, id] : remote_reads_) failed.push_back(id);
  failed.insert(failed.end(), remote_waiting_.begin(), remote_waiting_.end());
  remote_reads_.clear();
  remote_waiting_.clear();
  for (RequestId id : failed) {
    requests_.erase(id);
    Emit(Complete{id, EIO});
  }
  if (!failed.empty()) {
    Warn(std::to_string(failed.size()) +
         " read(s) of blocks not yet synced failed: the peer that has them is gone");
  }
}

bool Replica::StaleResyncFrame(uint64_t offset, uint64_t length) const {
  // The source reads a block before applying our overlapping write, or after it has written it
  // (and acknowledged it); and sends the block before that acknowledgement. So a block that
  // arrives while our write is unconfirmed was read before the write.
  for (const auto& [seq, id] : unconfirmed_) {
    const Request& r = requests_.at(id);
    if (r.type == Request::Type::kWrite && Overlaps(offset, length, r.offset, r.length)) {
      return true;
    }
  }
  return false;
}

// --- The UpToDate side ---

bool Replica::PeerReadRequest(uint64_t key, uint64_t seq, uint64_t offset, uint64_t length) {
  if (!Connected()) return false;
  if (peer_reads_.size() >= options_.peer_reads_max) {
    Emit(DropPeer{"the peer has more than " + std::to_string(options_.peer_reads_max) +
                      " reads waiting on this node",
                  true});
    return false;
  }
  if (offset + length > options_.data_bytes || md_.disk != DiskState::kUpToDate) {
    // Outside the data, or nothing good to read here: the peer's client gets the error.
    Emit(SendReadReply{seq, key, md_.disk != DiskState::kUpToDate ? EIO : EINVAL, true});
    return false;
  }
  peer_reads_.emplace(key, PeerRead{seq, epoch_, apply_counter_, offset, length, false});
  PumpPeerReads();
  return true;
}

void Replica::PumpPeerReads() {
  for (auto& [key, read] : peer_reads_) {
    if (read.started || read.answered) continue;
    // Bounded memory: one read alone may take the whole budget.
    if (peer_read_bytes_ > 0 && peer_read_bytes_ + read.length > options_.peer_read_bytes_max) {
      return;
    }
    // The peer's writes sent before the request land first: it reads what it wrote.
    bool blocked = false;
    for (auto it = apply_order_.begin(); it != apply_order_.end() && it->first <= read.after;
         ++it) {
      const Apply& a = applies_.at(it->second);
      if (Overlaps(read.offset, read.length, a.offset, a.length)) {
        blocked = true;
        break;
      }
    }
    if (blocked) continue;
    read.started = true;
    peer_read_bytes_ += read.length;
    Emit(ReadForPeer{key, read.offset, read.length});
  }
}

void Replica::ReadForPeerDone(uint64_t key, int error) {
  auto it = peer_reads_.find(key);
  REPLD_CHECK(it != peer_reads_.end() && it->second.started && !it->second.answered);
  it->second.answered = true;
  const PeerRead read = it->second;
  if (error != 0) {
    Warn("reading " + std::to_string(read.length) + " bytes at " + std::to_string(read.offset) +
         " for the peer failed: error " + std::to_string(error));
  }
  Emit(SendReadReply{read.seq, key, error, Connected() && read.epoch == epoch_});
}

void Replica::ReadReplySent(uint64_t key) {
  auto it = peer_reads_.find(key);
  if (it == peer_reads_.end()) return;  // refused at once: never kept
  REPLD_CHECK(it->second.answered);
  peer_read_bytes_ -= it->second.length;
  peer_reads_.erase(it);
  PumpPeerReads();
}

}  // namespace repld
