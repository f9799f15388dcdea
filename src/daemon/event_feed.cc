#include "daemon/event_feed.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace repld {
namespace {

using nlohmann::json;

// The identity fields of an object: always in its events, never a "change" by themselves.
bool IsIdentity(const std::string& key) { return key == "name" || key == "peer"; }

json Event(const std::string& type, const std::string& object, const json& fields,
           const std::string& time) {
  json e = {{"time", time}, {"type", type}, {"object", object}};
  for (const auto& [k, v] : fields.items()) e[k] = v;
  return e;
}

std::string Text(const json& j, const char* key, const char* fallback = "") {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
}

}  // namespace

json EventObjects(const json& status) {
  const std::string name = Text(status, "resource");
  json objects = {
      {"resource", {{"name", name}, {"role", Text(status, "role")}}},
      {"device", {{"name", name}, {"disk", Text(status, "disk")}}},
  };
  const auto peer = status.find("peer");
  if (peer != status.end() && peer->is_object()) {
    const std::string peer_name = Text(*peer, "node");
    objects["connection"] = {{"name", name},
                             {"peer", peer_name},
                             {"connection", Text(status, "connection")},
                             {"role", Text(*peer, "role", "Unknown")}};
    objects["peer-device"] = {{"name", name},
                              {"peer", peer_name},
                              {"replication", Text(status, "replication")},
                              {"peer-disk", Text(*peer, "disk", "DUnknown")},
                              {"resync-suspended", status.value("resync_paused", false)}};
  }
  return objects;
}

std::vector<json> ExistsEvents(const json& objects, const std::string& time) {
  std::vector<json> events;
  for (const char* object : {"resource", "device", "connection", "peer-device"}) {
    if (objects.contains(object)) events.push_back(Event("exists", object, objects[object], time));
  }
  return events;
}

std::vector<json> ChangeEvents(const json& before, const json& after, const std::string& time) {
  std::vector<json> events;
  for (const char* object : {"resource", "device", "connection", "peer-device"}) {
    if (!after.contains(object)) continue;
    const json& now = after[object];
    const json was = before.contains(object) ? before[object] : json::object();
    json fields = json::object();
    bool changed = false;
    for (const auto& [k, v] : now.items()) {
      if (IsIdentity(k)) {
        fields[k] = v;
      } else if (!was.contains(k) || was[k] != v) {
        fields[k] = v;
        changed = true;
      }
    }
    if (changed) events.push_back(Event("change", object, fields, time));
  }
  return events;
}

std::string FormatEventLine(const json& event) {
  std::string line = Text(event, "time") + " " + Text(event, "type") + " " + Text(event, "object");
  // Identity first (name, peer), as DRBD prints it; then the states, by name.
  for (const char* key : {"name", "peer"}) {
    if (event.contains(key)) line += std::string(" ") + key + ":" + Text(event, key);
  }
  for (const auto& [k, v] : event.items()) {
    if (k == "time" || k == "type" || k == "object" || IsIdentity(k)) continue;
    std::string value;
    if (v.is_string()) {
      value = v.get<std::string>();
    } else if (v.is_boolean()) {
      value = v.get<bool>() ? "yes" : "no";
    } else {
      value = v.dump();
    }
    line += " " + k + ":" + value;
  }
  return line;
}

std::string EventTimeNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count()));
  return buf;
}

}  // namespace repld
