#include "replication/bitmap.h"

#include <algorithm>
#include <bit>

namespace repld {
namespace {

void PutWord(std::span<uint8_t> b, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetWord(std::span<const uint8_t> b, size_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}

// Bits [lo, hi) of a word, 0 <= lo < hi <= 64.
uint64_t Mask(uint64_t lo, uint64_t hi) {
  const uint64_t upper = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
  return upper & ~((uint64_t{1} << lo) - 1);
}

}  // namespace

Bitmap::Bitmap(uint64_t data_bytes)
    : data_bytes_(data_bytes),
      bit_count_(DivCeil(data_bytes, kBitmapGrainBytes)),
      words_(DivCeil(bit_count_, 64), 0),
      dirty_(DivCeil(bit_count_, kBitsPerPage), false) {}

void Bitmap::Apply(uint64_t first_bit, uint64_t end_bit, bool set) {
  REPLD_CHECK(end_bit <= bit_count_);
  if (first_bit >= end_bit) return;
  for (uint64_t page = first_bit / kBitsPerPage; page <= (end_bit - 1) / kBitsPerPage; ++page) {
    dirty_[page] = true;
  }
  for (uint64_t bit = first_bit; bit < end_bit;) {
    const uint64_t w = bit / 64;
    const uint64_t hi = std::min<uint64_t>(64, end_bit - w * 64);
    const uint64_t mask = Mask(bit % 64, hi);
    const uint64_t before = words_[w];
    words_[w] = set ? before | mask : before & ~mask;
    const int changed = std::popcount(before ^ words_[w]);
    set_count_ = set ? set_count_ + changed : set_count_ - changed;
    bit = (w + 1) * 64;
  }
}

void Bitmap::SetRange(uint64_t offset_bytes, uint64_t length_bytes) {
  REPLD_CHECK(offset_bytes <= data_bytes_ && length_bytes <= data_bytes_ - offset_bytes);
  if (length_bytes == 0) return;
  Apply(offset_bytes / kBitmapGrainBytes, DivCeil(offset_bytes + length_bytes, kBitmapGrainBytes),
        true);
}

void Bitmap::ClearRange(uint64_t offset_bytes, uint64_t length_bytes) {
  REPLD_CHECK(offset_bytes <= data_bytes_ && length_bytes <= data_bytes_ - offset_bytes);
  if (length_bytes == 0) return;
  const uint64_t end_bytes = offset_bytes + length_bytes;
  const uint64_t end_bit = end_bytes == data_bytes_ ? bit_count_ : end_bytes / kBitmapGrainBytes;
  Apply(DivCeil(offset_bytes, kBitmapGrainBytes), end_bit, false);
}

void Bitmap::SetAll() { Apply(0, bit_count_, true); }

bool Bitmap::Test(uint64_t bit) const {
  REPLD_CHECK(bit < bit_count_);
  return (words_[bit / 64] >> (bit % 64)) & 1;
}

uint64_t Bitmap::OutOfSyncBytes() const {
  uint64_t bytes = set_count_ * kBitmapGrainBytes;
  const uint64_t tail_bytes = data_bytes_ % kBitmapGrainBytes;
  if (tail_bytes != 0 && Test(bit_count_ - 1)) bytes -= kBitmapGrainBytes - tail_bytes;
  return bytes;
}

uint64_t Bitmap::FindNextSet(uint64_t from_bit) const {
  for (uint64_t bit = from_bit; bit < bit_count_;) {
    const uint64_t w = bit / 64;
    const uint64_t word = words_[w] & ~((uint64_t{1} << (bit % 64)) - 1);
    if (word != 0) return std::min(bit_count_, w * 64 + std::countr_zero(word));
    bit = (w + 1) * 64;
  }
  return bit_count_;
}

uint64_t Bitmap::FindNextClear(uint64_t from_bit) const {
  for (uint64_t bit = from_bit; bit < bit_count_;) {
    const uint64_t w = bit / 64;
    const uint64_t word = ~words_[w] & ~((uint64_t{1} << (bit % 64)) - 1);
    if (word != 0) return std::min(bit_count_, w * 64 + std::countr_zero(word));
    bit = (w + 1) * 64;
  }
  return bit_count_;
}

std::vector<uint64_t> Bitmap::DirtyPages() const {
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < dirty_.size(); ++p) {
    if (dirty_[p]) pages.push_back(p);
  }
  return pages;
}

void Bitmap::ClearDirty() { std::fill(dirty_.begin(), dirty_.end(), false); }

Status Bitmap::Load(std::span<const uint8_t> disk) {
  if (disk.size() < page_count() * kMdBlockBytes) {
    return Status::Invalid("bitmap area of " + std::to_string(disk.size()) +
                           " bytes is smaller than the " + std::to_string(page_count()) +
                           " pages the data needs");
  }
  std::vector<uint64_t> words(words_.size());
  uint64_t count = 0;
  for (uint64_t w = 0; w < words.size(); ++w) {
    words[w] = GetWord(disk, w * 8);
    count += std::popcount(words[w]);
  }
  // Bits past the data: in the last word, and in the rest of the last page.
  const uint64_t tail = bit_count_ % 64;
  constexpr uint64_t kNone = UINT64_MAX;
  uint64_t stray_bit = kNone;
  if (tail != 0 && (words.back() & ~Mask(0, tail)) != 0) {
    stray_bit = (words.size() - 1) * 64 + std::countr_zero(words.back() & ~Mask(0, tail));
  }
  for (uint64_t i = words.size() * 8; stray_bit == kNone && i < page_count() * kMdBlockBytes; ++i) {
    if (disk[i] != 0) stray_bit = i * 8 + std::countr_zero(disk[i]);
  }
  if (stray_bit != kNone) {
    return Status::Invalid("bitmap has bit " + std::to_string(stray_bit) +
                           " set beyond the end of the data (" + std::to_string(bit_count_) +
                           " bits): the bitmap is damaged");
  }
  words_ = std::move(words);
  set_count_ = count;
  ClearDirty();
  return Status::Ok();
}

void Bitmap::StorePage(uint64_t page, std::span<uint8_t> out) const {
  REPLD_CHECK(page < page_count() && out.size() == kMdBlockBytes);
  std::fill(out.begin(), out.end(), uint8_t{0});
  const uint64_t first = page * kWordsPerPage;
  const uint64_t end = std::min<uint64_t>(words_.size(), first + kWordsPerPage);
  for (uint64_t w = first; w < end; ++w) PutWord(out, (w - first) * 8, words_[w]);
}

void Bitmap::Store(std::span<uint8_t> disk) const {
  REPLD_CHECK(disk.size() >= page_count() * kMdBlockBytes);
  std::fill(disk.begin(), disk.end(), uint8_t{0});
  for (uint64_t p = 0; p < page_count(); ++p) {
    StorePage(p, disk.subspan(p * kMdBlockBytes, kMdBlockBytes));
  }
}

}  // namespace repld
