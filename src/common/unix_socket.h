// Unix socket helpers shared by the servers that own a socket file (NBD, control).
#pragma once

#include <string>
#include <string_view>

namespace repld {

// True if a live server answers on the unix socket at `path`. A socket whose server died can
// still accept into its backlog for a moment (io_uring releases a killed process's files
// asynchronously), so a connect alone proves nothing: after sending `probe` (if any), a live
// server answers within a second or closes in an orderly way; a dead one resets or stays silent.
bool UnixSocketIsLive(const std::string& path, std::string_view probe = {});

}  // namespace repld
