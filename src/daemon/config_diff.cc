#include "daemon/config_diff.h"

#include <map>
#include <set>

#include "common/units.h"

namespace repld {
namespace {

std::string Bytes(uint64_t bytes) { return FormatSizeBytes(bytes); }
std::string Rate(uint64_t bytes) {
  return bytes == 0 ? "unlimited" : FormatSizeBytes(bytes) + "/s";
}
std::string Ms(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + "s";
  return std::to_string(ms.count()) + "ms";
}
std::string Text(const std::string& s) { return s.empty() ? "(none)" : "\"" + s + "\""; }
std::string Opt(const std::optional<std::string>& s) { return Text(s.value_or("")); }
const char* DirectIo(DirectIoMode m) {
  switch (m) {
    case DirectIoMode::kAuto:
      return "auto";
    case DirectIoMode::kOn:
      return "on";
    case DirectIoMode::kOff:
      return "off";
  }
  return "?";
}

}  // namespace

const char* AdjustWhenName(AdjustWhen when) {
  switch (when) {
    case AdjustWhen::kNow:
      return "now";
    case AdjustWhen::kNextConnection:
      return "next-connection";
    case AdjustWhen::kNextResync:
      return "next-resync";
    case AdjustWhen::kNextStart:
      return "next-start";
    case AdjustWhen::kRestart:
      return "restart";
  }
  return "?";
}

std::vector<ConfigSetting> FlattenConfig(const ResourceConfig& c, const NodeConfig& node) {
  using W = AdjustWhen;
  std::vector<ConfigSetting> out;
  auto add = [&out](std::string key, std::string value, W when) {
    out.push_back({std::move(key), std::move(value), when});
  };
  add("resource.name", Text(c.name), W::kRestart);
  add("resource.protocol", std::string(1, ProtocolLetter(c.protocol)), W::kRestart);
  add("resource.frontend", c.frontend == Frontend::kUblk ? "ublk" : "nbd", W::kRestart);

  std::string names;
  for (const NodeConfig& n : c.nodes) names += (names.empty() ? "" : ", ") + n.name;
  add("nodes", names, W::kRestart);
  const std::string self = "node." + node.name + ".";
  add(self + "disk", Text(node.disk), W::kRestart);
  add(self + "address", Opt(node.address), W::kRestart);
  add(self + "control_socket", Text(ControlSocketPath(c, node)), W::kRestart);
  if (auto peer = PeerOf(c, node))
    add("node." + peer->name + ".address", Opt(peer->address), W::kRestart);

  add("disk.meta_disk", Text(EffectiveMetaDisk(c, node)), W::kRestart);
  add("disk.al_extents", std::to_string(c.meta.al_extents), W::kRestart);
  add("disk.direct_io", DirectIo(c.direct_io), W::kRestart);
  add("disk.on_io_error", OnIoErrorName(c.on_io_error), W::kNow);

  const NbdConfig nbd = EffectiveNbd(c, node);
  add("nbd.socket", Text(nbd.socket), W::kRestart);
  add("nbd.listen", Text(nbd.listen), W::kRestart);
  add("nbd.export", Text(nbd.export_name), W::kRestart);
  add("nbd.connections_max", std::to_string(nbd.connections_max), W::kRestart);
  add("nbd.inflight_max", std::to_string(nbd.inflight_max), W::kRestart);
  add("nbd.request_bytes_max", Bytes(nbd.request_bytes_max), W::kRestart);
  add("nbd.buffer_pool_bytes", Bytes(nbd.buffer_pool_bytes), W::kRestart);

  if (c.frontend == Frontend::kUblk) {
    add("ublk.device_id", std::to_string(EffectiveUblkDeviceId(c, node)), W::kRestart);
  }
  add("ublk.queues", std::to_string(c.ublk.queues), W::kRestart);
  add("ublk.queue_depth", std::to_string(c.ublk.queue_depth), W::kRestart);
  add("ublk.io_bytes_max", Bytes(c.ublk.io_bytes_max), W::kRestart);

  // Compared by value, shown by DiffConfig as "(hidden)".
  add("net.secret", c.net.secret, W::kNextConnection);
  add("net.ping_interval", Ms(c.net.ping_interval), W::kNow);
  add("net.ping_timeout", Ms(c.net.ping_timeout), W::kNow);
  add("net.ko_count", std::to_string(c.net.ko_count), W::kNow);
  add("net.connect_timeout", Ms(c.net.connect_timeout), W::kNow);
  add("net.reconnect_max", Ms(c.net.reconnect_max), W::kNow);
  add("net.max_buffers", std::to_string(c.net.max_buffers), W::kRestart);
  add("net.after_sb_0pri", AfterSb0PriName(c.net.split_brain.zero_primaries), W::kNextConnection);
  add("net.after_sb_1pri", AfterSb1PriName(c.net.split_brain.one_primary), W::kNextConnection);
  add("net.after_sb_2pri", AfterSb2PriName(c.net.split_brain.two_primaries), W::kNextConnection);

  const ResyncController& rc = c.resync.controller;
  add("resync.rate", Rate(c.resync.rate_bytes), W::kNow);
  add("resync.checksums", c.resync.checksums ? "true" : "false", W::kNextResync);
  add("resync.c_plan_ahead",
      rc.plan_ahead_ticks == 0 ? "off" : std::to_string(rc.plan_ahead_ticks) + "s", W::kNow);
  add("resync.c_fill_target", Bytes(rc.fill_target_bytes), W::kNow);
  add("resync.c_min_rate", Rate(rc.min_rate_bytes), W::kNow);
  add("resync.c_max_rate", Rate(rc.max_rate_bytes), W::kNow);

  add("startup.wfc_timeout", Ms(c.startup.wfc_timeout), W::kNextStart);
  add("startup.degr_wfc_timeout", Ms(c.startup.degr_wfc_timeout), W::kNextStart);
  add("metrics.listen", Text(EffectiveMetricsListen(c, node)), W::kNow);
  add("control.group", Text(c.control.group), W::kRestart);
  return out;
}

std::vector<ConfigChange> DiffConfig(const ResourceConfig& running, const NodeConfig& node,
                                     const ResourceConfig& next, const NodeConfig& next_node) {
  const std::vector<ConfigSetting> before = FlattenConfig(running, node);
  const std::vector<ConfigSetting> next_settings = FlattenConfig(next, next_node);
  std::map<std::string, const ConfigSetting*> after;
  for (const ConfigSetting& s : next_settings) after.emplace(s.key, &s);
  std::set<std::string> known;
  for (const ConfigSetting& b : before) known.insert(b.key);
  std::vector<ConfigChange> changes;
  auto shown = [](const std::string& key, const std::string& value) {
    return key == "net.secret" ? std::string(value.empty() ? "(none)" : "(hidden)") : value;
  };
  for (const ConfigSetting& b : before) {
    auto it = after.find(b.key);
    if (it == after.end()) {
      changes.push_back({b.key, shown(b.key, b.value), "(none)", b.when});
    } else if (it->second->value != b.value) {
      changes.push_back({b.key, shown(b.key, b.value), shown(b.key, it->second->value), b.when});
    }
  }
  for (const ConfigSetting& s : next_settings) {  // keys only the new file has (ublk.device_id)
    if (!known.contains(s.key)) changes.push_back({s.key, "(none)", shown(s.key, s.value), s.when});
  }
  return changes;
}

ResourceConfig WithLiveKeys(const ResourceConfig& running, const NodeConfig& node,
                            const ResourceConfig& next, const NodeConfig& next_node,
                            NodeConfig& node_out) {
  ResourceConfig out = running;
  out.path = next.path;
  out.common_path = next.common_path;
  out.net.secret = next.net.secret;
  out.net.ping_interval = next.net.ping_interval;
  out.net.ping_timeout = next.net.ping_timeout;
  out.net.ko_count = next.net.ko_count;
  out.net.connect_timeout = next.net.connect_timeout;
  out.net.reconnect_max = next.net.reconnect_max;
  out.net.split_brain = next.net.split_brain;
  out.resync = next.resync;
  out.on_io_error = next.on_io_error;
  out.startup = next.startup;
  out.metrics = next.metrics;
  node_out = node;
  node_out.metrics_listen = next_node.metrics_listen;
  for (NodeConfig& n : out.nodes) {
    if (n.name == node.name) n.metrics_listen = next_node.metrics_listen;
  }
  return out;
}

}  // namespace repld
