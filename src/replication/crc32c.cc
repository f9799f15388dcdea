#include "replication/crc32c.h"

#include <isa-l/crc.h>

namespace repld {

uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc) {
  // ISA-L's crc32_iscsi works on the raw register: invert in and out for the standard value.
  return ~crc32_iscsi(const_cast<unsigned char*>(data.data()), static_cast<int>(data.size()), ~crc);
}

}  // namespace repld
