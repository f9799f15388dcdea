// repld: serves one resource on this node. Runs in the foreground; logs to stderr.
#include <sched.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/prctl.h>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>

#include "daemon/config.h"
#include "daemon/resource.h"
#include "daemon/service_notifier.h"

namespace {

// The daemon serves /dev/ublkbN from its event loop thread, which must never wait on that
// device itself: PR_SET_IO_FLUSHER keeps memory reclaim in this thread (and the io_uring
// workers it creates) from writing back through the device, and a mount namespace of its own
// (a slave of the host's: the administrator's mounts and unmounts propagate in, nothing of the
// daemon's propagates out) keeps the daemon from holding a file system on the device alive.
//
// A daemon that starts while a file system on a ublk device is mounted (it takes over the
// device of a killed daemon) would inherit that mount in its new namespace, keep the file
// system alive after the administrator unmounts it, and, on exit, unmount it there: a journal
// write to the device it no longer serves, and a process that never exits. So those mounts are
// detached from the daemon's namespace first.
void DetachUblkMounts() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS"
    std::istringstream in(line);
    std::string id, parent, devno, root, target, field;
    in >> id >> parent >> devno >> root >> target;
    while (in >> field && field != "-") {
    }
    std::string fstype, source;
    in >> fstype >> source;
    if (source.rfind("/dev/ublkb", 0) != 0) continue;
    std::string path;  // the kernel writes space, tab, newline and backslash as \ooo
    for (size_t i = 0; i < target.size(); ++i) {
      if (target[i] == '\\' && i + 3 < target.size()) {
        path += static_cast<char>(std::stoi(target.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        path += target[i];
      }
    }
    if (umount2(path.c_str(), MNT_DETACH) == 0) {
      spdlog::info("{} ({}): detached from the daemon's own mount namespace", path, source);
    }
  }
}

repld::Status IsolateForUblk() {
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0) {
    return repld::Status::Error(errno, std::string("prctl(PR_SET_IO_FLUSHER): ") +
                                           std::strerror(errno) +
                                           "; the ublk frontend needs root (CAP_SYS_RESOURCE)");
  }
  if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    return repld::Status::Error(errno, std::string("a mount namespace of its own: ") +
                                           std::strerror(errno) +
                                           "; the ublk frontend needs root (CAP_SYS_ADMIN)");
  }
  DetachUblkMounts();
  return repld::Status::Ok();
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "repld: error: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"repld: userspace replicated block device daemon (one resource per process)"};
  std::string config_path;
  std::string node_name;
  std::string log_level = "info";
  unsigned drain_timeout_s = 30;
  app.add_option("-c,--config", config_path, "resource configuration file (TOML)")->required();
  app.add_option("-n,--node", node_name, "node to run as (default: this host's name)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--drain-timeout", drain_timeout_s,
                 "seconds to let requests in flight finish on SIGTERM")
      ->check(CLI::Range(1u, 3600u));
  app.set_version_flag("--version", "repld " REPLD_VERSION);
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("repld");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  signal(SIGPIPE, SIG_IGN);

  auto config = repld::LoadConfig(config_path);
  if (!config.ok()) return Fail(config.status().message());
  auto node = repld::SelectNode(
      config.value(), node_name.empty() ? std::nullopt : std::optional<std::string>(node_name));
  if (!node.ok()) return Fail(node.status().message());

  if (config.value().frontend == repld::Frontend::kUblk) {
    if (auto s = IsolateForUblk(); !s.ok()) return Fail(s.message());
  }
  asio::io_context io(1);
  auto resource = repld::Resource::Create(io, config.value(), node.value());
  if (!resource.ok()) return Fail(resource.status().message());
  if (auto s = resource.value()->Start(); !s.ok()) return Fail(s.message());
  repld::ServiceNotifier notifier(io, repld::SystemdNotify::FromEnvironment(),
                                  config.value().startup,
                                  [&resource] { return resource.value()->StatusJson(); });
  notifier.Start();

  int exit_code = 0;
  bool stopping = false;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  std::function<void(const asio::error_code&, int)> on_signal;
  on_signal = [&](const asio::error_code& ec, int signo) {
    if (ec) return;
    if (stopping) {
      spdlog::warn("signal {} again: closing client connections without waiting", signo);
      resource.value()->AbortClients();
      return;
    }
    stopping = true;
    notifier.Stopping();
    spdlog::info(
        "signal {}: draining requests in flight (up to {} s; signal again to cut it short)", signo,
        drain_timeout_s);
    signals.async_wait(on_signal);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          repld::Status s = co_await resource.value()->Stop(std::chrono::seconds(drain_timeout_s));
          if (!s.ok()) {
            spdlog::error("{}", s.message());
            exit_code = 1;
          }
          io.stop();
        },
        asio::detached);
  };
  signals.async_wait(on_signal);
  io.run();
  // Everything written is on disk now. Leave without tearing the event loop down: operations
  // still parked in the kernel's io_uring workers (an accept, say) would otherwise be destroyed
  // after the objects they refer to. The kernel reclaims the rings, sockets and files.
  spdlog::shutdown();
  std::fflush(nullptr);
  std::_Exit(exit_code);
}
