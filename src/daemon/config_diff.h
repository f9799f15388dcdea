// What `replctl adjust` compares: the configuration a daemon runs with against its file as it
// is now, key by key, with the values in force on the daemon's node (overrides applied), and
// when each change can take effect. See docs/control.md "adjust".
#pragma once

#include <string>
#include <vector>

#include "daemon/config.h"

namespace repld {

// When a changed key takes effect in a running daemon.
enum class AdjustWhen {
  kNow,             // applied at once
  kNextConnection,  // applied; used from the next peer connection (its handshake)
  kNextResync,      // applied; used from the next resync or verify
  kNextStart,       // applied; only read when the daemon starts (startup waits)
  kRestart,         // not applied: the daemon must be restarted (replctl down, up)
};
const char* AdjustWhenName(AdjustWhen when);

struct ConfigSetting {
  std::string key;    // "resync.rate", "node.alpha.address"
  std::string value;  // for humans: "10 MiB/s", "500ms", "(none)"
  AdjustWhen when = AdjustWhen::kRestart;
};

// Every key of `config` as it applies to `node`, in a fixed order. The secret's value is
// compared but never shown: DiffConfig prints it as "(hidden)".
std::vector<ConfigSetting> FlattenConfig(const ResourceConfig& config, const NodeConfig& node);

struct ConfigChange {
  std::string key;
  std::string old_value;
  std::string new_value;
  AdjustWhen when = AdjustWhen::kRestart;
};

// The keys whose values differ between `running` (on `node`) and `next` (on `next_node`).
std::vector<ConfigChange> DiffConfig(const ResourceConfig& running, const NodeConfig& node,
                                     const ResourceConfig& next, const NodeConfig& next_node);

// `running` with every key of `next` that a daemon can take without a restart (the kNow ..
// kNextStart ones); the others keep their running values.
ResourceConfig WithLiveKeys(const ResourceConfig& running, const NodeConfig& node,
                            const ResourceConfig& next, const NodeConfig& next_node,
                            NodeConfig& node_out);

}  // namespace repld
