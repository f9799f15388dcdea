// replctl: the operator's command line. Today: check-config. The verbs that talk to a running
// daemon (status, primary, secondary, ...) arrive with the control socket.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <string>

#include "common/units.h"
#include "daemon/config.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "replctl: error: %s\n", message.c_str());
  return 1;
}

int CheckConfig(const std::string& path, const std::string& node_name) {
  auto config = repld::LoadConfig(path);
  if (!config.ok()) return Fail(config.status().message());
  const repld::ResourceConfig& c = config.value();
  std::printf("%s: resource '%s', %zu node(s)\n", path.c_str(), c.name.c_str(), c.nodes.size());
  for (const auto& node : c.nodes) {
    const repld::NbdConfig nbd = repld::EffectiveNbd(c, node);
    std::printf("  node %s: disk %s, nbd socket %s%s%s\n", node.name.c_str(), node.disk.c_str(),
                nbd.socket.c_str(), nbd.listen.empty() ? "" : ", tcp ", nbd.listen.c_str());
  }
  // The backing disk can only be checked on the node that owns it: the one named, or this host.
  auto node = repld::SelectNode(
      c, node_name.empty() ? std::nullopt : std::optional<std::string>(node_name));
  if (!node.ok()) {
    if (!node_name.empty()) return Fail(node.status().message());
    std::printf("  (no node is named like this host: backing disks not checked; use --node)\n");
  } else {
    repld::Status s = repld::BackingStore::Probe(node->disk);
    if (!s.ok()) {
      return Fail(path + ": key 'node." + node->name + ".disk': " + s.message());
    }
    std::printf("  node %s: backing disk %s can be opened\n", node->name.c_str(),
                node->disk.c_str());
  }
  std::printf("configuration is valid\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"replctl: operate repld resources"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "replctl " REPLD_VERSION);
  std::string path;
  std::string node;
  CLI::App* check = app.add_subcommand("check-config", "validate a resource configuration file");
  check->add_option("file", path, "the resource's TOML file")->required();
  check->add_option("-n,--node", node, "also check that this node is defined");
  CLI11_PARSE(app, argc, argv);
  if (check->parsed()) return CheckConfig(path, node);
  return 2;
}
