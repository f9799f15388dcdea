// The out-of-sync bitmap: one bit per 4 KiB of data (bit i covers bytes [4096 i, 4096 (i+1))).
// In memory as 64-bit words; on disk as the same words, little-endian, in 4 KiB pages. Pages
// changed since the last ClearDirty() are tracked so that only they are written back.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "replication/md_format.h"

namespace repld {

class Bitmap {
 public:
  static constexpr uint64_t kBitsPerPage = kMdBlockBytes * 8;  // 32768 bits: 128 MiB of data

  explicit Bitmap(uint64_t data_bytes);

  uint64_t data_bytes() const { return data_bytes_; }
  uint64_t bit_count() const { return bit_count_; }
  // On-disk pages that hold bits of this bitmap (the on-disk area may be larger).
  uint64_t page_count() const { return DivCeil(bit_count_, kBitsPerPage); }

  // Marks every block the byte range touches (partial blocks round outward).
  void SetRange(uint64_t offset_bytes, uint64_t length_bytes);
  // Clears only blocks the range covers whole (partial blocks stay set), except a partial block
  // at the end of the data, which the range covers as far as it exists.
  void ClearRange(uint64_t offset_bytes, uint64_t length_bytes);
  void SetAll();
  bool Test(uint64_t bit) const;
  uint64_t CountSet() const { return set_count_; }
  // Bytes of data the set bits cover (the last block counts only as far as the data goes).
  uint64_t OutOfSyncBytes() const;
  // The first set (or clear) bit at or after `from_bit`; bit_count() when there is none.
  uint64_t FindNextSet(uint64_t from_bit) const;
  uint64_t FindNextClear(uint64_t from_bit) const;

  // Pages changed since ClearDirty(), ascending.
  std::vector<uint64_t> DirtyPages() const;
  void ClearDirty();

  // From the on-disk bytes (at least page_count() pages). Bits beyond bit_count() must be zero.
  Status Load(std::span<const uint8_t> disk);
  // To the on-disk bytes; `disk` (at least page_count() pages) is zero beyond the bitmap.
  void Store(std::span<uint8_t> disk) const;
  // One 4 KiB page, for writing back a dirty page.
  void StorePage(uint64_t page, std::span<uint8_t> out) const;

 private:
  static constexpr uint64_t kWordsPerPage = kMdBlockBytes / 8;
  // Sets or clears bits [first, end); keeps set_count_ and the dirty pages.
  void Apply(uint64_t first_bit, uint64_t end_bit, bool set);

  uint64_t data_bytes_;
  uint64_t bit_count_;
  uint64_t set_count_ = 0;
  std::vector<uint64_t> words_;
  std::vector<bool> dirty_;  // per page
};

}  // namespace repld
