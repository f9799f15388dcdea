// status, primary, secondary, connect, disconnect, invalidate[-remote]: the verbs that talk to a
// running daemon over its control socket (docs/control.md). Exit codes: 0 done, 1 the daemon
// refused (or the resource's file is wrong), 2 command-line usage (CLI11), 3 the daemon is not
// running.
#include <cerrno>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "cli/status_format.h"
#include "cli/verbs.h"
#include "daemon/control_proto.h"

namespace repld::cli {
namespace {

struct ControlArgs {
  ResourceOptions resource;
  bool json = false;             // status
  bool force = false;            // primary
  bool discard_my_data = false;  // connect
};

Result<nlohmann::json> Ask(const ControlArgs& args, const std::string& command,
                           const nlohmann::json& arguments, int& exit_code) {
  return AskDaemon(args.resource, command, arguments, exit_code);
}

int RunStatus(const ControlArgs& args) {
  int exit_code = 0;
  auto response = Ask(args, "status", nlohmann::json::object(), exit_code);
  if (!response.ok()) return exit_code;
  const nlohmann::json& status = response.value()["status"];
  if (!status.is_object()) return Fail("the daemon's status answer has no \"status\" object");
  if (args.json) {
    std::printf("%s\n",
                status.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs(FormatStatus(status).c_str(), stdout);
  }
  return 0;
}

int RunRole(const ControlArgs& args, const std::string& command) {
  int exit_code = 0;
  nlohmann::json arguments = nlohmann::json::object();
  if (command == "primary") arguments["force"] = args.force;
  if (command == "connect") arguments["discard_my_data"] = args.discard_my_data;
  auto response = Ask(args, command, arguments, exit_code);
  if (!response.ok()) return exit_code;
  const auto message = response.value().find("message");
  if (message != response.value().end() && message->is_string()) {
    std::printf("%s\n", message->get<std::string>().c_str());
  }
  return 0;
}

}  // namespace

std::vector<Verb> AddControlVerbs(CLI::App& app) {
  auto args = std::make_shared<ControlArgs>();
  std::vector<Verb> verbs;

  CLI::App* status = app.add_subcommand("status", "show the state of a running resource");
  AddResourceOptions(*status, args->resource);
  status->add_flag("--json", args->json, "print the daemon's status object (docs/control.md)");
  verbs.push_back({status, [args] { return RunStatus(*args); }});

  CLI::App* primary = app.add_subcommand("primary", "promote this node of the resource");
  AddResourceOptions(*primary, args->resource);
  primary->add_flag("--force", args->force,
                    "promote even without up-to-date data (makes this node's data the truth)");
  verbs.push_back({primary, [args] { return RunRole(*args, "primary"); }});

  CLI::App* connect = app.add_subcommand(
      "connect",
      "connect a StandAlone node to its peer again (after a split brain, a refused connect or "
      "'disconnect')");
  AddResourceOptions(*connect, args->resource);
  connect->add_flag("--discard-my-data", args->discard_my_data,
                    "after a split brain, this (Secondary) node's changes are dropped: it "
                    "receives every block either node changed from the peer");
  verbs.push_back({connect, [args] { return RunRole(*args, "connect"); }});

  // The verbs that only name the resource: the control command is the verb's name.
  static constexpr std::pair<const char*, const char*> kPlainVerbs[] = {
      {"secondary", "demote this node of the resource"},
      {"disconnect",
       "drop the peer and stay StandAlone (a Primary keeps serving and records what the peer "
       "misses)"},
      {"invalidate",
       "discard this Secondary's data: a full sync from the connected, UpToDate peer replaces "
       "it"},
      {"invalidate-remote",
       "discard the peer's data (it must be Secondary): a full sync from this UpToDate node "
       "replaces it"},
      {"pause-sync",
       "stop sending resync blocks from this node (application writes still replicate); until "
       "resume-sync or a restart"},
      {"resume-sync", "undo pause-sync"},
      {"detach",
       "let go of this Secondary's disk: the node goes Diskless and StandAlone, the peer records "
       "what it misses, the disk is free (create-md, a check, a swap)"},
      {"attach",
       "take the disk again after detach (the same, or a replacement with fresh metadata) and "
       "reconnect: the peer resyncs what it missed, or all of a new disk"},
  };
  for (const auto& [name, help] : kPlainVerbs) {
    CLI::App* verb = app.add_subcommand(name, help);
    AddResourceOptions(*verb, args->resource);
    verbs.push_back(
        {verb, [args, command = std::string(name)] { return RunRole(*args, command); }});
  }
  return verbs;
}

}  // namespace repld::cli
