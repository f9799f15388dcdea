// replctl's verbs, grouped by the files that implement them. Each group adds its subcommands to
// the app and returns what to run when one of them was chosen on the command line.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "daemon/config.h"

namespace repld::cli {

struct Verb {
  CLI::App* command = nullptr;
  std::function<int()> run;  // the process exit status
};

std::vector<Verb> AddConfigVerbs(CLI::App& app);    // config_verbs.cc: check-config
std::vector<Verb> AddMetadataVerbs(CLI::App& app);  // md_verbs.cc: create-md, dump-md
std::vector<Verb> AddControlVerbs(CLI::App& app);   // control_verbs.cc: status, primary, ...
std::vector<Verb> AddNbdVerbs(CLI::App& app);       // nbd_verbs.cc: nbd-attach, nbd-detach
// wait_verbs.cc: events, wait-connect, wait-sync, verify
std::vector<Verb> AddWaitVerbs(CLI::App& app);
// service_verbs.cc: up, down
std::vector<Verb> AddServiceVerbs(CLI::App& app);
std::vector<Verb> AddImportVerbs(CLI::App& app);  // import_verbs.cc: import-drbd
std::vector<Verb> AddAdjustVerbs(CLI::App& app);  // adjust_verbs.cc: adjust

// Where the resource files are: /etc/repld, or $REPLD_CONFIG_DIR.
std::string ConfigDirectory();

// Options every verb on a resource takes: the resource's file (default /etc/repld/RES.toml) and
// the node (default: the one named like this host). The resource "all" runs the verb for every
// resource file of ConfigDirectory().
struct ResourceOptions {
  std::string resource;
  std::string config_path;
  std::string node;
};
void AddResourceOptions(CLI::App& command, ResourceOptions& options);

struct Target {
  ResourceConfig config;
  NodeConfig node;
};
// Loads the resource's file and picks the node; the file must describe `options.resource`.
Result<Target> ResolveResource(const ResourceOptions& options);

// Prints "replctl: error: MESSAGE" to stderr and returns 1.
int Fail(const std::string& message);

// Exit codes (docs/control.md): 0 done, 1 refused or failed, 2 usage, 3 the daemon is not
// running, 4 adjust: a changed key needs a restart, 5 a wait timed out.
inline constexpr int kExitNotRunning = 3;
inline constexpr int kExitRestartNeeded = 4;
inline constexpr int kExitTimeout = 5;

// Prints why talking to the daemon of `t` failed (not running, not root, ...); returns the exit
// code.
int ExplainControlError(const Target& t, const std::string& command, const Status& s);
// Sends one request to the daemon of the resource; on failure prints what went wrong and sets
// `exit_code`.
Result<nlohmann::json> AskDaemon(const ResourceOptions& options, const std::string& command,
                                 const nlohmann::json& arguments, int& exit_code);

}  // namespace repld::cli
