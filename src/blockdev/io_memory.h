// Memory for direct-I/O data buffers: anonymous, aligned to 2 MiB and advised for transparent
// huge pages. A 1 MiB buffer of 4 KiB pages is 256 segments, more than a virtio disk takes in
// one request (max_segments 254): the block layer splits it in two, and neighbouring requests
// stop merging. Inside a huge page it is one segment. Where huge pages are off (THP "never")
// it is ordinary pages, as before; nothing depends on getting them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace repld {

class IoMemory {
 public:
  static constexpr size_t kHugePageBytes = size_t{2} << 20;

  IoMemory() = default;
  // `bytes` rounded up to whole huge pages, committed where first touched. Throws
  // std::bad_alloc when the mapping fails, as `new` would.
  explicit IoMemory(size_t bytes);
  ~IoMemory();
  IoMemory(IoMemory&& other) noexcept;
  IoMemory& operator=(IoMemory&& other) noexcept;
  IoMemory(const IoMemory&) = delete;
  IoMemory& operator=(const IoMemory&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace repld
