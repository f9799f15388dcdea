#include "replication/crc32c.h"

#include <gtest/gtest.h>

#include <string_view>

namespace repld {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Crc32c, KnownValues) {
  EXPECT_EQ(Crc32c(Bytes("123456789")), 0xE3069283u);  // the check value of CRC-32C
  EXPECT_EQ(Crc32c(Bytes("")), 0u);
}

TEST(Crc32c, PiecesChainToTheWhole) {
  const uint32_t whole = Crc32c(Bytes("hello, replicated world"));
  EXPECT_EQ(Crc32c(Bytes(" world"), Crc32c(Bytes("hello, replicated"))), whole);
}

}  // namespace
}  // namespace repld
