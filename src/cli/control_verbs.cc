// The verbs that talk to a running daemon over its control socket.
#include "cli/verbs.h"

namespace repld::cli {

std::vector<Verb> AddControlVerbs(CLI::App&) { return {}; }

}  // namespace repld::cli
