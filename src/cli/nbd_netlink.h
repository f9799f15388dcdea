// The kernel nbd driver's generic netlink interface (family "nbd", linux/nbd-netlink.h), as
// nbd-client uses it: CONNECT hands the driver sockets on which the NBD handshake is done, and it
// returns the index N of /dev/nbdN; DISCONNECT lets a device go.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/status.h"

namespace repld::cli {

struct NbdConnectRequest {
  std::optional<uint32_t> index;  // /dev/nbdN to use; none: the driver picks a free one
  std::vector<int> sockets;       // connected, handshake done (one per connection)
  uint64_t size_bytes = 0;
  uint64_t block_bytes = 4096;
  uint64_t server_flags = 0;  // the export's transmission flags
  uint64_t timeout_s = 0;     // a request that takes longer fails; 0: the driver's default
  // How long the driver holds requests when every socket is dead, waiting for RECONFIGURE
  // with a new one; 0: it fails them at once.
  uint64_t dead_conn_timeout_s = 0;
};

// Returns N of the /dev/nbdN now attached.
Result<uint32_t> NbdNetlinkConnect(const NbdConnectRequest& request);
Status NbdNetlinkDisconnect(uint32_t index);
// Hands the driver new sockets (handshake done) in place of dead ones.
Status NbdNetlinkReconfigure(uint32_t index, const std::vector<int>& sockets);

}  // namespace repld::cli
