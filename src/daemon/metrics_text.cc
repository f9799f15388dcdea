#include "daemon/metrics_text.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "replication/states.h"

namespace repld {
namespace {

using nlohmann::json;

// The field `key` of `object`, or nullptr when it is missing or null (or `object` is none).
const json* Field(const json* object, const char* key) {
  if (object == nullptr || !object->is_object()) return nullptr;
  const auto it = object->find(key);
  if (it == object->end() || it->is_null()) return nullptr;
  return &*it;
}

const json* StringField(const json* object, const char* key) {
  const json* v = Field(object, key);
  return v != nullptr && v->is_string() ? v : nullptr;
}

std::string DoubleText(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;  // shortest exact form
  return std::string(buf, end);
}

// Integers exactly (a byte count above 2^53 must not be rounded), never in exponent form.
std::optional<std::string> NumberText(const json* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_number_unsigned()) return std::to_string(v->get<uint64_t>());
  if (v->is_number_integer()) return std::to_string(v->get<int64_t>());
  if (v->is_number_float()) return DoubleText(v->get<double>());
  return std::nullopt;
}

std::optional<std::string> BoolText(const json* v) {
  if (v == nullptr || !v->is_boolean()) return std::nullopt;
  return std::string(v->get<bool>() ? "1" : "0");
}

std::string Label(std::string_view name, std::string_view value) {
  return std::string(name) + "=\"" + EscapeMetricLabelValue(value) + "\"";
}

// HELP text escapes backslash and newline only.
std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

struct Sample {
  std::string labels;  // `a="x",b="y"`, without the braces
  std::string value;
};

class Exposition {
 public:
  // One family: its HELP and TYPE once, then its samples; left out whole if it has none.
  void Family(std::string_view name, std::string_view type, std::string_view help,
              const std::vector<Sample>& samples) {
    if (samples.empty()) return;
    text_ += "# HELP " + std::string(name) + " " + EscapeHelp(help) + "\n";
    text_ += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
    for (const Sample& s : samples) {
      text_ += std::string(name) + "{" + s.labels + "} " + s.value + "\n";
    }
  }

  // A family of one sample, if `value` is set.
  void Single(std::string_view name, std::string_view type, std::string_view help,
              const std::string& labels, const std::optional<std::string>& value) {
    if (!value) return;
    Family(name, type, help, {Sample{labels, *value}});
  }

  // A state as a gauge per value: 1 for `current`, 0 for the other `known` values; a `current`
  // that is not among them is added last. Left out if `current` is not a string.
  void StateSet(std::string_view name, std::string_view help, const std::string& labels,
                std::string_view key, std::initializer_list<const char*> known,
                const json* current) {
    if (current == nullptr || !current->is_string()) return;
    const std::string& now = current->get_ref<const std::string&>();
    std::vector<Sample> samples;
    bool seen = false;
    for (const char* state : known) {
      const bool is_now = now == state;
      seen = seen || is_now;
      samples.push_back({labels + "," + Label(key, state), is_now ? "1" : "0"});
    }
    if (!seen) samples.push_back({labels + "," + Label(key, now), "1"});
    Family(name, "gauge", help, samples);
  }

  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
};

void ResourceFamilies(Exposition& out, const json& s, const std::string& labels) {
  std::string info = labels;
  if (const json* node = StringField(&s, "node"))
    info += "," + Label("node", node->get<std::string>());
  if (const json* p = StringField(&s, "protocol"))
    info += "," + Label("protocol", p->get<std::string>());
  out.Single("repld_resource_info", "gauge",
             "Always 1; the labels name this node and the replication protocol (A, B or C)", info,
             "1");
  out.StateSet("repld_resource_role", "Role of this node: 1 for the current role, 0 for the others",
               labels, "role", {RoleName(Role::kPrimary), RoleName(Role::kSecondary)},
               Field(&s, "role"));
}

void DeviceFamilies(Exposition& out, const json& s, const std::string& labels) {
  out.StateSet("repld_device_state",
               "State of this node's data: 1 for the current disk state, 0 for the others", labels,
               "disk",
               {DiskStateName(DiskState::kDiskless), DiskStateName(DiskState::kInconsistent),
                DiskStateName(DiskState::kOutdated), DiskStateName(DiskState::kUpToDate),
                DiskStateName(DiskState::kFailed)},
               Field(&s, "disk"));
  out.Single("repld_device_disk_failed", "gauge",
             "1 when the local disk failed a write or a flush ([disk] on_io_error; the status's "
             "disk_error says what and when), 0 otherwise",
             labels, Field(&s, "disk_error") != nullptr ? "1" : "0");
  out.Single("repld_device_size_bytes", "gauge", "Size of the replicated device in bytes", labels,
             NumberText(Field(&s, "size_bytes")));
  const json* c = Field(&s, "counters");
  out.Single("repld_device_read_bytes_total", "counter",
             "Bytes the clients read, from the local disk or from the peer's "
             "(repld_device_peer_read_bytes_total)",
             labels, NumberText(Field(c, "read_bytes")));
  out.Single("repld_device_written_bytes_total", "counter", "Bytes written to the local disk",
             labels, NumberText(Field(c, "written_bytes")));
  out.Single("repld_device_peer_read_bytes_total", "counter",
             "Bytes of client reads served from the peer's disk (blocks not yet synced here)",
             labels, NumberText(Field(c, "peer_read_bytes")));
  out.Single("repld_device_alwrites_total", "counter",
             "Activity log transactions written to the metadata", labels,
             NumberText(Field(c, "al_writes")));
  out.Single("repld_device_bmwrites_total", "counter",
             "Writes of the dirty bitmap pages to the metadata", labels,
             NumberText(Field(c, "bitmap_writes")));
  out.Single("repld_device_upperpending", "gauge", "Client requests not yet answered", labels,
             NumberText(Field(c, "pending")));
  const json* clients = Field(&s, "clients");
  std::optional<std::string> open;
  if (clients != nullptr && clients->is_number()) open = clients->get<double>() > 0 ? "1" : "0";
  out.Single("repld_device_open", "gauge",
             "1 while a block device client has the device (an NBD connection, or /dev/ublkbN "
             "open exclusively), else 0",
             labels, open);
  out.Single("repld_device_clients", "gauge",
             "Block device clients: NBD connections, or 1 while /dev/ublkbN is open exclusively",
             labels, NumberText(clients));
}

void ConnectionFamilies(Exposition& out, const json& s, const std::string& labels) {
  const json* peer = Field(&s, "peer");
  out.StateSet("repld_connection_state",
               "Connection to the peer: 1 for the current state, 0 for the others", labels,
               "connection",
               {ConnStateName(ConnState::kStandAlone), ConnStateName(ConnState::kConnecting),
                ConnStateName(ConnState::kConnected)},
               Field(&s, "connection"));
  out.StateSet("repld_connection_peer_role",
               "Role of the peer (Unknown while not connected): 1 for the current one, 0 for the "
               "others",
               labels, "role", {RoleName(Role::kPrimary), RoleName(Role::kSecondary), "Unknown"},
               Field(peer, "role"));
  out.StateSet("repld_peerdevice_replication_state",
               "What the connection does with the data: 1 for the current state, 0 for the others",
               labels, "replication",
               {ReplStateName(ReplState::kOff), ReplStateName(ReplState::kEstablished),
                ReplStateName(ReplState::kWFBitMapS), ReplStateName(ReplState::kSyncSource),
                ReplStateName(ReplState::kSyncTarget), ReplStateName(ReplState::kVerifyS)},
               Field(&s, "replication"));
  out.StateSet(
      "repld_peerdevice_peer_disk_state",
      "State of the peer's data (DUnknown while not connected): 1 for the current one, "
      "0 for the others",
      labels, "disk",
      {DiskStateName(DiskState::kDiskless), DiskStateName(DiskState::kInconsistent),
       DiskStateName(DiskState::kOutdated), DiskStateName(DiskState::kUpToDate), "DUnknown"},
      Field(peer, "disk"));
}

void PeerDeviceFamilies(Exposition& out, const json& s, const std::string& labels) {
  out.Single("repld_peerdevice_outofsync_bytes", "gauge",
             "Bytes this node's bitmap marks as differing from the peer", labels,
             NumberText(Field(&s, "out_of_sync_bytes")));
  const json* c = Field(&s, "counters");
  out.Single("repld_peerdevice_sent_bytes_total", "counter", "Bytes of data sent to the peer",
             labels, NumberText(Field(c, "sent_bytes")));
  out.Single("repld_peerdevice_received_bytes_total", "counter",
             "Bytes of data received from the peer", labels,
             NumberText(Field(c, "received_bytes")));
  out.Single("repld_peerdevice_unacked", "gauge", "Frames sent to the peer and not yet confirmed",
             labels, NumberText(Field(c, "unacked")));
  out.Single("repld_peerdevice_resync_bytes_total", "counter",
             "Resync data this node sent as SyncSource that the peer confirmed", labels,
             NumberText(Field(c, "resync_bytes")));
  out.Single("repld_peerdevice_resync_equal_bytes_total", "counter",
             "Checksum resync: bytes the peer had equal, which did not travel", labels,
             NumberText(Field(c, "resync_equal_bytes")));
  out.Single("repld_peerdevice_resync_paused", "gauge",
             "1 while pause-sync is in force on this node, else 0", labels,
             BoolText(Field(&s, "resync_paused")));
}

// Present while a resync runs (replication SyncSource or SyncTarget).
void ResyncFamilies(Exposition& out, const json& s, const std::string& labels) {
  const json* r = Field(&s, "resync");
  out.Single("repld_peerdevice_resync_total_bytes", "gauge",
             "Bytes to resynchronize in the running resync (0 until the target learns it)", labels,
             NumberText(Field(r, "total_bytes")));
  out.Single("repld_peerdevice_resync_done_bytes", "gauge",
             "Bytes of the running resync done: confirmed by the peer (source), written here "
             "(target)",
             labels, NumberText(Field(r, "done_bytes")));
  out.Single("repld_peerdevice_resync_speed_bytes_per_second", "gauge",
             "Resync speed over the last 10 seconds", labels,
             NumberText(Field(r, "speed_bytes_per_second")));
  out.Single("repld_peerdevice_resync_average_bytes_per_second", "gauge",
             "Resync speed since the running resync started", labels,
             NumberText(Field(r, "average_bytes_per_second")));
  out.Single("repld_peerdevice_resync_eta_seconds", "gauge",
             "Time left in the running resync at the speed of the last 10 seconds", labels,
             NumberText(Field(r, "eta_seconds")));
}

// The last `replctl verify` on this node, from its start on.
void VerifyFamilies(Exposition& out, const json& s, const std::string& labels) {
  const json* v = Field(&s, "verify");
  out.Single("repld_peerdevice_verify_running", "gauge",
             "1 while an online verify is comparing, 0 after it ended", labels,
             BoolText(Field(v, "running")));
  out.Single("repld_peerdevice_verify_total_bytes", "gauge", "Bytes the last verify compares",
             labels, NumberText(Field(v, "total_bytes")));
  out.Single("repld_peerdevice_verify_done_bytes", "gauge", "Bytes the last verify compared",
             labels, NumberText(Field(v, "done_bytes")));
  out.Single("repld_peerdevice_verify_differing_bytes", "gauge",
             "Bytes the last verify found different (marked out of sync on both nodes)", labels,
             NumberText(Field(v, "differing_bytes")));
}

}  // namespace

std::string EscapeMetricLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatMetrics(const json& status, std::optional<double> peer_rtt_seconds) {
  if (!status.is_object()) return "";
  const json* name = StringField(&status, "resource");
  const std::string resource = Label("resource", name ? name->get<std::string>() : "");
  Exposition out;
  ResourceFamilies(out, status, resource);
  DeviceFamilies(out, status, resource);
  // Without a peer there is no connection, as in DRBD without one.
  if (const json* peer = Field(&status, "peer"); peer != nullptr && peer->is_object()) {
    const json* node = StringField(peer, "node");
    const std::string labels = resource + "," + Label("peer", node ? node->get<std::string>() : "");
    ConnectionFamilies(out, status, labels);
    PeerDeviceFamilies(out, status, labels);
    ResyncFamilies(out, status, labels);
    VerifyFamilies(out, status, labels);
    if (!peer_rtt_seconds) {
      const auto rtt = peer->find("rtt_seconds");
      if (rtt != peer->end() && rtt->is_number()) peer_rtt_seconds = rtt->get<double>();
    }
    if (peer_rtt_seconds) {
      out.Single("repld_peer_rtt_seconds", "gauge",
                 "Round-trip time to the peer: its last answer to a ping", labels,
                 DoubleText(*peer_rtt_seconds));
    }
  }
  return out.Take();
}

}  // namespace repld
