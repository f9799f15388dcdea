// A resource's configuration, loaded from one TOML file that serves both nodes. Validation is
// strict: an unknown key, a wrong type or a value out of range is an error that names the file,
// the line and column, the key, and what is allowed (see docs/config.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blockdev/backing_store.h"
#include "common/status.h"
#include "replication/resync_controller.h"
#include "replication/states.h"
#include "replication/sync_decision.h"

namespace repld {

struct NodeConfig {
  std::string name;
  std::string disk;
  std::optional<std::string> meta_disk;       // overrides disk.meta_disk on this node
  std::optional<std::string> address;         // peer link "HOST:PORT" this node listens on
  std::optional<std::string> nbd_socket;      // overrides nbd.socket on this node
  std::optional<std::string> nbd_listen;      // overrides nbd.listen on this node
  std::optional<std::string> control_socket;  // overrides the control socket path
  std::optional<uint32_t> ublk_device_id;     // overrides ublk.device_id on this node
  std::optional<std::string> metrics_listen;  // overrides metrics.listen on this node
};

struct NetConfig {
  std::string secret;  // shared secret for HMAC-SHA256; empty: no peer link allowed
  std::chrono::milliseconds ping_interval{10'000};
  std::chrono::milliseconds ping_timeout{500};
  uint32_t ko_count = 7;  // missed ping answers before the peer is dropped; 0: only the timeout
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds reconnect_max{10'000};  // backoff doubles up to this
  uint32_t max_buffers = 2048;                      // writes in flight to the peer
  SplitBrainPolicy split_brain;  // after_sb_0pri / 1pri / 2pri: all "disconnect" by default
};

struct ResyncConfig {
  uint64_t rate_bytes = 0;      // per second a SyncSource sends at most; 0: as fast as it can
  bool checksums = false;       // digests first; only blocks whose digests differ travel
  ResyncController controller;  // c_plan_ahead & co; off (plan_ahead_ticks 0) by default
};

struct MetaConfig {
  std::string meta_disk = "internal";  // "internal" or a path
  uint32_t al_extents = 1237;
};

struct NbdConfig {
  std::string socket;  // default: /run/repld/<resource>.sock
  std::string listen;  // empty: no TCP listener
  std::string export_name;
  uint32_t connections_max = 16;
  uint32_t inflight_max = 64;
  uint64_t request_bytes_max = 32ULL << 20;
  uint64_t buffer_pool_bytes = 256ULL << 20;
};

enum class Frontend { kNbd, kUblk };

// The kernel ublk frontend (docs/config.md "[ublk]"): /dev/ublkb<device_id> on the Primary.
struct UblkConfig {
  std::optional<uint32_t> device_id;  // required with frontend = "ublk"
  uint16_t queues = 1;
  uint16_t queue_depth = 128;
  uint32_t io_bytes_max = 512 * 1024;
};

// [startup]: how long the daemon waits for its peer before it tells systemd it is ready (as
// DRBD's init script waits, wfc-timeout / degr-wfc-timeout); `replctl wait-connect`'s default.
// 0: forever.
struct StartupConfig {
  std::chrono::milliseconds wfc_timeout{0};
  // Used instead when this node ran without its peer before it stopped (its metadata has a
  // bitmap generation or marks the peer Outdated): the peer may be gone for good.
  std::chrono::milliseconds degr_wfc_timeout{60'000};
};

// [metrics]: the Prometheus endpoint (docs/metrics.md); off while `listen` is empty.
struct MetricsConfig {
  std::string listen;  // "HOST:PORT"
};

// [control]: who may use the control socket besides root.
struct ControlConfig {
  std::string group;  // empty: the socket is mode 0600 (root); else 0660, owned by this group
};

struct ResourceConfig {
  std::string path;         // the file it came from, for messages
  std::string common_path;  // the common file whose defaults applied; empty: none
  std::string name;
  NbdConfig nbd;
  Frontend frontend = Frontend::kNbd;
  UblkConfig ublk;
  DirectIoMode direct_io = DirectIoMode::kAuto;
  OnIoError on_io_error = OnIoError::kDetach;  // [disk] on_io_error
  Protocol protocol = Protocol::kC;
  NetConfig net;
  MetaConfig meta;
  ResyncConfig resync;
  StartupConfig startup;
  MetricsConfig metrics;
  ControlConfig control;
  std::vector<NodeConfig> nodes;
};

struct HostPort {
  std::string host;  // an IPv4 or IPv6 address, without brackets
  uint16_t port = 0;
};
// "127.0.0.1:10809", "[::1]:10809".
std::optional<HostPort> ParseHostPort(std::string_view text);

// Parses TOML text; `path` is used in messages only. `common_text` (from `common_path`) holds
// defaults for every resource: its tables fill in keys the resource's file leaves out.
Result<ResourceConfig> ParseConfig(std::string_view text, const std::string& path,
                                   std::string_view common_text = {},
                                   const std::string& common_path = {});
// Loads `path`, with the defaults of the common file next to it (kCommonFileName in the same
// directory) when there is one.
Result<ResourceConfig> LoadConfig(const std::string& path);
inline constexpr const char* kCommonFileName = "common.toml";
// The resource files of a directory (every *.toml but the common file), sorted: what `all`
// means to replctl.
Result<std::vector<std::string>> ResourceFiles(const std::string& directory);

// The node this daemon runs as: `requested` if given, else the one named like this host.
Result<NodeConfig> SelectNode(const ResourceConfig& config, std::optional<std::string> requested);

// The NBD settings in force on `node` (node overrides applied).
NbdConfig EffectiveNbd(const ResourceConfig& config, const NodeConfig& node);

// "internal" or the external metadata path in force on `node`.
std::string EffectiveMetaDisk(const ResourceConfig& config, const NodeConfig& node);

// The ublk device id in force on `node` (frontend = "ublk" only).
uint32_t EffectiveUblkDeviceId(const ResourceConfig& config, const NodeConfig& node);

// The Prometheus endpoint of `node` ("HOST:PORT"; empty: none): its override, else
// metrics.listen.
std::string EffectiveMetricsListen(const ResourceConfig& config, const NodeConfig& node);

// The control socket of `node`: its override, else /run/repld/<resource>.ctl.
std::string ControlSocketPath(const ResourceConfig& config, const NodeConfig& node);

// The other node of a two-node resource, if the file names exactly two.
std::optional<NodeConfig> PeerOf(const ResourceConfig& config, const NodeConfig& node);

}  // namespace repld
