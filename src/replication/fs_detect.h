// Recognises a file system from the first bytes of a disk, to refuse placing internal metadata
// over the end of one (as DRBD's drbdmeta does). Pure: the caller reads the bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace repld {

// Bytes DetectFileSystem looks at: the start of the disk up to here.
inline constexpr uint64_t kFsProbeBytes = 8192;

struct FileSystemInfo {
  std::string type;         // "ext2/3/4", "xfs"
  uint64_t size_bytes = 0;  // how far the file system extends from byte 0
};

// ext2/3/4 (superblock at byte 1024, magic 0xEF53) and XFS ("XFSB" at byte 0). `head` may be
// shorter than kFsProbeBytes (a small disk); nothing is found then where it would not fit.
std::optional<FileSystemInfo> DetectFileSystem(std::span<const uint8_t> head);

}  // namespace repld
