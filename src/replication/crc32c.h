// CRC32C (Castagnoli), the checksum of metadata blocks and peer frames. ISA-L computes it with
// the CPU's crc32 instruction where there is one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace repld {

// The standard CRC32C of `data` ("123456789" -> 0xE3069283). To checksum pieces, pass the
// previous result as `crc`.
uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace repld
