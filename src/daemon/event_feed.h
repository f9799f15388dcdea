// `replctl events`: the resource's state as objects (DRBD's events2: resource, device,
// connection, peer-device), and the events that tell a change of them. Built from the status
// object (docs/control.md), so that events and status never disagree. Pure: no I/O, no clock
// but the time stamp the caller passes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace repld {

// {"resource": {...}, "device": {...}, "connection": {...}, "peer-device": {...}} (the last two
// only with a peer): the fields events report, by object.
nlohmann::json EventObjects(const nlohmann::json& status);

// One "exists" event per object; `time` is the stamp every event carries.
std::vector<nlohmann::json> ExistsEvents(const nlohmann::json& objects, const std::string& time);

// One "change" event per object whose fields differ, with the fields that changed.
std::vector<nlohmann::json> ChangeEvents(const nlohmann::json& before, const nlohmann::json& after,
                                         const std::string& time);

// "2026-11-26T02:50:00.123Z change connection name:r0 peer:beta connection:Connected"
std::string FormatEventLine(const nlohmann::json& event);

// Now, as events stamp it (UTC, milliseconds).
std::string EventTimeNow();

}  // namespace repld
