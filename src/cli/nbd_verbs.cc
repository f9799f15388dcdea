// nbd-attach, nbd-detach: a kernel /dev/nbdN on the resource's own NBD export, for machines
// whose kernel has nbd but not ublk. replctl does the NBD handshake on the daemon's unix socket,
// as nbd-client does, then hands the connected sockets to the kernel's nbd driver over netlink.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "blockdev/nbd_proto.h"
#include "cli/nbd_client.h"
#include "cli/nbd_netlink.h"
#include "cli/verbs.h"

namespace repld::cli {
namespace {

struct AttachArgs {
  ResourceOptions resource;
  int index = -1;
  unsigned connections = 1;
  unsigned timeout_s = 0;
  bool persist = false;
  unsigned dead_timeout_s = 600;
};

volatile sig_atomic_t g_stop = 0;

// --persist: the driver holds requests while the daemon is away (dead_conn_timeout); this
// process watches its own copies of the sockets and, when they hang up (the daemon died or
// restarted), opens the export again, as soon as the daemon serves it (a restarted node serves
// once it is Primary again), and hands the new sockets to the driver. A hang-up it cannot
// repair (the device was detached) ends it.
int Persist(const std::string& socket_path, const std::string& export_name, uint32_t index,
            std::vector<int> fds) {
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGINT, [](int) { g_stop = 1; });
  while (!g_stop) {
    std::vector<pollfd> polls;
    for (int fd : fds) polls.push_back({fd, POLLRDHUP, 0});
    const int n = ::poll(polls.data(), polls.size(), 1000);
    if (n <= 0) continue;
    bool hung_up = false;
    for (const pollfd& p : polls) {
      hung_up = hung_up || (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
    }
    if (!hung_up) continue;
    for (int fd : fds) ::close(fd);
    const size_t count = fds.size();
    fds.clear();
    std::fprintf(stderr, "replctl: /dev/nbd%u lost its connection; reconnecting\n", index);
    std::string last_error;
    while (!g_stop && fds.size() < count) {
      NbdExportInfo info;
      auto fd = NbdOpenExport(socket_path, export_name, info);
      if (fd.ok()) {
        fds.push_back(fd.value());
        continue;
      }
      if (fd.status().message() != last_error) {
        last_error = fd.status().message();
        std::fprintf(stderr, "replctl: /dev/nbd%u: %s; retrying\n", index, last_error.c_str());
      }
      for (int f : fds) ::close(f);
      fds.clear();
      ::usleep(200 * 1000);
    }
    if (g_stop) break;
    Status s = NbdNetlinkReconfigure(index, fds);
    if (!s.ok()) {
      for (int fd : fds) ::close(fd);
      std::fprintf(stderr, "replctl: /dev/nbd%u: %s; it was detached: stopping\n", index,
                   s.message().c_str());
      return 0;
    }
    std::fprintf(stderr, "replctl: /dev/nbd%u reconnected\n", index);
  }
  return 0;
}

int Attach(const AttachArgs& args) {
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const Target& t = target.value();
  if (t.config.frontend != Frontend::kNbd) {
    return Fail("resource " + t.config.name + " has frontend = \"ublk\": its device is " +
                "/dev/ublkb" + std::to_string(EffectiveUblkDeviceId(t.config, t.node)) +
                " while this node is Primary; nbd-attach is for frontend = \"nbd\"");
  }
  const NbdConfig nbd = EffectiveNbd(t.config, t.node);
  NbdConnectRequest request;
  if (args.index >= 0) request.index = static_cast<uint32_t>(args.index);
  request.timeout_s = args.timeout_s;
  if (args.persist) request.dead_conn_timeout_s = args.dead_timeout_s;
  auto close_all = [&request] {
    for (int fd : request.sockets) ::close(fd);
  };
  for (unsigned i = 0; i < args.connections; ++i) {
    NbdExportInfo info;
    auto fd = NbdOpenExport(nbd.socket, nbd.export_name, info);
    if (!fd.ok()) {
      close_all();
      return Fail(fd.status().message());
    }
    request.sockets.push_back(fd.value());
    request.size_bytes = info.size_bytes;
    request.server_flags = info.transmission_flags;
    // The logical block size: the export's minimum, at least a sector, as the ublk frontend
    // does, so that a partition table or file system reads the same through either.
    request.block_bytes = std::max<uint32_t>(512, info.block_min_bytes);
    if (request.block_bytes > 4096) {
      close_all();
      return Fail("the export's block size (" + std::to_string(request.block_bytes) +
                  " bytes) is larger than the kernel's nbd driver takes (4096)");
    }
    if (args.connections > 1 && !(info.transmission_flags & nbd::kTxCanMultiConn)) {
      close_all();
      return Fail("the export does not allow several connections; use --connections 1");
    }
  }
  auto index = NbdNetlinkConnect(request);
  if (!index.ok()) {
    close_all();
    return Fail(index.status().message());
  }
  std::printf("/dev/nbd%u\n", index.value());
  std::fflush(stdout);
  if (args.persist) return Persist(nbd.socket, nbd.export_name, index.value(), request.sockets);
  close_all();  // the driver holds its own references
  return 0;
}

int Detach(const std::string& device) {
  std::string digits = device;
  if (digits.rfind("/dev/nbd", 0) == 0) digits = digits.substr(8);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos ||
      digits.size() > 6) {
    return Fail("'" + device + "' is not /dev/nbdN or N");
  }
  Status s = NbdNetlinkDisconnect(static_cast<uint32_t>(std::stoul(digits)));
  if (!s.ok()) return Fail(s.message());
  return 0;
}

}  // namespace

std::vector<Verb> AddNbdVerbs(CLI::App& app) {
  auto attach_args = std::make_shared<AttachArgs>();
  CLI::App* attach = app.add_subcommand(
      "nbd-attach", "attach a kernel /dev/nbdN to this node's NBD export (prints the device)");
  AddResourceOptions(*attach, attach_args->resource);
  attach->add_option("--index", attach_args->index, "use /dev/nbdN (default: a free one)")
      ->check(CLI::Range(0, 1 << 20));
  attach
      ->add_option("--connections", attach_args->connections,
                   "NBD connections, one per kernel queue")
      ->check(CLI::Range(1u, 16u));
  attach->add_flag("--persist", attach_args->persist,
                   "stay in the foreground and reconnect the device when the daemon comes back "
                   "(requests wait meanwhile, up to --dead-timeout)");
  attach
      ->add_option("--dead-timeout", attach_args->dead_timeout_s,
                   "with --persist: seconds the kernel holds requests without a connection")
      ->check(CLI::Range(1u, 86400u));
  attach
      ->add_option("--timeout", attach_args->timeout_s,
                   "seconds before a request fails (default: the driver's)")
      ->check(CLI::Range(0u, 86400u));

  auto device = std::make_shared<std::string>();
  CLI::App* detach = app.add_subcommand("nbd-detach", "detach a kernel /dev/nbdN");
  detach->add_option("device", *device, "/dev/nbdN or N")->required();
  return {{attach, [attach_args] { return Attach(*attach_args); }},
          {detach, [device] { return Detach(*device); }}};
}

}  // namespace repld::cli
