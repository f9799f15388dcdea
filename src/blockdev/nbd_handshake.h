// The fixed newstyle handshake, server side: greeting, option haggling (GO, INFO, LIST, ABORT,
// EXPORT_NAME, STRUCTURED_REPLY; anything else gets NBD_REP_ERR_UNSUP) and the switch to the
// transmission phase.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <optional>
#include <string>

#include "blockdev/nbd_export.h"

namespace repld {

struct NbdSession {
  bool structured_replies = false;
  bool block_size_requested = false;
};

// Returns the negotiated session, or nullopt if the client aborted, misbehaved or failed
// (`why` then says what happened, for the log).
asio::awaitable<std::optional<NbdSession>> NegotiateNbd(asio::generic::stream_protocol::socket& s,
                                                        const NbdExport& exp,
                                                        const NbdLimits& limits, std::string& why);

}  // namespace repld
