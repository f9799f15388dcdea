#include "daemon/config_common.h"

#include <string_view>
#include <utility>
#include <vector>

namespace repld {
namespace {

struct CommonTable {
  std::string_view name;
  std::vector<std::string_view> keys;
};

// What a common file may set. Names, sockets, ports, disks and device numbers are per resource.
const std::vector<CommonTable>& CommonTables() {
  static const std::vector<CommonTable> tables = {
      {"resource", {"protocol", "frontend"}},
      {"net",
       {"secret", "ping_interval", "ping_timeout", "ko_count", "connect_timeout", "reconnect_max",
        "max_buffers", "after_sb_0pri", "after_sb_1pri", "after_sb_2pri"}},
      {"nbd", {"connections_max", "inflight_max", "request_bytes_max", "buffer_pool_bytes"}},
      {"ublk", {"queues", "queue_depth", "io_bytes_max"}},
      {"disk", {"direct_io", "al_extents", "on_io_error"}},
      {"resync",
       {"rate", "checksums", "c_plan_ahead", "c_fill_target", "c_min_rate", "c_max_rate"}},
      {"startup", {"wfc_timeout", "degr_wfc_timeout"}},
      {"control", {"group"}},
  };
  return tables;
}

std::string Where(const toml::source_region& where, const std::string& path) {
  return path + ":" + std::to_string(where.begin.line) + ":" + std::to_string(where.begin.column);
}

std::string List(const std::vector<std::string_view>& names) {
  std::string list;
  for (auto n : names) list += (list.empty() ? "" : ", ") + std::string(n);
  return list;
}

const CommonTable* FindTable(std::string_view name) {
  for (const CommonTable& t : CommonTables()) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

}  // namespace

Status MergeCommon(toml::table& root, toml::table& common, const std::string& common_path) {
  for (auto&& [name, node] : common) {
    const CommonTable* allowed = FindTable(name.str());
    if (allowed == nullptr) {
      std::string tables;
      for (const CommonTable& t : CommonTables()) {
        tables += (tables.empty() ? "" : ", ") + std::string(t.name);
      }
      return Status::Invalid(Where(name.source(), common_path) + ": key '" +
                             std::string(name.str()) +
                             "': not allowed in the common file (it is per resource: set it in "
                             "the resource's own file); allowed tables here: " +
                             tables);
    }
    if (!node.is_table()) {
      return Status::Invalid(Where(node.source(), common_path) + ": key '" +
                             std::string(name.str()) + "': must be a table ([" +
                             std::string(name.str()) + "])");
    }
    for (auto&& [key, value] : *node.as_table()) {
      bool known = false;
      for (auto k : allowed->keys) known = known || k == key.str();
      if (!known) {
        return Status::Invalid(Where(key.source(), common_path) + ": key '" +
                               std::string(name.str()) + "." + std::string(key.str()) +
                               "': not allowed in the common file; allowed in [" +
                               std::string(name.str()) + "] here: " + List(allowed->keys));
      }
    }
  }
  // Moved, not copied: a copy of a toml++ node forgets where it came from.
  for (auto&& [name, node] : common) {
    toml::node* mine = root.get(name.str());
    if (mine == nullptr) {
      root.insert(name.str(), std::move(*node.as_table()));
      continue;
    }
    if (!mine->is_table()) continue;  // the resource file's own error is reported later
    toml::table& target = *mine->as_table();
    for (auto&& [key, value] : *node.as_table()) {
      if (!target.contains(key.str())) {
        value.visit([&target, &key](auto&& v) { target.insert(key.str(), std::move(v)); });
      }
    }
  }
  return Status::Ok();
}

}  // namespace repld
