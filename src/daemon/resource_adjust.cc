// replctl adjust: the resource's file, read again, against what this daemon runs with.
#include <spdlog/spdlog.h>

#include "daemon/config_diff.h"
#include "daemon/resource.h"

namespace repld {

nlohmann::json Resource::Adjust(bool dry_run) {
  auto fail = [](const std::string& message) {
    return nlohmann::json{{"ok", false}, {"error", message + "; nothing was changed"}};
  };
  auto next = LoadConfig(config_.path);
  if (!next.ok()) return fail(next.status().message());
  auto next_node = SelectNode(next.value(), node_.name);
  if (!next_node.ok()) {
    return fail(config_.path + " no longer defines node '" + node_.name +
                "', which this daemon runs as (to stop it: replctl down " + config_.name + ")");
  }
  const std::vector<ConfigChange> changes =
      DiffConfig(config_, node_, next.value(), next_node.value());

  bool restart = false;
  bool metrics_changed = false;
  nlohmann::json list = nlohmann::json::array();
  for (const ConfigChange& c : changes) {
    restart = restart || c.when == AdjustWhen::kRestart;
    metrics_changed = metrics_changed || c.key == "metrics.listen";
    list.push_back({{"key", c.key},
                    {"old", c.old_value},
                    {"new", c.new_value},
                    {"when", AdjustWhenName(c.when)},
                    {"applied", !dry_run && c.when != AdjustWhen::kRestart}});
  }
  if (!dry_run) {
    NodeConfig live_node;
    ResourceConfig live = WithLiveKeys(config_, node_, next.value(), next_node.value(), live_node);
    if (metrics_changed) {
      // The new endpoint first: if it cannot listen, the old one (and everything else) stays.
      auto metrics = StartMetrics(live, live_node);
      if (!metrics.ok()) return fail(metrics.status().message());
      if (metrics_ != nullptr) metrics_->Stop();
      metrics_ = std::move(metrics).value();
    }
    if (device_ != nullptr) device_->Retune(live);
    config_ = std::move(live);
    node_ = std::move(live_node);
    for (const ConfigChange& c : changes) {
      if (c.when == AdjustWhen::kRestart) {
        spdlog::warn("resource {}: adjust: {} changed ({} -> {}) but needs a restart", config_.name,
                     c.key, c.old_value, c.new_value);
      } else {
        spdlog::info("resource {}: adjust: {}: {} -> {} ({})", config_.name, c.key, c.old_value,
                     c.new_value, AdjustWhenName(c.when));
      }
    }
  }
  return nlohmann::json{{"changes", std::move(list)},
                        {"dry_run", dry_run},
                        {"file", config_.path},
                        {"restart_needed", restart},
                        {"status", StatusJson()}};
}

}  // namespace repld
