#include "blockdev/buffer_pool.h"

#include <cstdlib>

#include "common/check.h"

namespace repld {

BufferPool::BufferPool(const asio::any_io_executor& ex, size_t pool_bytes) : freed_(ex) {
  chunk_count_ = pool_bytes / kChunkBytes;
  REPLD_CHECK(chunk_count_ > 0);
  void* memory = nullptr;
  REPLD_CHECK(posix_memalign(&memory, kAlignBytes, chunk_count_ * kChunkBytes) == 0);
  memory_ = static_cast<uint8_t*>(memory);
  free_.reserve(chunk_count_);
  for (size_t i = chunk_count_; i > 0; --i) free_.push_back(memory_ + (i - 1) * kChunkBytes);
}

// Only after every connection has finished: connections hold the pool by reference.
BufferPool::~BufferPool() { free(memory_); }

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
    REPLD_CHECK(chunk >= memory_ && chunk < memory_ + chunk_count_ * kChunkBytes);
    free_.push_back(chunk);
  }
  REPLD_CHECK(free_.size() <= chunk_count_);
  if (!chunks.empty()) freed_.Notify();
}

}  // namespace repld
