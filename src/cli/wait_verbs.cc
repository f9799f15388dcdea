// events, wait-connect, wait-sync: the verbs that follow a running resource over time.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "cli/progress_line.h"
#include "cli/status_format.h"
#include "cli/verbs.h"
#include "common/units.h"
#include "daemon/control_client.h"
#include "daemon/control_proto.h"
#include "daemon/event_feed.h"

namespace repld::cli {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr milliseconds kPollInterval{200};

struct WaitArgs {
  ResourceOptions resource;
  bool now = false;     // events
  bool json = false;    // events
  bool wait = false;    // verify
  std::string timeout;  // wait-*: "" = the default
};

void PrintEvent(const json& event, bool as_json) {
  const std::string line =
      as_json ? event.dump(-1, ' ', false, json::error_handler_t::replace) : FormatEventLine(event);
  std::printf("%s\n", line.c_str());
}

int RunEvents(const WaitArgs& args) {
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const Target& t = target.value();
  ControlClient client;
  Status s = client.Connect(ControlSocketPath(t.config, t.node), kControlClientTimeout);
  if (s.ok()) s = client.Send(ControlRequestLine("events", {{"now", args.now}}));
  auto first = s.ok() ? client.Read(kControlClientTimeout) : Result<json>(s);
  if (!first.ok()) return ExplainControlError(t, "events", first.status());
  const auto events = first.value().find("events");
  if (events == first.value().end() || !events->is_array()) {
    return Fail("the daemon's events answer has no \"events\" list (an older repld?)");
  }
  for (const json& e : *events) PrintEvent(e, args.json);
  // As drbdsetup events2: the end of the current state.
  if (!args.json) std::printf("exists -\n");
  std::fflush(stdout);
  if (args.now) return 0;
  for (;;) {
    auto line = client.Read(milliseconds(0));
    if (!line.ok()) {
      // ECONNRESET: the connection ended (the daemon stopped); anything else is the daemon's
      // own error line (a client that fell behind), which says what to do.
      const bool ended = line.status().code() == ECONNRESET;
      return Fail("events " + t.config.name + ": " +
                  (ended ? "the daemon closed the connection (it stopped?)"
                         : line.status().message()));
    }
    const auto event = line.value().find("event");
    if (event == line.value().end()) continue;
    PrintEvent(*event, args.json);
    std::fflush(stdout);
  }
}

// The wait's limit: --timeout, else `fallback` (0: none).
Result<milliseconds> WaitLimit(const std::string& text, milliseconds fallback) {
  if (text.empty()) return fallback;
  const auto ms = ParseDurationMs(text);
  if (!ms) {
    return Status::Invalid("--timeout '" + text +
                           "' is not a duration; allowed: \"30s\", \"5m\", "
                           "\"500ms\", \"0\" (no limit)");
  }
  return milliseconds(*ms);
}

std::string Seconds(milliseconds ms) { return std::to_string((ms.count() + 999) / 1000) + " s"; }

bool InSync(const json& s) {
  const json& peer = s.value("peer", json());
  return s.value("connection", "") == "Connected" && s.value("replication", "") == "Established" &&
         s.value("disk", "") == "UpToDate" && peer.is_object() &&
         peer.value("disk", "") == "UpToDate" && s.value("out_of_sync_bytes", uint64_t{1}) == 0;
}

// A resync's progress, for a terminal line.
std::string SyncProgressText(const json& status) {
  const json& resync = status.value("resync", json());
  std::string line;
  if (resync.is_object()) {
    auto opt = [&](const char* key) {
      const json& v = resync.value(key, json());
      return v.is_number_unsigned() ? std::optional<uint64_t>(v.get<uint64_t>()) : std::nullopt;
    };
    line = FormatResyncProgress(resync.value("done_bytes", uint64_t{0}),
                                resync.value("total_bytes", uint64_t{0})) +
           "  " +
           FormatResyncSpeed(opt("eta_seconds"), opt("speed_bytes_per_second"),
                             opt("average_bytes_per_second"));
  } else {
    line = status.value("connection", "?") + " " + status.value("replication", "?") +
           ", out of sync: " + FormatSizeBytes(status.value("out_of_sync_bytes", uint64_t{0}));
  }
  return line;
}

// Polls the status until `done` holds or the limit passes.
int Wait(const WaitArgs& args, const char* verb, bool sync) {
  if (auto checked = WaitLimit(args.timeout, milliseconds(0)); !checked.ok()) {
    std::fprintf(stderr, "replctl: error: %s\n", checked.status().message().c_str());
    return 2;
  }
  int exit_code = 0;
  auto first = AskDaemon(args.resource, "status", json::object(), exit_code);
  if (!first.ok()) return exit_code;
  const json& status = first.value()["status"];
  const json& peer = status.value("peer", json());
  if (!peer.is_object()) {
    std::printf("resource %s has no peer: nothing to wait for\n",
                status.value("resource", "?").c_str());
    return 0;
  }
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const StartupConfig& startup = target.value().config.startup;
  const bool degraded = status.value("degraded_at_start", false);
  // wait-connect waits as long as the daemon does at start ([startup]); wait-sync has no limit.
  const milliseconds fallback =
      sync ? milliseconds(0) : (degraded ? startup.degr_wfc_timeout : startup.wfc_timeout);
  auto limit = WaitLimit(args.timeout, fallback);
  if (!limit.ok()) {
    std::fprintf(stderr, "replctl: error: %s\n", limit.status().message().c_str());
    return 2;
  }
  ProgressLine progress;
  const auto start = std::chrono::steady_clock::now();
  json last = status;
  for (;;) {
    const bool done = sync ? InSync(last) : last.value("connection", "") == "Connected";
    if (done) {
      progress.Finish();
      std::printf("%s: %s\n", last.value("resource", "?").c_str(),
                  sync ? "in sync with the peer" : "connected to the peer");
      return 0;
    }
    if (sync && (last.value("connection", "") == "StandAlone")) {
      progress.Finish();
      return Fail(std::string(verb) + ": resource is StandAlone (it does not try to connect: " +
                  "see 'replctl status'; 'replctl connect' tries again)");
    }
    if (sync) progress.Draw(SyncProgressText(last));
    const auto waited =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    if (limit.value().count() > 0 && waited >= limit.value()) {
      progress.Finish();
      std::fprintf(stderr, "replctl: %s: %s after %s (connection %s, replication %s)\n", verb,
                   sync ? "not in sync" : "not connected", Seconds(limit.value()).c_str(),
                   last.value("connection", "?").c_str(), last.value("replication", "?").c_str());
      return kExitTimeout;
    }
    std::this_thread::sleep_for(kPollInterval);
    auto next = AskDaemon(args.resource, "status", json::object(), exit_code);
    if (!next.ok()) return exit_code;
    last = next.value()["status"];
  }
}

// verify [--wait]: starts the online verify; with --wait, follows it to its end.
int RunVerify(const WaitArgs& args) {
  int exit_code = 0;
  auto started = AskDaemon(args.resource, "verify", json::object(), exit_code);
  if (!started.ok()) return exit_code;
  const std::string name = args.resource.resource;
  if (!args.wait) {
    std::printf("%s\n", started.value().value("message", "online verify started").c_str());
    return 0;
  }
  ProgressLine progress;
  json status = started.value()["status"];
  for (;;) {
    const json& v = status.value("verify", json());
    if (!v.is_object()) return Fail("the daemon's status has no \"verify\" object");
    const uint64_t done = v.value("done_bytes", uint64_t{0});
    const uint64_t total = v.value("total_bytes", uint64_t{0});
    const uint64_t differ = v.value("differing_bytes", uint64_t{0});
    if (!v.value("running", false)) {
      progress.Finish();
      if (done < total) {
        return Fail("verify " + name + ": stopped after " + FormatSizeBytes(done) + " of " +
                    FormatSizeBytes(total) + " (" + FormatSizeBytes(differ) +
                    " differed so far); the connection was lost? 'replctl status " + name +
                    "' shows why; 'replctl verify' starts again from the beginning");
      }
      if (differ == 0) {
        std::printf("verify %s: %s compared, no difference\n", name.c_str(),
                    FormatSizeBytes(total).c_str());
      } else {
        std::printf(
            "verify %s: %s compared, %s differ and are marked out of sync on both nodes; to "
            "resync them: replctl disconnect %s, then replctl connect %s (the Primary's data "
            "wins)\n",
            name.c_str(), FormatSizeBytes(total).c_str(), FormatSizeBytes(differ).c_str(),
            name.c_str(), name.c_str());
      }
      return 0;
    }
    progress.Draw("verify: " + FormatProgress(done, total) + ", " + FormatSizeBytes(differ) +
                  " differ");
    std::this_thread::sleep_for(kPollInterval);
    auto next = AskDaemon(args.resource, "status", json::object(), exit_code);
    if (!next.ok()) return exit_code;
    status = next.value()["status"];
  }
}

}  // namespace

std::vector<Verb> AddWaitVerbs(CLI::App& app) {
  auto args = std::make_shared<WaitArgs>();
  std::vector<Verb> verbs;

  CLI::App* events = app.add_subcommand(
      "events", "print the resource's states, then each change as it happens (drbdsetup events2)");
  AddResourceOptions(*events, args->resource);
  events->add_flag("--now", args->now, "print the current states and exit");
  events->add_flag("--json", args->json, "one JSON object per line");
  verbs.push_back({events, [args] { return RunEvents(*args); }});

  CLI::App* connect = app.add_subcommand(
      "wait-connect",
      "wait until the resource is connected to its peer (exit 5 on timeout); by default as "
      "long as [startup] wfc_timeout, or degr_wfc_timeout if it ran without its peer");
  AddResourceOptions(*connect, args->resource);
  connect->add_option("--timeout", args->timeout, "the longest wait (\"30s\", \"0\": no limit)");
  verbs.push_back({connect, [args] { return Wait(*args, "wait-connect", false); }});

  CLI::App* sync = app.add_subcommand(
      "wait-sync",
      "wait until both disks are UpToDate and in sync (exit 5 on timeout); shows the resync's "
      "progress on a terminal");
  AddResourceOptions(*sync, args->resource);
  sync->add_option("--timeout", args->timeout, "the longest wait (default: no limit)");
  verbs.push_back({sync, [args] { return Wait(*args, "wait-sync", true); }});

  CLI::App* verify = app.add_subcommand(
      "verify",
      "compare every block with the peer's (online verify); differing blocks are marked out of "
      "sync on both nodes ('replctl status' shows progress and result)");
  AddResourceOptions(*verify, args->resource);
  verify->add_flag("--wait", args->wait,
                   "wait for the end and print what was found (progress on a terminal)");
  verbs.push_back({verify, [args] { return RunVerify(*args); }});
  return verbs;
}

}  // namespace repld::cli
