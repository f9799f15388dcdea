// Rules the core's bookkeeping keeps at every moment between events. A broken one is a bug
// that may not show in the data until much later (a lost mark, an extent evicted under a write
// in flight), so the simulator checks them after every event of every world.
#include <map>

#include "replication/replica.h"

namespace repld {

std::string Replica::CheckInvariants() const {
  auto fail = [](const std::string& what) { return "invariant: " + what; };
  // Every write started and not yet forgotten holds a reference on each extent it touches:
  // while the peer may lack it, a crash must find its extents in the log.
  std::map<uint32_t, uint32_t> expected_refs;
  for (const auto& [id, r] : requests_) {
    if (r.type != Request::Type::kWrite || r.started == 0) continue;
    for (uint32_t e : ExtentsOf(r.offset, r.length)) ++expected_refs[e];
  }
  for (const auto& [extent, count] : expected_refs) {
    if (al_.refs(extent) < count) {
      return fail("extent " + std::to_string(extent) + " has " + std::to_string(al_.refs(extent)) +
                  " activity-log reference(s) but " + std::to_string(count) +
                  " write(s) in flight on it");
    }
  }
  // Every frame awaiting the peer's confirmation belongs to a live request that sent it.
  for (const auto& [seq, id] : unconfirmed_) {
    auto it = requests_.find(id);
    if (it == requests_.end()) {
      return fail("unconfirmed frame " + std::to_string(seq) + " names no live request");
    }
    if (!it->second.sent || it->second.seq != seq || it->second.written) {
      return fail("unconfirmed frame " + std::to_string(seq) + " does not match its request");
    }
  }
  for (const auto& [order, id] : local_writes_) {
    auto it = requests_.find(id);
    if (it == requests_.end() || it->second.local_done || it->second.started != order) {
      return fail("local write " + std::to_string(order) + " is not a started, unfinished write");
    }
  }
  for (RequestId id : waiting_) {
    auto it = requests_.find(id);
    if (it == requests_.end() || it->second.started != 0) {
      return fail("a waiting write is gone or already started");
    }
  }
  for (const auto& [seq, token] : resync_frames_) {
    if (resync_blocks_.count(token) == 0) {
      return fail("resync frame " + std::to_string(seq) + " names no resync block");
    }
  }
  if (apply_order_.size() != applies_.size()) return fail("applies and their order disagree");
  for (const auto& [order, key] : apply_order_) {
    auto it = applies_.find(key);
    if (it == applies_.end() || it->second.order != order) {
      return fail("apply " + std::to_string(key) + " is out of its order");
    }
  }
  // A diskless Primary's write is marked before it lands: this disk alone has it, and the
  // Primary's next disk must get it from here.
  for (const auto& [key, a] : applies_) {
    if (!a.diskless || a.length == 0) continue;
    const uint64_t first = a.offset / kBitmapGrainBytes;
    const uint64_t last = (a.offset + a.length - 1) / kBitmapGrainBytes;
    if (bitmap_.FindNextClear(first) <= last) {
      return fail("the diskless Primary's write at " + std::to_string(a.offset) +
                  " is not marked out of sync");
    }
  }
  if (!Connected() && (!unconfirmed_.empty() || !peer_unflushed_.empty() || barrier_seq_)) {
    return fail("not connected, yet frames wait for the peer");
  }
  if (role_ == Role::kPrimary && !md_.primary) return fail("Primary, but the metadata says not");
  if (promotion_ && (!Connected() || role_ != Role::kSecondary)) {
    return fail("a promotion is pending on a node that is not a connected Secondary");
  }
  return "";
}

}  // namespace repld
