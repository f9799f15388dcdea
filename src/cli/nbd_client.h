// The client side of an NBD handshake (fixed newstyle, NBD_OPT_GO), blocking, for replctl
// nbd-attach: it opens the daemon's export on a socket that is then handed to the kernel's nbd
// driver, which speaks the transmission phase itself.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace repld::cli {

struct NbdExportInfo {
  uint64_t size_bytes = 0;
  uint16_t transmission_flags = 0;
  uint32_t block_min_bytes = 1;
};

// Connects to the unix socket at `path` and selects `export_name`. Returns the connected fd (the
// caller owns it) and what the server says about the export; a refusal carries the server's text
// (a Secondary explains how to promote).
Result<int> NbdOpenExport(const std::string& path, const std::string& export_name,
                          NbdExportInfo& info);

}  // namespace repld::cli
