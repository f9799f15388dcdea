// Direct-I/O alignment of an open file, as the kernel reports it (statx STATX_DIOALIGN, Linux
// 6.1+). Kept apart because the kernel's struct statx clashes with glibc's declarations.
#pragma once

#include <cstdint>

namespace repld {

struct DioAlign {
  uint32_t mem_align_bytes = 0;     // 0: unknown
  uint32_t offset_align_bytes = 0;  // 0: unknown or direct I/O unsupported
};

DioAlign QueryDioAlign(int fd);

}  // namespace repld
