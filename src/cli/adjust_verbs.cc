// adjust [--dry-run]: the running daemon reads its resource file again and takes what changed
// (docs/control.md "adjust"). Exit codes: those of every verb, and 4 when a changed key needs a
// restart of the daemon to take effect.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/verbs.h"

namespace repld::cli {
namespace {

struct AdjustArgs {
  ResourceOptions resource;
  bool dry_run = false;
  bool json = false;
};

std::string Effect(const std::string& when, bool dry_run) {
  if (when == "restart") {
    return dry_run ? "would need a restart" : "NOT applied: needs a restart";
  }
  std::string effect = dry_run ? "would apply" : "applied";
  if (when == "next-connection") effect += " (used from the next connection to the peer)";
  if (when == "next-resync") effect += " (used from the next resync or verify)";
  if (when == "next-start") effect += " (used when the daemon starts)";
  return effect;
}

int RunAdjust(const AdjustArgs& args) {
  int exit_code = 0;
  auto response =
      AskDaemon(args.resource, "adjust", nlohmann::json{{"dry_run", args.dry_run}}, exit_code);
  if (!response.ok()) return exit_code;
  const nlohmann::json& r = response.value();
  const bool restart = r.value("restart_needed", false);
  if (args.json) {
    nlohmann::json out = r;
    out.erase("status");
    out.erase("version");
    out.erase("ok");
    std::printf("%s\n", out.dump(2).c_str());
    return restart ? kExitRestartNeeded : 0;
  }
  const std::string name = args.resource.resource;
  const std::string file = r.value("file", std::string("its file"));
  const nlohmann::json changes = r.value("changes", nlohmann::json::array());
  if (changes.empty()) {
    std::printf("%s: the running daemon already matches %s\n", name.c_str(), file.c_str());
    return 0;
  }
  std::printf("%s: %zu change%s in %s%s\n", name.c_str(), changes.size(),
              changes.size() == 1 ? "" : "s", file.c_str(), args.dry_run ? " (dry run)" : "");
  for (const nlohmann::json& c : changes) {
    std::printf("  %s: %s -> %s: %s\n", c.value("key", "?").c_str(), c.value("old", "?").c_str(),
                c.value("new", "?").c_str(),
                Effect(c.value("when", "restart"), args.dry_run).c_str());
  }
  if (restart) {
    std::printf(
        "to apply the rest, restart the daemon: replctl down %s && replctl up %s "
        "(under systemd: systemctl restart repld@%s)\n",
        name.c_str(), name.c_str(), name.c_str());
    return kExitRestartNeeded;
  }
  return 0;
}

}  // namespace

std::vector<Verb> AddAdjustVerbs(CLI::App& app) {
  auto args = std::make_shared<AdjustArgs>();
  CLI::App* adjust = app.add_subcommand(
      "adjust",
      "make a running resource follow its changed file: applies the keys that can change live "
      "(resync rate and controller, keepalive, reconnect, secret, split-brain policies, "
      "startup, metrics) and names those that need a restart (exit status 4)");
  AddResourceOptions(*adjust, args->resource);
  adjust->add_flag("--dry-run", args->dry_run, "only show what would change");
  adjust->add_flag("--json", args->json, "print the changes as JSON (docs/control.md)");
  return {{adjust, [args] { return RunAdjust(*args); }}};
}

}  // namespace repld::cli
