#include "daemon/config.h"

#include <arpa/inet.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "common/units.h"
#include "daemon/config_common.h"

namespace repld {
namespace {

// Reads typed values out of a toml::table, stopping at the first error, which it words as
// "FILE:LINE:COL: key 'a.b': what is wrong; allowed: ...".
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}

  bool failed() const { return !status_.ok(); }
  Status status() const { return status_; }

  void Fail(const toml::source_region& where, std::string_view key, const std::string& what) {
    if (failed()) return;
    // A key from the common file names that file.
    std::string message = where.path ? *where.path : path_;
    if (where.begin.line != 0) {
      message += ":" + std::to_string(where.begin.line) + ":" + std::to_string(where.begin.column);
    }
    message += ": ";
    if (!key.empty()) message += "key '" + std::string(key) + "': ";
    status_ = Status::Invalid(message + what);
  }

  void CheckKeys(const toml::table& table, const std::string& prefix,
                 std::initializer_list<std::string_view> allowed) {
    for (auto&& [key, node] : table) {
      bool known = false;
      for (auto a : allowed) known = known || key.str() == a;
      if (known) continue;
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      Fail(key.source(), Join(prefix, key.str()), "unknown key; allowed here: " + list);
      return;
    }
  }

  const toml::table* Table(const toml::table& parent, const std::string& prefix,
                           std::string_view key) {
    const toml::node* node = parent.get(key);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) {
      Fail(node->source(), Join(prefix, key), "must be a table ([" + Join(prefix, key) + "])");
      return nullptr;
    }
    return node->as_table();
  }

  // The value as written, for messages.
  static std::string Shown(const toml::node& node) {
    std::ostringstream out;
    node.visit([&out](auto&& v) { out << v; });
    std::string text = out.str();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return text;
  }

  std::optional<std::string> String(const toml::table& table, const std::string& prefix,
                                    std::string_view key, bool required) {
    const toml::node* node = table.get(key);
    if (node == nullptr) {
      if (required) Fail(table.source(), Join(prefix, key), "is required");
      return std::nullopt;
    }
    if (!node->is_string()) {
      Fail(node->source(), Join(prefix, key),
           Shown(*node) + " is not a string; allowed: a \"quoted string\"");
      return std::nullopt;
    }
    return node->as_string()->get();
  }

  std::optional<bool> Bool(const toml::table& table, const std::string& prefix,
                           std::string_view key) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_boolean()) {
      Fail(node->source(), Join(prefix, key),
           Shown(*node) + " is not a boolean; allowed: true, false");
      return std::nullopt;
    }
    return node->as_boolean()->get();
  }

  std::optional<uint64_t> Integer(const toml::table& table, const std::string& prefix,
                                  std::string_view key, uint64_t min, uint64_t max) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_integer()) {
      Fail(node->source(), Join(prefix, key),
           Shown(*node) + " is not an integer; allowed: " + std::to_string(min) + ".." +
               std::to_string(max));
      return std::nullopt;
    }
    const int64_t v = node->as_integer()->get();
    if (v < 0 || static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max) {
      Fail(node->source(), Join(prefix, key),
           std::to_string(v) + " is out of range; allowed: " + std::to_string(min) + ".." +
               std::to_string(max));
      return std::nullopt;
    }
    return static_cast<uint64_t>(v);
  }

  // Integer bytes or a string with a unit ("4KiB", "10M").
  std::optional<uint64_t> Size(const toml::table& table, const std::string& prefix,
                               std::string_view key, uint64_t min, uint64_t max) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    const std::string allowed = "allowed: " + FormatSizeBytes(min) + " to " + FormatSizeBytes(max) +
                                ", as bytes or with a unit (K, M, G, KiB, MiB, GiB)";
    std::optional<uint64_t> v;
    std::string shown;
    if (node->is_integer() && node->as_integer()->get() >= 0) {
      v = static_cast<uint64_t>(node->as_integer()->get());
      shown = std::to_string(*v);
    } else if (node->is_string()) {
      shown = "'" + node->as_string()->get() + "'";
      v = ParseSizeBytes(node->as_string()->get());
      if (!v) {
        Fail(node->source(), Join(prefix, key), shown + " is not a size; " + allowed);
        return std::nullopt;
      }
    } else {
      Fail(node->source(), Join(prefix, key), Shown(*node) + " is not a size; " + allowed);
      return std::nullopt;
    }
    if (*v < min || *v > max) {
      Fail(node->source(), Join(prefix, key), shown + " is out of range; " + allowed);
      return std::nullopt;
    }
    return v;
  }

  // A string with a unit ("500ms", "10s", "2m") or an integer number of seconds.
  std::optional<std::chrono::milliseconds> Duration(const toml::table& table,
                                                    const std::string& prefix, std::string_view key,
                                                    uint64_t min_ms, uint64_t max_ms) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    const std::string allowed = "allowed: " + std::to_string(min_ms) + "ms to " +
                                std::to_string(max_ms) + "ms, as \"500ms\", \"10s\", \"2m\"";
    std::optional<uint64_t> ms;
    std::string shown = Shown(*node);
    if (node->is_integer() && node->as_integer()->get() >= 0) {
      ms = static_cast<uint64_t>(node->as_integer()->get()) * 1000;
    } else if (node->is_string()) {
      shown = "'" + node->as_string()->get() + "'";
      ms = ParseDurationMs(node->as_string()->get());
    }
    if (!ms) {
      Fail(node->source(), Join(prefix, key), shown + " is not a duration; " + allowed);
      return std::nullopt;
    }
    if (*ms < min_ms || *ms > max_ms) {
      Fail(node->source(), Join(prefix, key), shown + " is out of range; " + allowed);
      return std::nullopt;
    }
    return std::chrono::milliseconds(*ms);
  }

  static std::string Join(const std::string& prefix, std::string_view key) {
    return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
  }

 private:
  const std::string& path_;
  Status status_;
};

}  // namespace

std::optional<HostPort> ParseHostPort(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string host(text.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string_view port_text = text.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5) return std::nullopt;
  uint32_t port = 0;
  for (char c : port_text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port == 0 || port > 65535) return std::nullopt;
  in6_addr scratch{};
  if (inet_pton(AF_INET, host.c_str(), &scratch) != 1 &&
      inet_pton(AF_INET6, host.c_str(), &scratch) != 1) {
    return std::nullopt;
  }
  return HostPort{host, static_cast<uint16_t>(port)};
}

namespace {

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) {
      return false;
    }
  }
  return true;
}

void ReadUblk(Reader& r, const toml::table& t, UblkConfig& u) {
  r.CheckKeys(t, "ublk", {"device_id", "queues", "queue_depth", "io_bytes_max"});
  if (auto v = r.Integer(t, "ublk", "device_id", 0, (1 << 20) - 1)) {
    u.device_id = static_cast<uint32_t>(*v);
  }
  if (auto v = r.Integer(t, "ublk", "queues", 1, 64)) u.queues = static_cast<uint16_t>(*v);
  if (auto v = r.Integer(t, "ublk", "queue_depth", 1, 4096)) {
    u.queue_depth = static_cast<uint16_t>(*v);
  }
  if (auto v = r.Size(t, "ublk", "io_bytes_max", 4 * kKiB, 32 * kMiB)) {
    u.io_bytes_max = static_cast<uint32_t>(*v);
    if (*v % (4 * kKiB) != 0) {
      r.Fail(t.get("io_bytes_max")->source(), "ublk.io_bytes_max",
             FormatSizeBytes(*v) +
                 " is not a multiple of 4 KiB; allowed: 4KiB to 32MiB in "
                 "steps of 4 KiB");
    }
  }
}

void ReadNbd(Reader& r, const toml::table& t, NbdConfig& nbd) {
  r.CheckKeys(t, "nbd",
              {"socket", "listen", "export", "connections_max", "inflight_max", "request_bytes_max",
               "buffer_pool_bytes"});
  if (auto v = r.String(t, "nbd", "socket", false)) nbd.socket = *v;
  if (auto v = r.String(t, "nbd", "listen", false)) {
    nbd.listen = *v;
    if (!ParseHostPort(*v)) {
      r.Fail(t.get("listen")->source(), "nbd.listen",
             "'" + *v + "' is not HOST:PORT; allowed: \"127.0.0.1:10809\", \"[::1]:10809\"");
    }
  }
  if (auto v = r.String(t, "nbd", "export", false)) nbd.export_name = *v;
  if (auto v = r.Integer(t, "nbd", "connections_max", 1, 1024)) {
    nbd.connections_max = static_cast<uint32_t>(*v);
  }
  if (auto v = r.Integer(t, "nbd", "inflight_max", 1, 1024)) {
    nbd.inflight_max = static_cast<uint32_t>(*v);
  }
  // The protocol asks for a maximum block size of at least 1 MiB.
  if (auto v = r.Size(t, "nbd", "request_bytes_max", 1 * kMiB, 32 * kMiB)) {
    nbd.request_bytes_max = *v;
    if (!IsPowerOfTwo(*v)) {
      r.Fail(t.get("request_bytes_max")->source(), "nbd.request_bytes_max",
             "must be a power of two");
    }
  }
  if (auto v = r.Size(t, "nbd", "buffer_pool_bytes", 1 * kMiB, 64 * kGiB)) {
    nbd.buffer_pool_bytes = *v;
  }
  if (!r.failed() && nbd.buffer_pool_bytes < nbd.request_bytes_max) {
    const toml::node* n = t.get("buffer_pool_bytes");
    r.Fail(n ? n->source() : t.source(), "nbd.buffer_pool_bytes",
           FormatSizeBytes(nbd.buffer_pool_bytes) + " cannot hold one request of " +
               "nbd.request_bytes_max (" + FormatSizeBytes(nbd.request_bytes_max) +
               "); allowed: at least nbd.request_bytes_max");
  }
}

void ReadNode(Reader& r, const std::string& name, const toml::node& node,
              std::vector<NodeConfig>& nodes) {
  const std::string prefix = "node." + name;
  if (!node.is_table()) {
    r.Fail(node.source(), prefix, "must be a table ([" + prefix + "])");
    return;
  }
  if (!IsValidName(name)) {
    r.Fail(node.source(), prefix, "node names are host names: 1 to 64 of A-Z a-z 0-9 _ - .");
    return;
  }
  const toml::table& t = *node.as_table();
  r.CheckKeys(t, prefix,
              {"disk", "meta_disk", "address", "nbd_socket", "nbd_listen", "control_socket",
               "ublk_device_id", "metrics_listen"});
  NodeConfig n;
  n.name = name;
  if (auto v = r.String(t, prefix, "disk", true)) n.disk = *v;
  n.meta_disk = r.String(t, prefix, "meta_disk", false);
  n.address = r.String(t, prefix, "address", false);
  n.nbd_socket = r.String(t, prefix, "nbd_socket", false);
  n.nbd_listen = r.String(t, prefix, "nbd_listen", false);
  n.control_socket = r.String(t, prefix, "control_socket", false);
  n.metrics_listen = r.String(t, prefix, "metrics_listen", false);
  if (auto v = r.Integer(t, prefix, "ublk_device_id", 0, (1 << 20) - 1)) {
    n.ublk_device_id = static_cast<uint32_t>(*v);
  }
  for (const auto& [key, value] : {std::pair{"nbd_listen", &n.nbd_listen},
                                   {"address", &n.address},
                                   {"metrics_listen", &n.metrics_listen}}) {
    if (*value && !ParseHostPort(**value)) {
      r.Fail(t.get(key)->source(), prefix + "." + key,
             "'" + **value + "' is not HOST:PORT; allowed: \"10.0.0.1:7788\", \"[::1]:7788\"");
    }
  }
  if (!r.failed() && n.disk.empty()) r.Fail(t.get("disk")->source(), prefix + ".disk", "is empty");
  nodes.push_back(std::move(n));
}

// One of the after-sb policies: `parse` knows its spellings, `allowed` lists them.
template <typename E>
void ReadPolicy(Reader& r, const toml::table& t, std::string_view key,
                bool (*parse)(const std::string&, E*), const char* allowed, E& out) {
  const auto v = r.String(t, "net", key, false);
  if (v && !parse(*v, &out)) {
    r.Fail(t.get(key)->source(), "net." + std::string(key),
           "'" + *v + "' is not a split-brain policy; allowed: " + allowed);
  }
}

void ReadNet(Reader& r, const toml::table& t, NetConfig& net) {
  r.CheckKeys(t, "net",
              {"secret", "ping_interval", "ping_timeout", "ko_count", "connect_timeout",
               "reconnect_max", "max_buffers", "after_sb_0pri", "after_sb_1pri", "after_sb_2pri"});
  if (auto v = r.String(t, "net", "secret", false)) {
    net.secret = *v;
    if (v->empty() || v->size() > 256) {
      r.Fail(t.get("secret")->source(), "net.secret",
             "must be 1 to 256 characters; allowed: any shared string, the same on both nodes");
    }
  }
  if (auto v = r.Duration(t, "net", "ping_interval", 100, 3'600'000)) net.ping_interval = *v;
  if (auto v = r.Duration(t, "net", "ping_timeout", 10, 60'000)) net.ping_timeout = *v;
  if (auto v = r.Integer(t, "net", "ko_count", 0, 1000)) net.ko_count = static_cast<uint32_t>(*v);
  if (auto v = r.Duration(t, "net", "connect_timeout", 100, 600'000)) net.connect_timeout = *v;
  if (auto v = r.Duration(t, "net", "reconnect_max", 100, 600'000)) net.reconnect_max = *v;
  if (auto v = r.Integer(t, "net", "max_buffers", 32, 131072)) {
    net.max_buffers = static_cast<uint32_t>(*v);
  }
  ReadPolicy(r, t, "after_sb_0pri", ParseAfterSb0Pri,
             "\"disconnect\", \"discard-younger-primary\", \"discard-least-changes\", "
             "\"discard-zero-changes\"",
             net.split_brain.zero_primaries);
  ReadPolicy(r, t, "after_sb_1pri", ParseAfterSb1Pri,
             "\"disconnect\", \"consensus\", \"discard-secondary\"", net.split_brain.one_primary);
  ReadPolicy(r, t, "after_sb_2pri", ParseAfterSb2Pri, "\"disconnect\"",
             net.split_brain.two_primaries);
}

Result<toml::table> ParseToml(std::string_view text, const std::string& path) {
  try {
    return toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    return Status::Invalid(path + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) +
                           ": " + std::string(e.description()));
  }
}

void ReadStartup(Reader& r, const toml::table& t, StartupConfig& s) {
  r.CheckKeys(t, "startup", {"wfc_timeout", "degr_wfc_timeout"});
  constexpr uint64_t kYearMs = 366ULL * 24 * 3600 * 1000;
  if (auto v = r.Duration(t, "startup", "wfc_timeout", 0, kYearMs)) s.wfc_timeout = *v;
  if (auto v = r.Duration(t, "startup", "degr_wfc_timeout", 0, kYearMs)) s.degr_wfc_timeout = *v;
}

void ReadMetrics(Reader& r, const toml::table& t, MetricsConfig& m) {
  r.CheckKeys(t, "metrics", {"listen"});
  if (auto v = r.String(t, "metrics", "listen", false)) {
    m.listen = *v;
    if (!ParseHostPort(*v)) {
      r.Fail(t.get("listen")->source(), "metrics.listen",
             "'" + *v + "' is not HOST:PORT; allowed: \"127.0.0.1:9942\", \"[::1]:9942\"");
    }
  }
}

void ReadControl(Reader& r, const toml::table& t, ControlConfig& c) {
  r.CheckKeys(t, "control", {"group"});
  if (auto v = r.String(t, "control", "group", false)) {
    c.group = *v;
    const bool valid = !v->empty() && v->size() <= 32 &&
                       v->find_first_not_of(
                           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                           "0123456789_-.") == std::string::npos;
    if (!valid) {
      r.Fail(t.get("group")->source(), "control.group",
             "'" + *v + "' is not a group name; allowed: a group of this machine, as \"repld\"");
    }
  }
}

}  // namespace

Result<ResourceConfig> ParseConfig(std::string_view text, const std::string& path,
                                   std::string_view common_text, const std::string& common_path) {
  auto parsed = ParseToml(text, path);
  if (!parsed.ok()) return parsed.status();
  toml::table& root = parsed.value();
  if (!common_path.empty()) {
    auto common = ParseToml(common_text, common_path);
    if (!common.ok()) return common.status();
    if (Status s = MergeCommon(root, common.value(), common_path); !s.ok()) return s;
  }
  Reader r(path);
  ResourceConfig config;
  config.path = path;
  config.common_path = common_path;
  r.CheckKeys(root, "",
              {"resource", "nbd", "ublk", "net", "disk", "resync", "startup", "metrics", "control",
               "node"});

  const toml::table* resource = r.Table(root, "", "resource");
  if (!r.failed() && resource == nullptr) {
    r.Fail({}, "resource.name", "is required ([resource] with name = \"...\")");
  }
  if (resource != nullptr) {
    r.CheckKeys(*resource, "resource", {"name", "protocol", "frontend"});
    if (auto v = r.String(*resource, "resource", "name", true)) {
      config.name = *v;
      if (!IsValidName(*v)) {
        r.Fail(resource->get("name")->source(), "resource.name",
               "'" + *v + "' is not a valid name; allowed: 1 to 64 of A-Z a-z 0-9 _ - .");
      }
    }
    if (auto v = r.String(*resource, "resource", "protocol", false)) {
      if (*v == "A") {
        config.protocol = Protocol::kA;
      } else if (*v == "B") {
        config.protocol = Protocol::kB;
      } else if (*v == "C") {
        config.protocol = Protocol::kC;
      } else {
        r.Fail(resource->get("protocol")->source(), "resource.protocol",
               "'" + *v + "' is not a protocol; allowed: \"A\", \"B\", \"C\"");
      }
    }
    if (auto v = r.String(*resource, "resource", "frontend", false)) {
      if (*v == "nbd") {
        config.frontend = Frontend::kNbd;
      } else if (*v == "ublk") {
        config.frontend = Frontend::kUblk;
      } else {
        r.Fail(resource->get("frontend")->source(), "resource.frontend",
               "'" + *v + "' is not a frontend; allowed: \"nbd\", \"ublk\"");
      }
    }
  }
  if (const toml::table* ublk = r.Table(root, "", "ublk")) ReadUblk(r, *ublk, config.ublk);
  if (const toml::table* net = r.Table(root, "", "net")) ReadNet(r, *net, config.net);
  if (const toml::table* nbd = r.Table(root, "", "nbd")) ReadNbd(r, *nbd, config.nbd);
  if (const toml::table* resync = r.Table(root, "", "resync")) {
    r.CheckKeys(*resync, "resync",
                {"rate", "checksums", "c_plan_ahead", "c_fill_target", "c_min_rate", "c_max_rate"});
    if (auto v = r.Size(*resync, "resync", "rate", 0, 100 * kGiB)) config.resync.rate_bytes = *v;
    ResyncController& c = config.resync.controller;
    if (auto v = r.Duration(*resync, "resync", "c_plan_ahead", 0, 300'000)) {
      c.plan_ahead_ticks = static_cast<uint32_t>((v->count() + 999) / 1000);
    }
    if (auto v = r.Size(*resync, "resync", "c_fill_target", 0, 256 * kMiB)) {
      c.fill_target_bytes = *v;
    }
    if (auto v = r.Size(*resync, "resync", "c_min_rate", 0, 100 * kGiB)) c.min_rate_bytes = *v;
    if (auto v = r.Size(*resync, "resync", "c_max_rate", 0, 100 * kGiB)) c.max_rate_bytes = *v;
    if (!r.failed() && c.plan_ahead_ticks > 0 && config.resync.rate_bytes > 0) {
      r.Fail(resync->get("rate")->source(), "resync.rate",
             "a fixed rate and the dynamic controller (c_plan_ahead) together; allowed: one of "
             "them (the dynamic one is bounded by c_min_rate and c_max_rate)");
    }
    if (!r.failed() && c.max_rate_bytes > 0 && c.min_rate_bytes > c.max_rate_bytes) {
      r.Fail(resync->get("c_min_rate") ? resync->get("c_min_rate")->source()
                                       : resync->get("c_max_rate")->source(),
             "resync.c_min_rate", "is above resync.c_max_rate; allowed: at most c_max_rate");
    }
    if (auto v = r.Bool(*resync, "resync", "checksums")) config.resync.checksums = *v;
  }
  if (const toml::table* disk = r.Table(root, "", "disk")) {
    r.CheckKeys(*disk, "disk", {"direct_io", "meta_disk", "al_extents", "on_io_error"});
    if (auto v = r.String(*disk, "disk", "meta_disk", false)) {
      config.meta.meta_disk = *v;
      if (v->empty()) {
        r.Fail(disk->get("meta_disk")->source(), "disk.meta_disk",
               "is empty; allowed: \"internal\" or the path of a file or block device");
      }
    }
    if (auto v = r.Integer(*disk, "disk", "al_extents", 7, 65534)) {
      config.meta.al_extents = static_cast<uint32_t>(*v);
    }
    if (auto v = r.String(*disk, "disk", "direct_io", false)) {
      if (*v == "auto") {
        config.direct_io = DirectIoMode::kAuto;
      } else if (*v == "on") {
        config.direct_io = DirectIoMode::kOn;
      } else if (*v == "off") {
        config.direct_io = DirectIoMode::kOff;
      } else {
        r.Fail(disk->get("direct_io")->source(), "disk.direct_io",
               "'" + *v + "' is not allowed; allowed: \"auto\", \"on\", \"off\"");
      }
    }
    if (auto v = r.String(*disk, "disk", "on_io_error", false)) {
      if (*v == "detach") {
        config.on_io_error = OnIoError::kDetach;
      } else if (*v == "pass_on") {
        config.on_io_error = OnIoError::kPassOn;
      } else {
        r.Fail(disk->get("on_io_error")->source(), "disk.on_io_error",
               "'" + *v + "' is not allowed; allowed: \"detach\", \"pass_on\"");
      }
    }
  }
  if (const toml::table* t = r.Table(root, "", "startup")) ReadStartup(r, *t, config.startup);
  if (const toml::table* t = r.Table(root, "", "metrics")) ReadMetrics(r, *t, config.metrics);
  if (const toml::table* t = r.Table(root, "", "control")) ReadControl(r, *t, config.control);
  if (const toml::table* nodes = r.Table(root, "", "node")) {
    for (auto&& [key, node] : *nodes) ReadNode(r, std::string(key.str()), node, config.nodes);
  }
  if (!r.failed() && config.nodes.empty()) {
    r.Fail({}, "node", "at least one [node.NAME] table with disk = \"...\" is required");
  }
  if (!r.failed() && config.nodes.size() > 2) {
    r.Fail({}, "node",
           std::to_string(config.nodes.size()) +
               " [node.NAME] tables; allowed: one (standalone) or two (a pair)");
  }
  if (!r.failed() && config.nodes.size() == 2) {
    for (const NodeConfig& n : config.nodes) {
      if (!n.address) {
        r.Fail({}, "node." + n.name + ".address",
               "is required when the file names two nodes (the peer link's \"HOST:PORT\")");
      }
    }
    if (!r.failed() && config.net.secret.empty()) {
      r.Fail({}, "net.secret",
             "is required when the file names two nodes: the peers authenticate each other "
             "with it (HMAC-SHA256)");
    }
  }
  if (!r.failed() && config.frontend == Frontend::kUblk && !config.ublk.device_id &&
      std::any_of(config.nodes.begin(), config.nodes.end(),
                  [](const NodeConfig& n) { return !n.ublk_device_id; })) {
    r.Fail(resource->get("frontend")->source(), "ublk.device_id",
           "is required with frontend = \"ublk\" (the N of /dev/ublkbN; a node may override "
           "it with ublk_device_id); allowed: 0..1048575");
  }
  if (r.failed()) return r.status();
  if (config.nbd.socket.empty()) config.nbd.socket = "/run/repld/" + config.name + ".sock";
  if (config.nbd.export_name.empty()) config.nbd.export_name = config.name;
  return config;
}

namespace {

Result<std::string> ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    return Status::Error(err, path + ": cannot read the configuration: " + ErrnoText(err));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Result<ResourceConfig> LoadConfig(const std::string& path) {
  auto text = ReadText(path);
  if (!text.ok()) return text.status();
  const std::filesystem::path file(path);
  const std::filesystem::path common = file.parent_path() / kCommonFileName;
  std::error_code ec;
  if (file.filename() == kCommonFileName) {
    return Status::Invalid(path +
                           ": this is the common file (defaults for every resource), "
                           "not a resource: name a resource's file");
  }
  if (!std::filesystem::exists(common, ec)) return ParseConfig(text.value(), path);
  auto common_text = ReadText(common.string());
  if (!common_text.ok()) return common_text.status();
  return ParseConfig(text.value(), path, common_text.value(), common.string());
}

Result<std::vector<std::string>> ResourceFiles(const std::string& directory) {
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    const std::filesystem::path& p = entry.path();
    if (p.extension() == ".toml" && p.filename() != kCommonFileName) files.push_back(p.string());
  }
  if (ec) {
    return Status::Error(ec.value(),
                         directory + ": cannot list the resource files: " + ec.message());
  }
  std::sort(files.begin(), files.end());
  return files;
}

Result<NodeConfig> SelectNode(const ResourceConfig& config, std::optional<std::string> requested) {
  std::string wanted;
  if (requested) {
    wanted = *requested;
  } else {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    wanted = host;
  }
  std::string names;
  for (const NodeConfig& node : config.nodes) {
    if (node.name == wanted) return node;
    names += (names.empty() ? "" : ", ") + node.name;
  }
  if (requested) {
    return Status::Invalid(config.path + ": no [node." + wanted + "] table; nodes here: " + names);
  }
  return Status::Invalid(config.path + ": no [node.NAME] table matches this host's name '" +
                         wanted + "'; nodes here: " + names + "; pass --node NAME");
}

uint32_t EffectiveUblkDeviceId(const ResourceConfig& config, const NodeConfig& node) {
  return node.ublk_device_id.value_or(config.ublk.device_id.value_or(0));
}

std::string EffectiveMetaDisk(const ResourceConfig& config, const NodeConfig& node) {
  return node.meta_disk ? *node.meta_disk : config.meta.meta_disk;
}

std::string ControlSocketPath(const ResourceConfig& config, const NodeConfig& node) {
  return node.control_socket ? *node.control_socket : "/run/repld/" + config.name + ".ctl";
}

std::string EffectiveMetricsListen(const ResourceConfig& config, const NodeConfig& node) {
  return node.metrics_listen ? *node.metrics_listen : config.metrics.listen;
}

std::optional<NodeConfig> PeerOf(const ResourceConfig& config, const NodeConfig& node) {
  if (config.nodes.size() != 2) return std::nullopt;
  return config.nodes[0].name == node.name ? config.nodes[1] : config.nodes[0];
}

NbdConfig EffectiveNbd(const ResourceConfig& config, const NodeConfig& node) {
  NbdConfig nbd = config.nbd;
  if (node.nbd_socket) nbd.socket = *node.nbd_socket;
  if (node.nbd_listen) nbd.listen = *node.nbd_listen;
  return nbd;
}

}  // namespace repld
