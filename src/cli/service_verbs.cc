// up, down: start and stop a resource's daemon. Under systemd (and for a resource file in the
// configuration directory) `up` is `systemctl start repld@RES`; elsewhere replctl starts repld
// itself, detached, logging to /var/log/repld/RES.log. `down` asks the running daemon to stop as
// SIGTERM does (drain, sync, exit 0), however it was started, and waits until it is gone.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli/verbs.h"
#include "daemon/control_proto.h"

namespace repld::cli {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr seconds kUpTimeout{30};
constexpr seconds kDownTimeout{120};  // above the daemon's 30 s drain and its final sync

struct ServiceArgs {
  ResourceOptions resource;
  std::string log;  // up: where a daemon replctl starts itself logs
};

bool Answers(const Target& t) {
  return CallControl(ControlSocketPath(t.config, t.node), ControlRequestLine("status"),
                     milliseconds(2000))
      .ok();
}

// repld next to this replctl (an installed pair, or a build tree), else from $PATH.
std::string RepldBinary() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = self.parent_path() / "repld";
    if (access(beside.c_str(), X_OK) == 0) return beside.string();
  }
  return "repld";
}

std::string Tail(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "  " + all[i] + "\n";
  }
  return out;
}

// The process runs in systemd's `unit` (its cgroup path ends in it).
bool InUnit(pid_t pid, const std::string& unit) {
  std::ifstream cgroup("/proc/" + std::to_string(pid) + "/cgroup");
  for (std::string line; std::getline(cgroup, line);) {
    if (line.size() >= unit.size() + 1 &&
        line.compare(line.size() - unit.size() - 1, std::string::npos, "/" + unit) == 0) {
      return true;
    }
  }
  return false;
}

int StartDetached(const Target& t, const ServiceArgs& args) {
  const std::string log = !args.log.empty()
                              ? args.log
                              : "/var/log/repld/" + t.config.name +
                                    (args.resource.node.empty() ? "" : "-" + t.node.name) + ".log";
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(log).parent_path(), ec);
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log_fd < 0) return Fail("cannot open the log file " + log + ": " + ErrnoText(errno));
  const std::string binary = RepldBinary();
  std::vector<std::string> argv = {binary, "--config", t.config.path, "--node", t.node.name};
  const pid_t pid = fork();
  if (pid < 0) return Fail("fork: " + ErrnoText(errno));
  if (pid == 0) {
    setsid();
    const int null = open("/dev/null", O_RDONLY);
    dup2(null, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    std::vector<char*> c_argv;
    for (auto& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    execvp(c_argv[0], c_argv.data());
    std::fprintf(stderr, "replctl up: cannot run %s: %s\n", binary.c_str(),
                 ErrnoText(errno).c_str());
    _exit(127);
  }
  close(log_fd);
  const auto deadline = std::chrono::steady_clock::now() + kUpTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus = 0;
    if (waitpid(pid, &wstatus, WNOHANG) == pid) {
      return Fail(
          "repld for resource '" + t.config.name + "' exited at start (status " +
          std::to_string(WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus)) +
          "); the end of " + log + ":\n" + Tail(log, 10));
    }
    if (Answers(t)) {
      std::printf("resource %s: repld started (pid %d, node %s), log %s\n", t.config.name.c_str(),
                  static_cast<int>(pid), t.node.name.c_str(), log.c_str());
      return 0;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  return Fail("repld for resource '" + t.config.name + "' (pid " + std::to_string(pid) +
              ") does not answer on its control socket after " +
              std::to_string(kUpTimeout.count()) + " s; see " + log);
}

int RunUp(const ServiceArgs& args) {
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const Target& t = target.value();
  if (Answers(t)) {
    std::printf("resource %s: repld already runs (node %s)\n", t.config.name.c_str(),
                t.node.name.c_str());
    return 0;
  }
  // systemd runs the daemon when it is the init system and the file is where the unit reads it.
  const bool systemd = std::filesystem::is_directory("/run/systemd/system") &&
                       args.resource.config_path.empty() && args.resource.node.empty() &&
                       args.log.empty();
  if (!systemd) return StartDetached(t, args);
  const std::string command = "systemctl start repld@" + t.config.name;
  const int rc = std::system(command.c_str());
  if (rc != 0) {
    return Fail(command + " failed; see: journalctl -u repld@" + t.config.name);
  }
  std::printf("resource %s: started (repld@%s)\n", t.config.name.c_str(), t.config.name.c_str());
  return 0;
}

int RunDown(const ServiceArgs& args) {
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const Target& t = target.value();
  auto response = CallControl(ControlSocketPath(t.config, t.node), ControlRequestLine("status"),
                              kControlClientTimeout);
  if (!response.ok()) {
    const int code = response.status().code();
    if (code == ENOENT || code == ECONNREFUSED) {
      std::printf("resource %s: repld is not running (node %s)\n", t.config.name.c_str(),
                  t.node.name.c_str());
      return 0;
    }
    return ExplainControlError(t, "down", response.status());
  }
  const auto pid = static_cast<pid_t>(response.value()["status"].value("pid", int64_t{0}));
  if (pid <= 0) {
    return Fail("the daemon's status has no pid (an older repld?): stop it with SIGTERM");
  }
  // A daemon systemd runs is stopped through systemd, so that the unit does not restart it.
  const std::string unit = "repld@" + t.config.name + ".service";
  if (InUnit(pid, unit)) {
    const std::string command = "systemctl stop " + unit;
    if (std::system(command.c_str()) != 0) {
      return Fail(command + " failed; see: journalctl -u " + unit);
    }
    std::printf("resource %s: stopped (%s)\n", t.config.name.c_str(), unit.c_str());
    return 0;
  }
  if (kill(pid, SIGTERM) != 0) {
    return Fail("cannot signal repld (pid " + std::to_string(pid) + "): " + ErrnoText(errno));
  }
  const auto deadline = std::chrono::steady_clock::now() + kDownTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (kill(pid, 0) != 0 && errno == ESRCH) {
      std::printf("resource %s: repld stopped (node %s)\n", t.config.name.c_str(),
                  t.node.name.c_str());
      return 0;
    }
    waitpid(pid, nullptr, WNOHANG);  // our own child, when `up` started it from this process
    std::this_thread::sleep_for(milliseconds(100));
  }
  std::fprintf(stderr, "replctl: down: repld (pid %d) still runs after %lld s\n",
               static_cast<int>(pid), static_cast<long long>(kDownTimeout.count()));
  return kExitTimeout;
}

}  // namespace

std::vector<Verb> AddServiceVerbs(CLI::App& app) {
  auto args = std::make_shared<ServiceArgs>();
  CLI::App* up = app.add_subcommand(
      "up",
      "start the resource's daemon (systemctl start repld@RES under systemd; else repld "
      "in the background, logging to /var/log/repld/RES.log)");
  AddResourceOptions(*up, args->resource);
  up->add_option("--log", args->log, "the daemon's log file when replctl starts it itself");
  CLI::App* down = app.add_subcommand(
      "down",
      "stop the resource's daemon cleanly (as SIGTERM: requests in flight finish, the "
      "disk is synced) and wait until it has exited");
  AddResourceOptions(*down, args->resource);
  return {{up, [args] { return RunUp(*args); }}, {down, [args] { return RunDown(*args); }}};
}

}  // namespace repld::cli
