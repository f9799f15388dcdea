#include "replication/activity_log.h"

#include <algorithm>

#include "common/check.h"

namespace repld {

ActivityLog::ActivityLog(std::vector<uint32_t> table, uint64_t seq)
    : table_(std::move(table)), refs_(table_.size(), 0), last_use_(table_.size(), 0), seq_(seq) {
  REPLD_CHECK(!table_.empty());
  for (uint32_t slot = 0; slot < table_.size(); ++slot) {
    if (table_[slot] != kAlEmpty) slot_of_[table_[slot]] = slot;
  }
}

bool ActivityLog::IsHot(uint32_t extent) const {
  if (slot_of_.count(extent) == 0) return false;
  return std::find(evicting_.begin(), evicting_.end(), extent) == evicting_.end();
}

void ActivityLog::Ref(uint32_t extent) {
  auto it = slot_of_.find(extent);
  REPLD_CHECK(it != slot_of_.end() && IsHot(extent));
  ++refs_[it->second];
  last_use_[it->second] = ++clock_;
}

void ActivityLog::Unref(uint32_t extent) {
  auto it = slot_of_.find(extent);
  REPLD_CHECK(it != slot_of_.end() && refs_[it->second] > 0);
  --refs_[it->second];
}

std::optional<AlTransactionPlan> ActivityLog::Plan(std::span<const uint32_t> wanted) {
  REPLD_CHECK(!planning_);
  AlTransactionPlan plan;
  plan.table = table_;
  for (uint32_t extent : wanted) {
    if (IsHot(extent) ||
        std::find(plan.added.begin(), plan.added.end(), extent) != plan.added.end()) {
      continue;
    }
    plan.added.push_back(extent);
  }
  if (plan.added.empty()) return std::nullopt;
  // Free slots first, then idle slots from the least recently used.
  std::vector<uint32_t> candidates;
  for (uint32_t slot = 0; slot < table_.size(); ++slot) {
    const bool keep = std::find(wanted.begin(), wanted.end(), table_[slot]) != wanted.end();
    if (table_[slot] == kAlEmpty || (refs_[slot] == 0 && !keep)) candidates.push_back(slot);
  }
  std::sort(candidates.begin(), candidates.end(), [this](uint32_t a, uint32_t b) {
    const bool free_a = table_[a] == kAlEmpty, free_b = table_[b] == kAlEmpty;
    if (free_a != free_b) return free_a;
    return last_use_[a] != last_use_[b] ? last_use_[a] < last_use_[b] : a < b;
  });
  if (candidates.size() < plan.added.size()) return std::nullopt;
  for (size_t i = 0; i < plan.added.size(); ++i) {
    const uint32_t slot = candidates[i];
    if (table_[slot] != kAlEmpty) plan.evicted.push_back(table_[slot]);
    plan.table[slot] = plan.added[i];
  }
  plan.seq = seq_ + 1;
  planning_ = true;
  evicting_ = plan.evicted;
  return plan;
}

void ActivityLog::Commit(const AlTransactionPlan& plan) {
  REPLD_CHECK(planning_ && plan.seq == seq_ + 1);
  planning_ = false;
  evicting_.clear();
  for (uint32_t extent : plan.evicted) slot_of_.erase(extent);
  for (uint32_t slot = 0; slot < plan.table.size(); ++slot) {
    if (plan.table[slot] != table_[slot]) {
      refs_[slot] = 0;
      last_use_[slot] = ++clock_;
    }
  }
  table_ = plan.table;
  for (uint32_t extent : plan.added) {
    const auto slot =
        static_cast<uint32_t>(std::find(table_.begin(), table_.end(), extent) - table_.begin());
    slot_of_[extent] = slot;
  }
  seq_ = plan.seq;
  ++transactions_;
}

void ActivityLog::Abandon() {
  planning_ = false;
  evicting_.clear();
}

}  // namespace repld
