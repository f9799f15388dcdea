#include "blockdev/dio_align.h"

#include <linux/fcntl.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace repld {

DioAlign QueryDioAlign(int fd) {
  struct statx stx = {};
  const long rc = syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx);
  if (rc != 0 || (stx.stx_mask & STATX_DIOALIGN) == 0) return {};
  return {stx.stx_dio_mem_align, stx.stx_dio_offset_align};
}

}  // namespace repld
