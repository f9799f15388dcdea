// import-drbd: a parsed drbd.conf (drbd_conf.h) turned into one repld TOML file per resource
// (docs/config.md, "Importing a drbd.conf", has the mapping table). Nothing is dropped
// silently: what has no repld equivalent, or only an approximate one, becomes a warning for
// stderr and the same text as a comment in the generated file, next to where it applies.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cli/drbd_conf.h"
#include "common/status.h"

namespace repld::drbd {

struct Warning {
  Location where;  // in the drbd.conf
  std::string text;
};

struct ImportedResource {
  std::string name;
  std::string toml;  // a whole file, starting with a comment naming /etc/repld/NAME.toml
};

struct Imported {
  std::vector<ImportedResource> resources;  // in the order of the drbd.conf
  std::vector<Warning> warnings;            // in file order, each once
};

struct ImportOptions {
  std::string resource;  // import only this one; empty: every resource
  // A fresh shared secret (64 hex digits) for a pair whose drbd.conf has no shared-secret.
  std::function<Result<std::string>()> random_secret;
};

// Errors (a value repld cannot take, a resource it cannot represent) name the drbd.conf's
// PATH:LINE:COLUMN and what would be accepted.
Result<Imported> ImportConf(const ConfFile& conf, const ImportOptions& options);

}  // namespace repld::drbd
