// The control protocol (version 1) between repld and replctl, shared by both sides: its limits,
// the checks on a request, the framing of a response, the status object's schema and a blocking
// client call. See docs/control.md for the protocol as operators and scripts see it.
//
// Framing: one JSON object per line ('\n'), UTF-8, a line at most kControlLineBytesMax bytes
// (without its '\n'). Requests carry "version" and "command"; responses carry "version", "ok"
// and, when ok is false, "error".
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "daemon/resync_progress.h"
#include "replication/replica.h"

namespace repld {

inline constexpr int kControlVersion = 1;
inline constexpr size_t kControlLineBytesMax = 64 * 1024;
inline constexpr size_t kControlConnectionsMax = 16;
// The server closes a connection that sends nothing (or reads nothing) for this long, so that a
// stuck client cannot hold one of the kControlConnectionsMax slots for ever.
inline constexpr std::chrono::seconds kControlIdleTimeout{60};
// Event lines a `replctl events` connection may have unsent before it is dropped.
inline constexpr size_t kControlEventsQueuedMax = 1024;
// replctl gives up on a daemon that does not answer within this.
inline constexpr std::chrono::seconds kControlClientTimeout{10};

// Checks one request line (without its '\n'): a JSON object whose "version" is an integer in
// [1, kControlVersion] and whose "command" is a known command ("status", "primary",
// "secondary") with well-typed arguments ("force": bool, for primary). Returns the request, or
// an Invalid status whose message is the error to send back. Never throws.
Result<nlohmann::json> ParseControlRequest(std::string_view line);

// The response line (with its '\n') for a handler's answer: adds "version" and, unless the
// answer set it, "ok": true. Anything but an object becomes an error response. Invalid UTF-8
// in strings is replaced, never thrown.
std::string ControlResponseLine(nlohmann::json answer);
std::string ControlErrorLine(const std::string& message);

// The request line (with its '\n') for `command`; `arguments` (an object) adds fields.
std::string ControlRequestLine(const std::string& command,
                               const nlohmann::json& arguments = nlohmann::json::object());

// Checks one response line (without its '\n'): returns the response object when "ok" is true,
// an Invalid status carrying the daemon's "error" when it is false, and an Invalid status for a
// malformed or too new response.
Result<nlohmann::json> ParseControlResponse(std::string_view line);

// Sends `request_line` on the control socket at `path` and waits at most `timeout` for one
// response line. A daemon that is not running gives a status whose code is ENOENT or
// ECONNREFUSED; a silent one, ETIMEDOUT.
Result<nlohmann::json> CallControl(const std::string& path, const std::string& request_line,
                                   std::chrono::milliseconds timeout);

// What the status object (docs/control.md) is made of.
// The local disk's failure ([disk] on_io_error), as status shows it in "disk_error".
struct DiskErrorRecord {
  std::string what;         // "a write of the peer's at byte 4194304 (65536 bytes)"
  int error = 0;            // errno value; 0: not known (an earlier run's, from the metadata)
  std::string on_io_error;  // "detach" or "pass_on": what this node did about it
  std::string at;           // when, "2026-12-07T07:10:00.123Z"; empty: not known
};

struct StatusSnapshot {
  std::string resource;
  std::string node;
  // The other node of the file, if it names one; "peer" is null without one.
  std::optional<std::string> peer_node;
  ReplicaStatus replica;
  uint64_t clients = 0;          // NBD connections, or 1 while /dev/ublkbN is open exclusively
  std::string device;            // "/dev/ublkbN" while the ublk frontend has one; else empty
  uint64_t size_bytes = 0;       // the replicated device's size
  std::string connection_error;  // why the peer link last failed; empty if it did not
  ResyncRate resync_rate;        // while a resync runs
  // The metadata said at start that this node ran without its peer (a bitmap generation, or the
  // peer marked Outdated): [startup] degr_wfc_timeout applies instead of wfc_timeout.
  bool degraded_at_start = false;
  int64_t pid = 0;  // the daemon's process (replctl down signals it)
  // The last keepalive ping's round trip while connected ("peer": {"rtt_seconds"}).
  std::optional<double> peer_rtt_seconds;
  // The first I/O the local disk failed since it was attached (kept while it is detached).
  std::optional<DiskErrorRecord> disk_error;
};
nlohmann::json StatusToJson(const StatusSnapshot& snapshot);

// "0123456789ABCDEF": generation identifiers as the status object shows them.
std::string GenerationIdText(uint64_t id);

}  // namespace repld
