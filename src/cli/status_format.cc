#include "cli/status_format.h"

#include <algorithm>
#include <cstdio>

#include "common/units.h"

namespace repld::cli {
namespace {

using nlohmann::json;

const json& Field(const json& object, const char* key) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  const auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

std::string Text(const json& object, const char* key) {
  const json& v = Field(object, key);
  return v.is_string() ? v.get<std::string>() : "?";
}

uint64_t Count(const json& object, const char* key) {
  const json& v = Field(object, key);
  return v.is_number_unsigned() ? v.get<uint64_t>() : 0;
}

std::optional<uint64_t> MaybeCount(const json& object, const char* key) {
  const json& v = Field(object, key);
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

// 23260 -> "23,260".
std::string Grouped(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string CountersLine(const json& counters) {
  return "  counters: sent " + FormatSizeBytes(Count(counters, "sent_bytes")) + ", received " +
         FormatSizeBytes(Count(counters, "received_bytes")) + ", written " +
         FormatSizeBytes(Count(counters, "written_bytes")) + ", read " +
         FormatSizeBytes(Count(counters, "read_bytes")) + ", al-writes " +
         std::to_string(Count(counters, "al_writes")) + ", bitmap-writes " +
         std::to_string(Count(counters, "bitmap_writes")) + ", pending " +
         std::to_string(Count(counters, "pending")) + ", unacked " +
         std::to_string(Count(counters, "unacked")) + "\n";
}

}  // namespace

namespace {

double Fraction(uint64_t done, uint64_t total) {
  return total == 0 ? 1.0 : static_cast<double>(std::min(done, total)) / static_cast<double>(total);
}

// Truncated, not rounded: 99.96% done is not 100.0%.
double Percent(uint64_t done, uint64_t total) {
  return static_cast<double>(static_cast<uint64_t>(Fraction(done, total) * 1000.0)) / 10.0;
}

}  // namespace

std::string FormatProgressBar(uint64_t done, uint64_t total) {
  constexpr int kBarChars = 20;
  const int filled = static_cast<int>(Fraction(done, total) * kBarChars);
  std::string bar = "[";
  if (filled >= kBarChars) {
    bar += std::string(kBarChars, '=');
  } else {
    bar += std::string(static_cast<size_t>(filled), '=') + ">" +
           std::string(static_cast<size_t>(kBarChars - 1 - filled), '.');
  }
  return bar + "]";
}

std::string FormatProgress(uint64_t done_bytes, uint64_t total_bytes) {
  char text[160];
  std::snprintf(text, sizeof text, " %.1f%% (%s of %s)", Percent(done_bytes, total_bytes),
                FormatSizeBytes(std::min(done_bytes, total_bytes)).c_str(),
                FormatSizeBytes(total_bytes).c_str());
  return FormatProgressBar(done_bytes, total_bytes) + text;
}

std::string FormatResyncProgress(uint64_t done_bytes, uint64_t total_bytes) {
  if (done_bytes > total_bytes) done_bytes = total_bytes;
  char text[160];
  std::snprintf(text, sizeof text, " sync'ed: %.1f%% (%llu/%llu)M  done: %s of %s",
                Percent(done_bytes, total_bytes),
                static_cast<unsigned long long>((total_bytes - done_bytes) / kMiB),
                static_cast<unsigned long long>(total_bytes / kMiB),
                FormatSizeBytes(done_bytes).c_str(), FormatSizeBytes(total_bytes).c_str());
  return FormatProgressBar(done_bytes, total_bytes) + text;
}

std::string FormatResyncSpeed(std::optional<uint64_t> eta_seconds,
                              std::optional<uint64_t> speed_bytes_per_second,
                              std::optional<uint64_t> average_bytes_per_second) {
  std::string finish = "?";
  if (eta_seconds) {
    char text[40];
    std::snprintf(text, sizeof text, "%llu:%02llu:%02llu",
                  static_cast<unsigned long long>(*eta_seconds / 3600),
                  static_cast<unsigned long long>(*eta_seconds / 60 % 60),
                  static_cast<unsigned long long>(*eta_seconds % 60));
    finish = text;
  }
  auto kib = [](std::optional<uint64_t> v) { return v ? Grouped(*v / 1024) : std::string("?"); };
  return "finish: " + finish + " speed: " + kib(speed_bytes_per_second) + " (" +
         kib(average_bytes_per_second) + ") K/sec";
}

std::string FormatStatus(const json& status) {
  std::string out = Text(status, "resource") + " role:" + Text(status, "role") + "\n";
  out += "  disk:" + Text(status, "disk") + "\n";
  // "    failed: a write of the peer's at byte 0 (65536 bytes): Input/output error (errno 5) at
  //  2026-12-07T07:10:00.123Z; on_io_error = detach"
  const json& disk_error = Field(status, "disk_error");
  if (disk_error.is_object()) {
    const json& error = Field(disk_error, "error");
    const json& at = Field(disk_error, "at");
    out += "    failed: " + Text(disk_error, "what") +
           (error.is_string() ? ": " + error.get<std::string>() + " (errno " +
                                    std::to_string(Count(disk_error, "errno")) + ")"
                              : std::string()) +
           (at.is_string() ? " at " + at.get<std::string>() : std::string()) +
           "; on_io_error = " + Text(disk_error, "on_io_error") + "\n";
  }

  const json& peer = Field(status, "peer");
  const std::string connection = Text(status, "connection");
  const uint64_t out_of_sync_bytes = Count(status, "out_of_sync_bytes");
  if (peer.is_object() || connection != "StandAlone") {
    const std::string name = peer.is_object() ? Text(peer, "node") : "peer";
    if (connection == "Connected") {
      out += "  " + name + " role:" + Text(peer, "role") + "\n";
      out += "    replication:" + Text(status, "replication") + " peer-disk:" + Text(peer, "disk") +
             "\n";
    } else {
      out += "  " + name + " connection:" + connection + "\n";
      const json& why = Field(status, "connection_error");
      if (why.is_string()) out += "    last error: " + why.get<std::string>() + "\n";
    }
    const json& decision = Field(status, "sync_decision");
    if (connection == "Connected" && decision.is_string()) {
      out += "    decided by " + decision.get<std::string>() + "\n";
    }
    if (out_of_sync_bytes > 0)
      out += "    out-of-sync: " + FormatSizeBytes(out_of_sync_bytes) + "\n";
    const json& resync = Field(status, "resync");
    if (resync.is_object()) {
      out += "    " +
             FormatResyncProgress(Count(resync, "done_bytes"), Count(resync, "total_bytes")) + "\n";
      const auto speed = MaybeCount(resync, "speed_bytes_per_second");
      if (speed) {
        out += "    " +
               FormatResyncSpeed(MaybeCount(resync, "eta_seconds"), speed,
                                 MaybeCount(resync, "average_bytes_per_second")) +
               "\n";
      }
      if (const uint64_t failed = Count(resync, "failed_bytes"); failed > 0) {
        const auto next = MaybeCount(resync, "next_pass_in_seconds");
        out += "    the peer failed to write " + FormatSizeBytes(failed) +
               " of the last pass (its log says why)" +
               (next ? "; next pass in " + std::to_string(*next) + " s" : "") + "\n";
      }
    }
    const json& verify = Field(status, "verify");
    if (verify.is_object()) {
      const bool running =
          Field(verify, "running").is_boolean() && Field(verify, "running").get<bool>();
      out += std::string("    ") + (running ? "verify: " : "last verify: ") +
             FormatSizeBytes(Count(verify, "done_bytes")) + " of " +
             FormatSizeBytes(Count(verify, "total_bytes")) + " compared, " +
             FormatSizeBytes(Count(verify, "differing_bytes")) + " differ" +
             (running ? ""
              : Count(verify, "differing_bytes") > 0
                  ? " (marked out of sync: 'replctl disconnect' then 'replctl "
                    "connect' resyncs them)"
                  : "") +
             "\n";
    }
    const json& stopped = Field(status, "resync_stopped_reason");
    if (stopped.is_string()) {
      out += "    resync stopped: " + stopped.get<std::string>() + "\n";
    }
    const json& paused = Field(status, "resync_paused");
    if (paused.is_boolean() && paused.get<bool>()) {
      out += "    resync paused here ('replctl resume-sync' resumes it)\n";
    }
  } else if (out_of_sync_bytes > 0) {
    out += "  out-of-sync: " + FormatSizeBytes(out_of_sync_bytes) + "\n";
  }
  out += CountersLine(Field(status, "counters"));
  return out;
}

}  // namespace repld::cli
