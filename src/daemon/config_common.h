// The common file (/etc/repld/common.toml): defaults for every resource, as drbd.conf's
// `common { }` section. Its tables may hold only the keys that make sense for many resources;
// a key the resource's own file sets wins.
#pragma once

#include <toml++/toml.h>

#include <string>

#include "common/status.h"

namespace repld {

// Checks `common` (parsed from `common_path`) and moves each of its keys that `root` lacks into
// `root` (`common` is consumed). They keep their source positions, so that errors in them name
// the common file.
Status MergeCommon(toml::table& root, toml::table& common, const std::string& common_path);

}  // namespace repld
