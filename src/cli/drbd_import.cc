// The file's structure: global, common, include and resource sections; each resource's nodes
// (on HOST { }) and the sections whose options drbd_options.cc maps.
#include "cli/drbd_import.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "cli/drbd_import_state.h"

namespace repld::drbd {
namespace {

using cli::TomlText;

// The sections whose options are looked up by name (DRBD 8.3 and 8.4 place some differently).
bool IsOptionSection(const std::string& keyword) {
  return keyword == "net" || keyword == "disk" || keyword == "syncer" || keyword == "startup" ||
         keyword == "options";
}

// repld's names for resources and nodes (config.cc).
bool IsRepldName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// A remark about the file outside its resources, repeated at the top of every generated file.
struct FileRemark {
  Location where;
  std::string text;
  bool warning = false;
};

struct FileScope {
  std::vector<FileRemark> remarks;
  const Statement* common = nullptr;
  std::vector<const Statement*> resources;
  bool has_include = false;
};

constexpr std::pair<const char*, const char*> kGlobalNotes[] = {
    {"minor-count", "repld needs no device count (a node's ublk_device_id names its device)"},
    {"dialog-refresh", "repld has no boot-time dialog"},
    {"usage-count", "repld reports no usage"},
};

Status Error(const std::string& path, Location at, const std::string& text) {
  return Status::Invalid(path + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) +
                         ": " + text);
}

void ReadGlobal(const Statement& global, FileScope& scope) {
  for (const Statement& st : global.body) {
    const char* why = nullptr;
    for (auto [keyword, text] : kGlobalNotes) {
      if (st.keyword.text == keyword) why = text;
    }
    scope.remarks.push_back(
        {st.keyword.where,
         "global " + st.Shown() + ": dropped; " + (why ? why : "no repld equivalent"),
         why == nullptr});
  }
}

Result<FileScope> ReadTopLevel(const ConfFile& conf) {
  FileScope scope;
  for (const Statement& st : conf.statements) {
    const std::string& k = st.keyword.text;
    if (k == "global" && st.has_body) {
      ReadGlobal(st, scope);
    } else if (k == "common" && st.has_body) {
      if (scope.common != nullptr) {
        return Error(conf.path, st.keyword.where, "a second common section; expected one");
      }
      scope.common = &st;
    } else if (k == "resource" && st.has_body) {
      if (st.args.size() != 1) {
        return Error(conf.path, st.args.empty() ? st.keyword.end : st.args[1].where,
                     "expected one resource name after 'resource', then '{'");
      }
      for (const Statement* other : scope.resources) {
        if (other->args[0].text == st.args[0].text) {
          return Error(conf.path, st.args[0].where,
                       "resource " + st.args[0].text + " is defined twice (also at line " +
                           std::to_string(other->keyword.where.line) + ")");
        }
      }
      scope.resources.push_back(&st);
    } else if (k == "include" && !st.has_body) {
      scope.has_include = true;
      scope.remarks.push_back(
          {st.keyword.where,
           st.Shown() + ": not followed; import-drbd reads only this file. Import the included "
                        "files with it: cat them into one file (common first) and import that",
           true});
    } else if (k == "skip" && st.has_body) {
      scope.remarks.push_back({st.keyword.where, "skip section ignored, as DRBD does", false});
    } else {
      scope.remarks.push_back(
          {st.keyword.where, "'" + st.Shown() + "' is not a drbd.conf section; ignored", true});
    }
  }
  return scope;
}

// One `on HOST { }` section, and where its settings were found (the section, a volume in it,
// or the resource level as DRBD 8.4 allows).
struct Node {
  const Statement* on = nullptr;
  std::string host;
  const Statement* device = nullptr;
  const Statement* disk = nullptr;
  const Statement* address = nullptr;
  const Statement* meta_disk = nullptr;  // meta-disk or flexible-meta-disk
  const Statement* volume = nullptr;     // its one volume { } (8.4), if any
  std::optional<uint32_t> minor;
  std::string table;  // "node.HOST"
};

// What a resource's body holds besides the options it added to the ResourceImport.
struct ResourceParts {
  std::vector<const Statement*> ons;
  std::vector<const Statement*> layers;  // bodies' statements to look node settings up in
  const Statement* volume = nullptr;     // a resource-level volume { }
  std::vector<const Statement*> handlers;
  std::vector<const Statement*> unknown;
};

bool IsNodeSetting(const std::string& k) {
  return k == "device" || k == "disk" || k == "address" || k == "meta-disk" ||
         k == "flexible-meta-disk";
}

// The one volume { } of a body, if any; repld replicates one device per resource.
Result<const Statement*> OnlyVolume(ResourceImport& r, const std::vector<Statement>& body) {
  const Statement* found = nullptr;
  for (const Statement& st : body) {
    if (st.keyword.text != "volume" || !st.has_body) continue;
    if (found != nullptr) {
      return r.Error(st.keyword.where,
                     "a second volume: repld replicates one device per resource; make each "
                     "volume a resource of its own in drbd.conf first");
    }
    found = &st;
  }
  return found;
}

// Adds a section's options (common's or the resource's) and sorts out everything else.
Status ReadBody(ResourceImport& r, const Statement& body, bool is_common, ResourceParts& parts) {
  for (const Statement& st : body.body) {
    const std::string& k = st.keyword.text;
    if (st.has_body && IsOptionSection(k)) {
      for (const Statement& opt : st.body) {
        if (opt.has_body) {
          parts.unknown.push_back(&opt);
        } else {
          r.AddOption(opt, k, is_common);
        }
      }
    } else if (k == "protocol" && !st.has_body) {
      r.AddOption(st, "", is_common);
    } else if (k == "handlers" && st.has_body) {
      parts.handlers.push_back(&st);
    } else if (k == "on" && st.has_body && !is_common) {
      parts.ons.push_back(&st);
    } else if (k == "volume" && st.has_body && !is_common) {
      continue;  // node settings (8.4), looked up by NodeSetting
    } else if (IsNodeSetting(k) && !st.has_body && !is_common) {
      continue;  // a default for the nodes (8.4), looked up by NodeSetting
    } else if ((k == "floating" || k == "stacked-on-top-of") && !is_common) {
      return r.Error(st.keyword.where,
                     "'" + k +
                         "' sections are not supported: repld's nodes are 'on HOST' "
                         "sections, two at most, on their own disks");
    } else if (k != "skip") {
      parts.unknown.push_back(&st);
    }
  }
  return Status::Ok();
}

// The last `keyword` statement of the first body (in the order given) that has one.
const Statement* NodeSetting(const std::vector<const std::vector<Statement>*>& bodies,
                             std::initializer_list<std::string_view> keywords) {
  for (const std::vector<Statement>* body : bodies) {
    const Statement* found = nullptr;
    for (const Statement& st : *body) {
      if (st.has_body) continue;
      for (std::string_view k : keywords) {
        if (st.keyword.text == k) found = &st;
      }
    }
    if (found != nullptr) return found;
  }
  return nullptr;
}

// DRBD's `address [FAMILY] IP:PORT`.
bool IsAddressFamily(const std::string& word) {
  return word == "ipv4" || word == "ipv6" || word == "ssocks" || word == "sdp" || word == "sci";
}

// "/dev/drbd0", "/dev/drbd0 minor 0", "minor 0", "/dev/drbd_www minor 3": the minor.
std::optional<uint32_t> MinorOf(const Statement& device) {
  std::string digits;
  const auto& a = device.args;
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i].text == "minor") digits = a[i + 1].text;
  }
  if (digits.empty() && a.size() == 1 && a[0].text.rfind("/dev/drbd", 0) == 0) {
    digits = a[0].text.substr(9);
  }
  if (digits.empty() || digits.size() > 7 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return std::isdigit(c) != 0; })) {
    return std::nullopt;
  }
  const uint32_t minor = static_cast<uint32_t>(std::stoul(digits));
  if (minor >= (1u << 20)) return std::nullopt;
  return minor;
}

Result<Node> ReadNode(ResourceImport& r, const Statement& on, const Statement& resource,
                      const ResourceParts& parts) {
  if (on.args.size() != 1) {
    return r.Error(on.args.empty() ? on.keyword.end : on.args[1].where,
                   "expected one host name after 'on', then '{'");
  }
  Node n;
  n.on = &on;
  n.host = on.args[0].text;
  if (!IsRepldName(n.host)) {
    return r.Error(on.args[0].where, "host name '" + n.host +
                                         "' is not one repld takes; "
                                         "allowed: 1 to 64 of A-Z a-z 0-9 _ - .");
  }
  n.table = "node." + TomlText::KeyName(n.host);
  auto volume = OnlyVolume(r, on.body);
  if (!volume.ok()) return volume.status();
  n.volume = volume.value();
  std::vector<const std::vector<Statement>*> bodies = {&on.body};
  if (n.volume != nullptr) bodies.push_back(&n.volume->body);
  bodies.push_back(&resource.body);
  if (parts.volume != nullptr) bodies.push_back(&parts.volume->body);
  n.device = NodeSetting(bodies, {"device"});
  n.disk = NodeSetting(bodies, {"disk"});
  n.address = NodeSetting(bodies, {"address"});
  n.meta_disk = NodeSetting(bodies, {"meta-disk", "flexible-meta-disk"});
  if (n.disk == nullptr) {
    return r.Error(on.keyword.where, "on " + n.host + ": no disk; repld needs the backing disk");
  }
  if (n.device != nullptr) n.minor = MinorOf(*n.device);
  return n;
}

// meta-disk internal | PATH | PATH [INDEX] | PATH[INDEX]; flexible-meta-disk internal | PATH.
Status EmitMetaDisk(ResourceImport& r, const Node& n) {
  const Statement& st = *n.meta_disk;
  std::string joined;
  for (const Word& a : st.args) joined += (joined.empty() ? "" : " ") + a.text;
  if (joined == "internal") return Status::Ok();  // repld's default too
  const size_t bracket = joined.find('[');
  std::string path = joined.substr(0, bracket);
  while (!path.empty() && path.back() == ' ') path.pop_back();
  if (path.empty() || path.find(' ') != std::string::npos) {
    return r.Error(st.args.empty() ? st.keyword.end : st.args[0].where,
                   st.keyword.text + ": expected internal, a device, or a device [index]");
  }
  if (bracket != std::string::npos) {
    r.Warn(n.table, st.keyword.where,
           st.Shown() +
               ": repld keeps a resource's metadata on the whole device, without an "
               "index: give each resource a device (or partition) of its own");
  }
  r.Mapped(n.table, "meta_disk", TomlText::Quote(path), st);
  return Status::Ok();
}

Status EmitNode(ResourceImport& r, const Node& n, bool ublk) {
  const Statement& disk = *n.disk;
  auto path = r.Single(disk);
  if (!path.ok()) return path.status();
  if (path.value() == "none") {
    return r.Error(disk.args[0].where, "disk none: repld has no diskless nodes");
  }
  r.toml().Key(n.table, "disk", TomlText::Quote(path.value()));
  if (n.address != nullptr) {
    const auto& a = n.address->args;
    const bool family = !a.empty() && IsAddressFamily(a[0].text);
    if (a.size() != (family ? 2u : 1u)) {
      if (a.size() < (family ? 2u : 1u)) {
        return r.Error(n.address->keyword.end, "address: expected [ipv4|ipv6] IP:PORT");
      }
      const size_t last = family ? 1 : 0;  // the word after which ';' is missing
      return r.Error(a[last].end, "expected ';' after '" + n.address->keyword.text + " " +
                                      (family ? a[0].text + " " : "") + a[last].text +
                                      "', found '" + a[last + 1].text + "'");
    }
    if (family && a[0].text != "ipv4" && a[0].text != "ipv6") {
      r.Warn(n.table, n.address->keyword.where,
             n.address->Shown() + ": repld's peer link is TCP over IPv4 or IPv6; " + a[0].text +
                 " dropped");
    }
    r.toml().Key(n.table, "address", TomlText::Quote(a.back().text));
  }
  if (n.meta_disk != nullptr) {
    if (Status s = EmitMetaDisk(r, n); !s.ok()) return s;
  }
  if (ublk) {
    const std::string minor = std::to_string(*n.minor);
    r.toml().Key(n.table, "ublk_device_id", minor,
                 n.device->Shown() + " becomes /dev/ublkb" + minor);
  }
  for (const Statement* section : {n.on, n.volume}) {
    if (section == nullptr) continue;
    for (const Statement& st : section->body) {
      if (!IsNodeSetting(st.keyword.text) && st.keyword.text != "volume") {
        r.Warn(n.table, st.keyword.where, st.Shown() + ": dropped; no repld equivalent");
      }
    }
  }
  return Status::Ok();
}

Status EmitResource(ResourceImport& r, const std::vector<Node>& nodes, bool* ublk) {
  if (Option* o = r.Take("protocol")) {
    auto v = r.Single(*o->st);
    if (!v.ok()) return v.status();
    std::string p = v.value();
    if (p.size() == 1) p[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(p[0])));
    if (p != "A" && p != "B" && p != "C") {
      return r.Error(o->st->args[0].where, "protocol " + v.value() + ": expected A, B or C");
    }
    r.Mapped(kResource, "protocol", TomlText::Quote(p), *o->st);
  }
  *ublk = std::all_of(nodes.begin(), nodes.end(), [](const Node& n) { return n.minor; });
  if (*ublk) {
    r.toml().Key(kResource, "frontend", "\"ublk\"",
                 "DRBD's /dev/drbdN becomes /dev/ublkbN, on the Primary only");
    return Status::Ok();
  }
  for (const Node& n : nodes) {
    if (n.minor) continue;
    const Location at = n.device ? n.device->keyword.where : n.on->keyword.where;
    r.Warn(kResource, at,
           "on " + n.host + ": " + (n.device ? n.device->Shown() : "no device") +
               ": no minor number, so no /dev/ublkbN to keep it; the frontend stays NBD "
               "(see docs/config.md [nbd])");
  }
  return Status::Ok();
}

void EmitHeader(ResourceImport& r, const Statement& resource, const std::vector<Node>& nodes,
                const FileScope& scope) {
  const std::string& name = resource.args[0].text;
  const std::string target = "/etc/repld/" + name + ".toml";
  std::string hosts;
  for (const Node& n : nodes) hosts += (hosts.empty() ? "" : " and ") + n.host;
  r.toml().Header(target + ": resource " + name);
  r.toml().Header("Imported from " + r.path() + " (line " +
                  std::to_string(resource.keyword.where.line) + ") by `replctl import-drbd`.");
  r.toml().Header(nodes.size() == 2
                      ? "The same file serves both nodes, " + hosts + ": copy it to each."
                      : "It serves node " + hosts + " alone.");
  r.toml().Header("Check it with `replctl check-config " + target + "`.");
  if (!scope.remarks.empty()) r.toml().Header("");
  for (const FileRemark& remark : scope.remarks) {
    if (remark.warning) {
      r.Warn(kHeader, remark.where, remark.text);
    } else {
      r.Note(kHeader, remark.where, remark.text);
    }
  }
}

void EmitLeftovers(ResourceImport& r, const ResourceParts& parts) {
  for (const Statement* h : parts.handlers) {
    std::string names;
    for (const Statement& st : h->body) names += (names.empty() ? "" : ", ") + st.keyword.text;
    r.Warn(kResource, h->keyword.where,
           "handlers { " + names +
               " }: dropped; repld runs no handler scripts (the cluster "
               "manager can watch `replctl status` instead)");
  }
  for (const Statement* st : parts.unknown) {
    r.Warn(kResource, st->keyword.where, st->Shown() + ": dropped; no repld equivalent");
  }
  ReportUnusedOptions(r);
}

Result<ImportedResource> ImportResource(const Statement& resource, const FileScope& scope,
                                        const std::string& path, const ImportOptions& options,
                                        std::vector<Warning>& warnings) {
  ResourceImport r(path, warnings);
  const std::string& name = resource.args[0].text;
  if (!IsRepldName(name)) {
    return r.Error(resource.args[0].where, "resource name '" + name +
                                               "' is not one repld "
                                               "takes; allowed: 1 to 64 of A-Z a-z 0-9 _ - .");
  }
  for (const char* table : {kResource, kNet, kNbd, kDisk, kResync, kStartup}) {
    r.toml().Declare(table, table == kResource);
  }
  r.toml().Key(kResource, "name", TomlText::Quote(name));
  ResourceParts parts;
  if (scope.common != nullptr) {
    if (Status s = ReadBody(r, *scope.common, true, parts); !s.ok()) return s;
  }
  if (Status s = ReadBody(r, resource, false, parts); !s.ok()) return s;
  auto volume = OnlyVolume(r, resource.body);
  if (!volume.ok()) return volume.status();
  parts.volume = volume.value();
  if (parts.ons.empty() || parts.ons.size() > 2) {
    return r.Error(resource.keyword.where,
                   "resource " + name + " has " + std::to_string(parts.ons.size()) +
                       " 'on HOST' sections; repld takes one (standalone) or two (a pair)");
  }
  std::vector<Node> nodes;
  for (const Statement* on : parts.ons) {
    auto node = ReadNode(r, *on, resource, parts);
    if (!node.ok()) return node.status();
    if (parts.ons.size() == 2 && node->address == nullptr) {
      return r.Error(on->keyword.where, "on " + node->host +
                                            ": no address; a pair needs one "
                                            "per node (ADDRESS:PORT of the peer link)");
    }
    r.toml().Declare(node->table, true);
    nodes.push_back(std::move(node).value());
  }
  EmitHeader(r, resource, nodes, scope);
  bool ublk = false;
  Status s = EmitResource(r, nodes, &ublk);
  if (s.ok()) s = MapNetOptions(r, resource, nodes.size() == 2, options);
  if (s.ok()) s = MapDiskOptions(r);
  if (s.ok()) s = MapResyncOptions(r);
  if (s.ok()) s = MapStartupOptions(r);
  for (const Node& n : nodes) {
    if (s.ok()) s = EmitNode(r, n, ublk);
  }
  if (!s.ok()) return s;
  EmitLeftovers(r, parts);
  return ImportedResource{name, r.toml().Render()};
}

}  // namespace

Result<Imported> ImportConf(const ConfFile& conf, const ImportOptions& options) {
  auto scope = ReadTopLevel(conf);
  if (!scope.ok()) return scope.status();
  std::string names;
  for (const Statement* res : scope->resources) {
    names += (names.empty() ? "" : ", ") + res->args[0].text;
  }
  if (scope->resources.empty()) {
    return Status::Invalid(conf.path + ": no resource section" +
                           (scope->has_include
                                ? "; the resources may be in the included files, which import-drbd "
                                  "does not read: cat them into one file (common first) and import "
                                  "that"
                                : "; is this a drbd.conf?"));
  }
  Imported out;
  for (const Statement* res : scope->resources) {
    if (!options.resource.empty() && res->args[0].text != options.resource) continue;
    auto imported = ImportResource(*res, scope.value(), conf.path, options, out.warnings);
    if (!imported.ok()) return imported.status();
    out.resources.push_back(std::move(imported).value());
  }
  if (out.resources.empty()) {
    return Status::Invalid(conf.path + ": no resource " + options.resource +
                           "; resources here: " + names);
  }
  // Common's and the file's remarks were met once per resource: report each once.
  auto key = [](const Warning& w) {
    return std::tuple(w.where.line, w.where.column, std::string_view(w.text));
  };
  std::stable_sort(out.warnings.begin(), out.warnings.end(),
                   [&](const Warning& a, const Warning& b) { return key(a) < key(b); });
  out.warnings.erase(
      std::unique(out.warnings.begin(), out.warnings.end(),
                  [&](const Warning& a, const Warning& b) { return key(a) == key(b); }),
      out.warnings.end());
  return out;
}

}  // namespace repld::drbd
