// Data buffers for requests in flight, shared by all connections: a fixed number of fixed-size
// chunks allocated once at start, in huge pages where the kernel gives them (io_memory.h). A
// request takes all the chunks it needs or none; when the pool is empty, readers stop reading from
// their sockets (backpressure) until chunks come back.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "blockdev/async_signal.h"
#include "blockdev/io_memory.h"

namespace repld {

class BufferPool {
 public:
  static constexpr size_t kChunkBytes = 128 * 1024;
  static constexpr size_t kAlignBytes = 4096;

  BufferPool(const asio::any_io_executor& ex, size_t pool_bytes);
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  static size_t ChunksFor(uint64_t length_bytes) {
    return static_cast<size_t>((length_bytes + kChunkBytes - 1) / kChunkBytes);
  }
  size_t chunk_count() const { return chunk_count_; }
  size_t free_count() const { return free_.size(); }

  // Takes `out.size()` chunks if that many are free.
  bool TryAcquire(std::span<uint8_t*> out);
  // Waits until some chunks were released (or WakeWaiters was called); callers retry.
  asio::awaitable<void> WaitForFree() { co_await freed_.Wait(); }
  void WakeWaiters() { freed_.Notify(); }
  void Release(std::span<uint8_t* const> chunks);

 private:
  IoMemory memory_;
  size_t chunk_count_ = 0;
  std::vector<uint8_t*> free_;  // LIFO: recently used chunks are warm in cache
  AsyncSignal freed_;
};

}  // namespace repld
