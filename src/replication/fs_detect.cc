#include "replication/fs_detect.h"

namespace repld {
namespace {

uint64_t GetLe(std::span<const uint8_t> b, size_t off, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}
// a * b, saturated: a damaged superblock must not wrap around to a small size.
uint64_t MulSat(uint64_t a, uint64_t b) {
  return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}
uint64_t GetBe(std::span<const uint8_t> b, size_t off, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | b[off + i];
  return v;
}

// ext2/3/4 superblock fields (offsets within the superblock at byte 1024).
constexpr size_t kExtSuper = 1024;
constexpr size_t kExtBlocksLo = 0x04;
constexpr size_t kExtLogBlockSize = 0x18;
constexpr size_t kExtMagic = 0x38;
constexpr size_t kExtFeatureIncompat = 0x60;
constexpr size_t kExtBlocksHi = 0x150;
constexpr uint64_t kExtIncompat64Bit = 0x80;

std::optional<FileSystemInfo> DetectExt(std::span<const uint8_t> b) {
  if (b.size() < kExtSuper + 1024 || GetLe(b, kExtSuper + kExtMagic, 2) != 0xEF53) {
    return std::nullopt;
  }
  uint64_t blocks = GetLe(b, kExtSuper + kExtBlocksLo, 4);
  if (GetLe(b, kExtSuper + kExtFeatureIncompat, 4) & kExtIncompat64Bit) {
    blocks |= GetLe(b, kExtSuper + kExtBlocksHi, 4) << 32;
  }
  const uint64_t log_block = GetLe(b, kExtSuper + kExtLogBlockSize, 4);
  if (log_block > 6) return std::nullopt;  // over 64 KiB blocks: not a real ext superblock
  return FileSystemInfo{"ext2/3/4", MulSat(blocks, uint64_t{1024} << log_block)};
}

std::optional<FileSystemInfo> DetectXfs(std::span<const uint8_t> b) {
  if (b.size() < 16 || GetBe(b, 0, 4) != 0x58465342) return std::nullopt;  // "XFSB"
  const uint64_t block_bytes = GetBe(b, 4, 4);
  const uint64_t blocks = GetBe(b, 8, 8);
  if (block_bytes < 512 || block_bytes > 65536) return std::nullopt;
  return FileSystemInfo{"xfs", MulSat(blocks, block_bytes)};
}

}  // namespace

std::optional<FileSystemInfo> DetectFileSystem(std::span<const uint8_t> head) {
  if (auto fs = DetectXfs(head)) return fs;
  return DetectExt(head);
}

}  // namespace repld
