// Always-on assertions for invariants. Unlike assert(), NDEBUG does not remove them: a storage
// daemon that continues past a broken invariant can write wrong data to disk.
#pragma once

namespace repld::detail {
[[noreturn]] void CheckFailed(const char* expr, const char* file, int line);
}

#define REPLD_CHECK(expr)                                      \
  do {                                                         \
    if (!(expr)) [[unlikely]]                                  \
      ::repld::detail::CheckFailed(#expr, __FILE__, __LINE__); \
  } while (0)
