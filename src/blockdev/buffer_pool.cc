#include "blockdev/buffer_pool.h"

#include "common/check.h"

namespace repld {

// The pool outlives every connection: connections hold it by reference.
BufferPool::BufferPool(const asio::any_io_executor& ex, size_t pool_bytes)
    : chunk_count_(pool_bytes / kChunkBytes), freed_(ex) {
  REPLD_CHECK(chunk_count_ > 0);
  memory_ = IoMemory(chunk_count_ * kChunkBytes);
  free_.reserve(chunk_count_);
  for (size_t i = chunk_count_; i > 0; --i) free_.push_back(memory_.data() + (i - 1) * kChunkBytes);
}

bool BufferPool::TryAcquire(std::span<uint8_t*> out) {
  if (out.size() > free_.size()) return false;
  for (auto& chunk : out) {
    chunk = free_.back();
    free_.pop_back();
  }
  return true;
}

void BufferPool::Release(std::span<uint8_t* const> chunks) {
  for (uint8_t* chunk : chunks) {
    REPLD_CHECK(chunk >= memory_.data() && chunk < memory_.data() + chunk_count_ * kChunkBytes);
    free_.push_back(chunk);
  }
  REPLD_CHECK(free_.size() <= chunk_count_);
  if (!chunks.empty()) freed_.Notify();
}

}  // namespace repld
