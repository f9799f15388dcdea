// The status object (docs/control.md) as Prometheus metrics, in the text exposition format
// 0.0.4: the body of the daemon's optional GET /metrics (daemon/metrics_server.h).
//
// Names: `repld_` and, where the meaning is the same, the rest of drbd-reactor's exporter name
// (drbd_device_written_bytes_total -> repld_device_written_bytes_total). Every sample carries
// resource="NAME"; the connection and peer-device families also carry peer="NODE" and appear
// only when the status names a peer. A state is a gauge per known state value, 1 for the
// current one and 0 for the others, as drbd-reactor's enums: an unknown value (a newer daemon's
// state) is added with 1. Counters end in _total, byte counts in _bytes.
//
// Output order is fixed (the order of the families below, then of their samples), so two calls
// on the same status give the same bytes.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace repld {

// The Content-Type of FormatMetrics' output.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Never throws. A status that is not an object gives "". A missing or null field, or one of another
// type, leaves its samples out (a family with no samples is left out whole). The peer's round
// trip (repld_peer_rtt_seconds) is `peer_rtt_seconds` if set, else the status' peer.rtt_seconds.
std::string FormatMetrics(const nlohmann::json& status,
                          std::optional<double> peer_rtt_seconds = std::nullopt);

// A label value as the text format quotes it: backslash, double quote and newline escaped.
std::string EscapeMetricLabelValue(std::string_view value);

}  // namespace repld
