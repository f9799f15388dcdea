#include "common/check.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/status.h"

namespace repld {
namespace detail {

void CheckFailed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "repld: invariant violated: %s at %s:%d; aborting\n", expr, file, line);
  std::fflush(stderr);
  std::abort();
}

}  // namespace detail

std::string ErrnoText(int errno_value) {
  if (errno_value < 0) return "error";
  char buf[128];
  return strerror_r(errno_value, buf, sizeof buf);
}

}  // namespace repld
