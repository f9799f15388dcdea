// The activity log's bookkeeping: which 4 MiB extents are "hot" (may hold writes the peer has not
// confirmed, so a crash resyncs them whole) and which transaction makes a cold extent hot. Pure
// logic: the caller persists each transaction before it lets a write into a newly hot extent.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "replication/md_format.h"

namespace repld {


struct AlTransactionPlan {
  uint64_t seq = 0;
  std::vector<uint32_t> table;     // slot -> extent (kAlEmpty when free), after this change
  std::vector<uint32_t> added;     // extents this transaction makes hot
  std::vector<uint32_t> evicted;   // extents it makes cold
};

class ActivityLog {
 public:
  // `table` is the slot table recovered from disk (all kAlEmpty for a fresh one); `seq` the
  // last transaction's sequence number.
  ActivityLog(std::vector<uint32_t> table, uint64_t seq);

  uint32_t slots() const { return static_cast<uint32_t>(table_.size()); }
  // Hot and not being evicted by the outstanding plan.
  bool IsHot(uint32_t extent) const;
  const std::vector<uint32_t>& table() const { return table_; }
  uint64_t seq() const { return seq_; }
  uint64_t transactions() const { return transactions_; }

  // Writes counted on `extent` (0 when it is not in the log).
  uint32_t refs(uint32_t extent) const {
    auto it = slot_of_.find(extent);
    return it == slot_of_.end() ? 0 : refs_[it->second];
  }
  // Counts one more write in flight on a hot extent (it cannot be evicted meanwhile).
  void Ref(uint32_t extent);
  void Unref(uint32_t extent);

  // Plans a transaction that makes every extent of `wanted` hot, evicting the least recently
  // used idle extents that `wanted` does not name (its hot extents stay). nullopt when not
  // enough slots are idle, or nothing of `wanted` is cold: retry after an Unref. Only one plan
  // may be outstanding; Commit or Abandon it.
  std::optional<AlTransactionPlan> Plan(std::span<const uint32_t> wanted);
  // The plan is on disk: its extents are hot.
  void Commit(const AlTransactionPlan& plan);
  // The plan could not be persisted: nothing changed.
  void Abandon();
  bool planning() const { return planning_; }

 private:
  std::vector<uint32_t> table_;
  std::vector<uint32_t> refs_;      // per slot
  std::vector<uint64_t> last_use_;  // per slot
  std::unordered_map<uint32_t, uint32_t> slot_of_;
  std::vector<uint32_t> evicting_;  // the outstanding plan's victims
  uint64_t seq_ = 0;
  uint64_t clock_ = 0;
  uint64_t transactions_ = 0;
  bool planning_ = false;
};

}  // namespace repld
