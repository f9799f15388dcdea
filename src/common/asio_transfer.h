// Completion conditions for asio::async_read / async_write on the data path.
//
// asio's own transfer_all() (the default) and transfer_exactly() hand the socket at most
// 64 KiB per system call (asio::default_max_transfer_size): a 1 MiB NBD payload or peer Data
// frame took 16 recvmsg or sendmsg, each a trip through the socket's locks and wake-ups. These
// let one call move as much as the socket will take.
#pragma once

#include <asio/error_code.hpp>
#include <cstddef>
#include <limits>

namespace repld {

// Until every byte of the buffers is transferred or an error occurs, with no cap per call.
struct TransferAllUncapped {
  size_t operator()(const asio::error_code& ec, size_t /*transferred*/) const {
    return ec ? 0 : std::numeric_limits<size_t>::max();
  }
};

}  // namespace repld
