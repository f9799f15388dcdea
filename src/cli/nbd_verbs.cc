// nbd-attach, nbd-detach: a kernel /dev/nbdN on the resource's own NBD export, for machines
// whose kernel has nbd but not ublk. replctl does the NBD handshake on the daemon's unix socket,
// as nbd-client does, then hands the connected sockets to the kernel's nbd driver over netlink.
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
};

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
  close_all();  // the driver holds its own references
  if (!index.ok()) return Fail(index.status().message());
  std::printf("/dev/nbd%u\n", index.value());
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
