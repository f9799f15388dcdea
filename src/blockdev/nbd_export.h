// What one NBD export offers, and the limits that bound each connection's resources.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace repld {

struct NbdExport {
  std::string name;
  uint64_t size_bytes = 0;
  uint32_t block_min_bytes = 1;  // offsets and lengths must be multiples of this
  uint32_t block_preferred_bytes = 4096;
  uint32_t block_max_bytes = 32u << 20;  // largest READ/WRITE payload
  uint16_t transmission_flags = 0;
};

struct NbdLimits {
  uint32_t connections_max = 16;
  uint32_t inflight_max = 64;  // requests per connection
  std::chrono::seconds handshake_timeout{30};
  uint32_t options_max = 256;  // option requests per handshake
};

}  // namespace repld
