// What one NBD export offers, and the limits that bound each connection's resources.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace repld {

struct NbdExport {
  std::string name;
  uint64_t size_bytes = 0;
  uint32_t block_min_bytes = 1;  // offsets and lengths must be multiples of this
  uint32_t block_preferred_bytes = 4096;
  uint32_t block_max_bytes = 32u << 20;  // largest READ/WRITE payload
  uint16_t transmission_flags = 0;
  // Asked when a client selects the export: nullopt lets it in; a text refuses it (NBD_OPT_GO
  // and NBD_OPT_INFO get NBD_REP_ERR_POLICY with the text (libnbd shows it in its debug
  // output, and reports "Operation not permitted"); EXPORT_NAME,
  // which has no error reply, closes). A Secondary uses it: its data is not to be served.
  std::function<std::optional<std::string>()> admission;
};

struct NbdLimits {
  uint32_t connections_max = 16;
  uint32_t inflight_max = 64;  // requests per connection
  std::chrono::seconds handshake_timeout{30};
  uint32_t options_max = 256;  // option requests per handshake
};

}  // namespace repld
