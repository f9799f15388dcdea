#include "daemon/control_proto.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>

namespace repld {
namespace {

using nlohmann::json;

// Never throws: invalid UTF-8 is replaced by U+FFFD.
std::string Dump(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

// Lines longer than this are cut in messages.
std::string Excerpt(std::string_view text) {
  constexpr size_t kExcerptBytesMax = 80;
  if (text.size() <= kExcerptBytesMax) return std::string(text);
  return std::string(text.substr(0, kExcerptBytesMax)) + "...";
}

Status CheckVersion(const json& object) {
  const std::string speaks = "; this daemon speaks " + std::to_string(kControlVersion);
  const auto it = object.find("version");
  if (it == object.end()) {
    return Status::Invalid("unsupported control protocol version (missing)" + speaks +
                           ": add \"version\":" + std::to_string(kControlVersion) +
                           " to the request");
  }
  // nlohmann keeps non-negative integers as unsigned.
  if (!it->is_number_unsigned() || it->get<uint64_t>() < 1) {
    return Status::Invalid("unsupported control protocol version " + Excerpt(Dump(*it)) + speaks +
                           " (\"version\" is a positive integer)");
  }
  if (it->get<uint64_t>() > static_cast<uint64_t>(kControlVersion)) {
    return Status::Invalid("unsupported control protocol version " +
                           std::to_string(it->get<uint64_t>()) + speaks +
                           " (use the replctl that came with the running repld)");
  }
  return Status::Ok();
}

constexpr const char* kCommands =
    "status, primary, secondary, connect, disconnect, invalidate, invalidate-remote, "
    "pause-sync, resume-sync, verify, events, adjust, attach, detach";

Status CheckArguments(const std::string& command, const json& request) {
  if (command == "status" || command == "secondary" || command == "disconnect" ||
      command == "invalidate" || command == "invalidate-remote" || command == "pause-sync" ||
      command == "resume-sync" || command == "verify" || command == "attach" ||
      command == "detach") {
    return Status::Ok();
  }
  // The commands with one optional boolean argument.
  const char* flag = command == "primary"   ? "force"
                     : command == "connect" ? "discard_my_data"
                     : command == "events"  ? "now"
                     : command == "adjust"  ? "dry_run"
                                            : nullptr;
  if (flag != nullptr) {
    const auto value = request.find(flag);
    if (value != request.end() && !value->is_boolean()) {
      return Status::Invalid("\"" + std::string(flag) + "\" must be true or false, not " +
                             Dump(*value));
    }
    return Status::Ok();
  }
  return Status::Invalid("unknown command '" + command + "'; the commands are " +
                         std::string(kCommands));
}

}  // namespace

Result<json> ParseControlRequest(std::string_view line) {
  if (line.size() > kControlLineBytesMax) {
    return Status::Invalid("request line longer than " + std::to_string(kControlLineBytesMax) +
                           " bytes");
  }
  json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) {
    return Status::Invalid("the request is not JSON: send one JSON object per line, like " +
                           Dump(json{{"version", kControlVersion}, {"command", "status"}}));
  }
  if (!request.is_object()) {
    return Status::Invalid("the request must be a JSON object, not " + Excerpt(Dump(request)));
  }
  if (Status s = CheckVersion(request); !s.ok()) return s;
  const auto command = request.find("command");
  if (command == request.end() || !command->is_string()) {
    return Status::Invalid("the request has no \"command\" string; the commands are " +
                           std::string(kCommands));
  }
  if (Status s = CheckArguments(command->get<std::string>(), request); !s.ok()) return s;
  return request;
}

std::string ControlResponseLine(json answer) {
  if (!answer.is_object()) {
    return ControlErrorLine("internal error: the daemon built a response that is not an object");
  }
  answer.erase("version");
  json response = {{"version", kControlVersion}};
  if (!answer.contains("ok")) response["ok"] = true;
  response.update(answer);
  return Dump(response) + "\n";
}

std::string ControlErrorLine(const std::string& message) {
  return Dump(json{{"version", kControlVersion}, {"ok", false}, {"error", message}}) + "\n";
}

std::string ControlRequestLine(const std::string& command, const json& arguments) {
  json request = {{"version", kControlVersion}, {"command", command}};
  if (arguments.is_object()) request.update(arguments);
  return Dump(request) + "\n";
}

Result<json> ParseControlResponse(std::string_view line) {
  json response = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (response.is_discarded() || !response.is_object()) {
    return Status::Invalid("the daemon's answer is not a JSON object: " + Excerpt(line));
  }
  const auto version = response.find("version");
  if (version == response.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kControlVersion) {
    return Status::Invalid("the daemon answered in control protocol version " +
                           (version == response.end() ? std::string("(none)") : Dump(*version)) +
                           "; this replctl speaks " + std::to_string(kControlVersion) +
                           " (use the replctl that came with the running repld)");
  }
  const auto ok = response.find("ok");
  if (ok == response.end() || !ok->is_boolean()) {
    return Status::Invalid("the daemon's answer has no \"ok\": " + Excerpt(line));
  }
  if (!ok->get<bool>()) {
    const auto error = response.find("error");
    return Status::Invalid(error != response.end() && error->is_string()
                               ? error->get<std::string>()
                               : "the daemon refused without saying why");
  }
  return response;
}

std::string GenerationIdText(uint64_t id) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIX64, id);
  return buf;
}

json StatusToJson(const StatusSnapshot& s) {
  const ReplicaStatus& r = s.replica;
  // As DRBD shows it: what the peer says of itself is known only while connected.
  json peer = nullptr;
  if (s.peer_node) {
    const bool live = r.conn == ConnState::kConnected && r.peer;
    peer = {
        {"node", *s.peer_node},
        {"role", live ? RoleName(r.peer->role) : "Unknown"},
        {"disk", live ? DiskStateName(r.peer->disk) : "DUnknown"},
        {"rtt_seconds", live && s.peer_rtt_seconds ? json(*s.peer_rtt_seconds) : json(nullptr)}};
  }
  json resync = nullptr;
  if (r.repl == ReplState::kSyncSource || r.repl == ReplState::kSyncTarget) {
    auto optional = [](const std::optional<uint64_t>& v) { return v ? json(*v) : json(nullptr); };
    resync = {{"total_bytes", r.resync_total_bytes},
              {"done_bytes", r.resync_done_bytes},
              {"speed_bytes_per_second", optional(s.resync_rate.speed_bytes_per_second)},
              {"average_bytes_per_second", optional(s.resync_rate.average_bytes_per_second)},
              {"eta_seconds", optional(s.resync_rate.eta_seconds)},
              {"failed_bytes", r.resync_failed_bytes},
              {"next_pass_in_seconds",
               r.resync_retry_seconds > 0 ? json(r.resync_retry_seconds) : json(nullptr)}};
  }
  const ReplicaCounters& c = r.counters;
  return {
      {"resource", s.resource},
      {"node", s.node},
      {"role", RoleName(r.role)},
      {"disk", DiskStateName(r.disk)},
      {"connection", ConnStateName(r.conn)},
      {"replication", ReplStateName(r.repl)},
      {"protocol", std::string(1, ProtocolLetter(r.protocol))},
      {"peer", peer},
      {"connection_error", s.connection_error.empty() || r.conn == ConnState::kConnected
                               ? json(nullptr)
                               : json(s.connection_error)},
      {"sync_decision", r.sync_decision.empty() ? json(nullptr) : json(r.sync_decision)},
      {"resync_paused", r.resync_paused},
      {"resync_stopped_reason",
       r.resync_stopped_reason.empty() ? json(nullptr) : json(r.resync_stopped_reason)},
      {"degraded_at_start", s.degraded_at_start},
      {"disk_error",
       s.disk_error
           ? json{{"what", s.disk_error->what},
                  {"errno", s.disk_error->error != 0 ? json(s.disk_error->error) : json(nullptr)},
                  {"error",
                   s.disk_error->error != 0 ? json(ErrnoText(s.disk_error->error)) : json(nullptr)},
                  {"on_io_error", s.disk_error->on_io_error},
                  {"at", s.disk_error->at.empty() ? json(nullptr) : json(s.disk_error->at)}}
           : json(nullptr)},
      {"pid", s.pid},
      {"verify", r.verify ? json{{"running", r.verify->running},
                                 {"total_bytes", r.verify->total_bytes},
                                 {"done_bytes", r.verify->done_bytes},
                                 {"differing_bytes", r.verify->differing_bytes}}
                          : json(nullptr)},
      {"out_of_sync_bytes", r.out_of_sync_bytes},
      {"resync", resync},
      {"counters",
       {{"sent_bytes", c.sent_bytes},
        {"received_bytes", c.received_bytes},
        {"written_bytes", c.written_bytes},
        {"read_bytes", c.read_bytes},
        {"al_writes", c.al_writes},
        {"bitmap_writes", c.bitmap_writes},
        {"resync_bytes", c.resync_bytes},
        {"resync_equal_bytes", c.resync_equal_bytes},
        {"peer_read_bytes", c.peer_read_bytes},
        {"pending", r.pending},
        {"unacked", r.unacked}}},
      {"generation",
       {{"current", GenerationIdText(r.ids.current)},
        {"bitmap", GenerationIdText(r.ids.bitmap)},
        {"history",
         json::array({GenerationIdText(r.ids.history[0]), GenerationIdText(r.ids.history[1])})}}},
      {"clients", s.clients},
      {"device", s.device.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.device)},
      {"size_bytes", s.size_bytes},
  };
}

}  // namespace repld
