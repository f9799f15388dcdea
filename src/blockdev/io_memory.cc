#include "blockdev/io_memory.h"

#include <sys/mman.h>

#include <new>
#include <utility>

#include "common/check.h"

namespace repld {

IoMemory::IoMemory(size_t bytes) {
  REPLD_CHECK(bytes > 0);
  size_ = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  // mmap aligns to pages only: map a huge page more and unmap what lies outside the aligned
  // range.
  const size_t mapped = size_ + kHugePageBytes;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (start + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  if (aligned > start) munmap(p, aligned - start);
  const uintptr_t end = start + mapped;
  if (end > aligned + size_)
    munmap(reinterpret_cast<void*>(aligned + size_), end - aligned - size_);
  data_ = reinterpret_cast<uint8_t*>(aligned);
  // Advice only: EINVAL where the kernel has no THP, and then ordinary pages serve.
  madvise(data_, size_, MADV_HUGEPAGE);
}

IoMemory::~IoMemory() {
  if (data_ != nullptr) munmap(data_, size_);
}

IoMemory::IoMemory(IoMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

IoMemory& IoMemory::operator=(IoMemory&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace repld
