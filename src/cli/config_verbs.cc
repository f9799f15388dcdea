// check-config: validate a resource file, and the backing disk of the node it would run as.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "blockdev/backing_store.h"
#include "cli/verbs.h"

namespace repld::cli {
namespace {

int CheckConfig(const std::string& path, const std::string& node_name) {
  auto config = LoadConfig(path);
  if (!config.ok()) return Fail(config.status().message());
  const ResourceConfig& c = config.value();
  std::printf("%s: resource '%s', %zu node(s), protocol %c\n", path.c_str(), c.name.c_str(),
              c.nodes.size(), ProtocolLetter(c.protocol));
  for (const auto& node : c.nodes) {
    const NbdConfig nbd = EffectiveNbd(c, node);
    std::printf("  node %s: disk %s, metadata %s, nbd socket %s%s%s%s%s\n", node.name.c_str(),
                node.disk.c_str(), EffectiveMetaDisk(c, node).c_str(), nbd.socket.c_str(),
                nbd.listen.empty() ? "" : ", tcp ", nbd.listen.c_str(),
                node.address ? ", peer link " : "", node.address ? node.address->c_str() : "");
  }
  // The backing disk can only be checked on the node that owns it: the one named, or this host.
  auto node =
      SelectNode(c, node_name.empty() ? std::nullopt : std::optional<std::string>(node_name));
  if (!node.ok()) {
    if (!node_name.empty()) return Fail(node.status().message());
    std::printf("  (no node is named like this host: backing disks not checked; use --node)\n");
  } else {
    Status s = BackingStore::Probe(node->disk);
    if (!s.ok()) return Fail(path + ": key 'node." + node->name + ".disk': " + s.message());
    std::printf("  node %s: backing disk %s can be opened\n", node->name.c_str(),
                node->disk.c_str());
  }
  std::printf("configuration is valid\n");
  return 0;
}

}  // namespace

std::vector<Verb> AddConfigVerbs(CLI::App& app) {
  struct Args {
    std::string path;
    std::string node;
  };
  auto args = std::make_shared<Args>();
  CLI::App* check = app.add_subcommand("check-config", "validate a resource configuration file");
  check->add_option("file", args->path, "the resource's TOML file")->required();
  check->add_option("-n,--node", args->node, "also check that this node is defined");
  return {{check, [args] { return CheckConfig(args->path, args->node); }}};
}

}  // namespace repld::cli
