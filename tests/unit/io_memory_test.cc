#include "blockdev/io_memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace repld {
namespace {

// The kernel's THP mode, the bracketed word of "always [madvise] never".
std::string ThpMode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(f, line);
  const size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos) return "";
  return line.substr(open + 1, close - open - 1);
}

// /proc/self/smaps' THPeligible for the mapping holding `p`: whether the kernel may back it
// with huge pages (for a madvised mapping under "madvise", only with the advice).
std::optional<int> ThpEligible(const void* p) {
  std::ifstream f("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(f, line)) {
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2) {  // a mapping's first line
      inside = at >= begin && at < end;
    } else if (inside && line.rfind("THPeligible:", 0) == 0) {
      return std::stoi(line.substr(12));
    }
  }
  return std::nullopt;
}

TEST(IoMemory, IsWholeHugePagesAlignedToThem) {
  IoMemory m(3 * 1024 * 1024 + 1);
  EXPECT_EQ(m.size(), 2 * IoMemory::kHugePageBytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % IoMemory::kHugePageBytes, 0u);
  std::memset(m.data(), 0xA5, m.size());  // all of it is mapped and writable
  EXPECT_EQ(m.data()[m.size() - 1], 0xA5);
}

TEST(IoMemory, IsAdvisedForHugePages) {
  const std::string mode = ThpMode();
  if (mode != "always" && mode != "madvise") GTEST_SKIP() << "THP is '" << mode << "' here";
  IoMemory m(IoMemory::kHugePageBytes);
  m.data()[0] = 1;
  const std::optional<int> eligible = ThpEligible(m.data());
  if (!eligible) GTEST_SKIP() << "this kernel's smaps has no THPeligible";
  EXPECT_EQ(*eligible, 1);
}

TEST(IoMemory, MovesOwnership) {
  IoMemory a(1);
  uint8_t* data = a.data();
  IoMemory b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.data(), data);
  IoMemory c(1);
  c = std::move(b);  // c's own mapping is released
  EXPECT_EQ(c.data(), data);
  EXPECT_EQ(c.size(), IoMemory::kHugePageBytes);
}

}  // namespace
}  // namespace repld
