// replctl: the operator's command line. Each verb group lives in its own file (see verbs.h).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "cli/verbs.h"
#include "daemon/control_proto.h"

namespace repld::cli {

int Fail(const std::string& message) {
  std::fprintf(stderr, "replctl: error: %s\n", message.c_str());
  return 1;
}

namespace {

// The verbs that take a resource, so that `all` can run them for each.
std::vector<std::pair<CLI::App*, ResourceOptions*>>& ResourceVerbs() {
  static std::vector<std::pair<CLI::App*, ResourceOptions*>> verbs;
  return verbs;
}

}  // namespace

std::string ConfigDirectory() {
  const char* dir = std::getenv("REPLD_CONFIG_DIR");
  return dir != nullptr && *dir != '\0' ? dir : "/etc/repld";
}

void AddResourceOptions(CLI::App& command, ResourceOptions& options) {
  ResourceVerbs().emplace_back(&command, &options);
  command
      .add_option("resource", options.resource,
                  "the resource's name, or 'all' for every resource file in /etc/repld")
      ->required();
  command.add_option("-c,--config", options.config_path,
                     "the resource's TOML file (default: /etc/repld/RESOURCE.toml)");
  command.add_option("-n,--node", options.node,
                     "act as this node of the file (default: the node named like this host)");
}

Result<Target> ResolveResource(const ResourceOptions& options) {
  const std::string path = options.config_path.empty()
                               ? ConfigDirectory() + "/" + options.resource + ".toml"
                               : options.config_path;
  auto config = LoadConfig(path);
  if (!config.ok()) return config.status();
  if (config->name != options.resource) {
    return Status::Invalid(path + " describes resource '" + config->name + "', not '" +
                           options.resource + "'");
  }
  auto node =
      SelectNode(config.value(),
                 options.node.empty() ? std::nullopt : std::optional<std::string>(options.node));
  if (!node.ok()) return node.status();
  return Target{std::move(config).value(), std::move(node).value()};
}

int ExplainControlError(const Target& t, const std::string& command, const Status& s) {
  const std::string path = ControlSocketPath(t.config, t.node);
  if (s.code() == ENOENT || s.code() == ECONNREFUSED) {
    Fail("the repld daemon for resource '" + t.config.name + "' (node " + t.node.name +
         ") is not running: no control socket at " + path + "; start it with: systemctl start " +
         "repld@" + t.config.name + " (or repld --config " + t.config.path + " --node " +
         t.node.name + ")");
    return kExitNotRunning;
  }
  if (s.code() == EACCES || s.code() == EPERM) {
    const std::string& group = t.config.control.group;
    return Fail(s.message() +
                (group.empty() ? " (the control socket is for root only: run replctl as root, or "
                                 "let a group in with [control] group)"
                               : " (the control socket is for root and the members of group '" +
                                     group + "')"));
  }
  return Fail(command + " " + t.config.name + ": " + s.message());
}

Result<nlohmann::json> AskDaemon(const ResourceOptions& options, const std::string& command,
                                 const nlohmann::json& arguments, int& exit_code) {
  auto target = ResolveResource(options);
  if (!target.ok()) {
    exit_code = Fail(target.status().message());
    return target.status();
  }
  const Target& t = target.value();
  auto response =
      CallControl(ControlSocketPath(t.config, t.node), ControlRequestLine(command, arguments),
                  std::chrono::milliseconds(kControlClientTimeout));
  if (!response.ok()) exit_code = ExplainControlError(t, command, response.status());
  return response;
}

// `VERB all`: the verb for each resource file of the configuration directory, in name order;
// the exit status is the worst of theirs.
int RunForAll(const Verb& verb, ResourceOptions& options) {
  const std::string name = verb.command->get_name();
  if (!options.config_path.empty()) {
    Fail("'all' means every resource file in " + ConfigDirectory() + ": it takes no --config");
    return 2;
  }
  if (name == "events") {
    Fail("events follows one resource at a time: run one 'replctl events RES' per resource");
    return 2;
  }
  auto files = ResourceFiles(ConfigDirectory());
  if (!files.ok()) return Fail(files.status().message());
  if (files.value().empty()) {
    return Fail("no resource files (*.toml but common.toml) in " + ConfigDirectory());
  }
  int worst = 0;
  for (const std::string& file : files.value()) {
    auto config = LoadConfig(file);
    if (!config.ok()) {
      worst = std::max(worst, Fail(config.status().message()));
      continue;
    }
    options.resource = config->name;
    // A file named for its resource is found by name, as `VERB RES` finds it (and `up` can
    // then hand it to systemd); another one is named.
    options.config_path = file == ConfigDirectory() + "/" + config->name + ".toml" ? "" : file;
    std::fflush(stdout);
    worst = std::max(worst, verb.run());
  }
  return worst;
}

}  // namespace repld::cli

int main(int argc, char** argv) {
  using namespace repld::cli;
  CLI::App app{"replctl: operate repld resources"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "replctl " REPLD_VERSION);
  app.footer(
      "Exit status: 0 done, 1 refused or failed, 2 usage, 3 the daemon is not running, 4 "
      "adjust needs a restart, 5 a wait timed out.\nEvery verb that takes RES also takes 'all'. "
      "replctl(8) describes each verb; docs/control.md the control socket.");
  std::vector<Verb> verbs;
  for (auto group : {AddConfigVerbs, AddMetadataVerbs, AddControlVerbs, AddNbdVerbs, AddImportVerbs,
                     AddWaitVerbs, AddServiceVerbs, AddAdjustVerbs}) {
    for (Verb& v : group(app)) verbs.push_back(std::move(v));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2 (see docs/control.md).
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  for (const Verb& v : verbs) {
    if (!v.command->parsed()) continue;
    for (auto& [command, options] : ResourceVerbs()) {
      if (command == v.command && options->resource == "all") return RunForAll(v, *options);
    }
    return v.run();
  }
  return 2;
}
