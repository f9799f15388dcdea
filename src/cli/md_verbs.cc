// create-md, dump-md: the resource's on-disk metadata (see docs/metadata.md).
#include "cli/verbs.h"

namespace repld::cli {

std::vector<Verb> AddMetadataVerbs(CLI::App&) { return {}; }

}  // namespace repld::cli
