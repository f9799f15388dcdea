#include "daemon/metrics_text.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/units.h"
#include "daemon/control_proto.h"

namespace repld {
namespace {

using nlohmann::json;

// docs/control.md's example, connected and in sync, with counters that moved.
json InSyncStatus() {
  return json::parse(R"({"resource":"r0","node":"alpha","role":"Primary","disk":"UpToDate",
    "connection":"Connected","replication":"Established","protocol":"C",
    "peer":{"node":"beta","role":"Secondary","disk":"UpToDate"},
    "connection_error":null,"sync_decision":"rule 24: same data generation: in sync",
    "resync_paused":false,"verify":null,"out_of_sync_bytes":0,"resync":null,
    "counters":{"sent_bytes":1048576,"received_bytes":0,"written_bytes":2097152,
                "read_bytes":4096,"al_writes":12,"bitmap_writes":3,"resync_bytes":0,
                "resync_equal_bytes":0,"peer_read_bytes":0,"pending":1,"unacked":2},
    "generation":{"current":"0123456789ABCDEF","bitmap":"0000000000000000",
                  "history":["0000000000000000","0000000000000000"]},
    "clients":1,"device":null,"size_bytes":1073741824})");
}

// A resync in its first second (no speed yet), paused, after a verify.
json ResyncingStatus() {
  json s = InSyncStatus();
  s["replication"] = "SyncSource";
  s["peer"]["disk"] = "Inconsistent";
  s["out_of_sync_bytes"] = 771751936;
  s["resync_paused"] = true;
  s["resync"] = {{"total_bytes", 1073741824},
                 {"done_bytes", 301989888},
                 {"speed_bytes_per_second", nullptr},
                 {"average_bytes_per_second", 22147072},
                 {"eta_seconds", nullptr}};
  s["verify"] = {{"running", false},
                 {"total_bytes", 1073741824},
                 {"done_bytes", 1073741824},
                 {"differing_bytes", 8192}};
  return s;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool HasLine(const std::string& text, const std::string& line) {
  for (const std::string& l : Lines(text)) {
    if (l == line) return true;
  }
  return false;
}

// The lines of one family, in order: its HELP, its TYPE, its samples.
std::vector<std::string> FamilyLines(const std::string& text, const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& l : Lines(text)) {
    if (l.rfind("# HELP " + name + " ", 0) == 0 || l.rfind("# TYPE " + name + " ", 0) == 0 ||
        l.rfind(name + "{", 0) == 0) {
      out.push_back(l);
    }
  }
  return out;
}

TEST(MetricsText, StatesAreOneGaugePerValue) {
  const std::string text = FormatMetrics(InSyncStatus());
  const std::string role_help =
      "# HELP repld_resource_role Role of this node: 1 for the current role, 0 for the others";
  const std::string connection_help =
      "# HELP repld_connection_state Connection to the peer: 1 for the current state, 0 for the "
      "others";
  EXPECT_EQ(FamilyLines(text, "repld_resource_role"),
            (std::vector<std::string>{role_help, "# TYPE repld_resource_role gauge",
                                      R"(repld_resource_role{resource="r0",role="Primary"} 1)",
                                      R"(repld_resource_role{resource="r0",role="Secondary"} 0)"}));
  EXPECT_EQ(FamilyLines(text, "repld_connection_state"),
            (std::vector<std::string>{
                connection_help, "# TYPE repld_connection_state gauge",
                R"(repld_connection_state{resource="r0",peer="beta",connection="StandAlone"} 0)",
                R"(repld_connection_state{resource="r0",peer="beta",connection="Connecting"} 0)",
                R"(repld_connection_state{resource="r0",peer="beta",connection="Connected"} 1)"}));
  EXPECT_TRUE(HasLine(text, R"(repld_device_state{resource="r0",disk="UpToDate"} 1)"));
  EXPECT_TRUE(HasLine(text, R"(repld_device_state{resource="r0",disk="Outdated"} 0)"));
  EXPECT_TRUE(HasLine(
      text,
      R"(repld_peerdevice_replication_state{resource="r0",peer="beta",replication="Established"} 1)"));
  EXPECT_TRUE(HasLine(
      text, R"(repld_peerdevice_peer_disk_state{resource="r0",peer="beta",disk="UpToDate"} 1)"));
  EXPECT_TRUE(
      HasLine(text, R"(repld_connection_peer_role{resource="r0",peer="beta",role="Secondary"} 1)"));
  EXPECT_TRUE(HasLine(text, R"(repld_resource_info{resource="r0",node="alpha",protocol="C"} 1)"));
}

TEST(MetricsText, CountersAndGauges) {
  const std::string text = FormatMetrics(InSyncStatus());
  EXPECT_EQ(FamilyLines(text, "repld_device_written_bytes_total"),
            (std::vector<std::string>{
                "# HELP repld_device_written_bytes_total Bytes written to the local disk",
                "# TYPE repld_device_written_bytes_total counter",
                R"(repld_device_written_bytes_total{resource="r0"} 2097152)"}));
  for (const char* line : {
           R"(repld_device_read_bytes_total{resource="r0"} 4096)",
           R"(repld_device_peer_read_bytes_total{resource="r0"} 0)",
           R"(repld_device_alwrites_total{resource="r0"} 12)",
           R"(repld_device_bmwrites_total{resource="r0"} 3)",
           R"(repld_device_upperpending{resource="r0"} 1)",
           R"(repld_device_size_bytes{resource="r0"} 1073741824)",
           R"(repld_device_clients{resource="r0"} 1)",
           R"(repld_device_open{resource="r0"} 1)",
           R"(repld_peerdevice_outofsync_bytes{resource="r0",peer="beta"} 0)",
           R"(repld_peerdevice_sent_bytes_total{resource="r0",peer="beta"} 1048576)",
           R"(repld_peerdevice_received_bytes_total{resource="r0",peer="beta"} 0)",
           R"(repld_peerdevice_unacked{resource="r0",peer="beta"} 2)",
           R"(repld_peerdevice_resync_bytes_total{resource="r0",peer="beta"} 0)",
           R"(repld_peerdevice_resync_equal_bytes_total{resource="r0",peer="beta"} 0)",
           R"(repld_peerdevice_resync_paused{resource="r0",peer="beta"} 0)",
       }) {
    EXPECT_TRUE(HasLine(text, line)) << line << "\nin:\n" << text;
  }
  EXPECT_TRUE(HasLine(text, "# TYPE repld_peerdevice_sent_bytes_total counter"));
  EXPECT_TRUE(HasLine(text, "# TYPE repld_peerdevice_outofsync_bytes gauge"));
  // In sync: no resync, no verify yet, no round-trip time given.
  EXPECT_EQ(text.find("repld_peerdevice_resync_done_bytes"), std::string::npos);
  EXPECT_EQ(text.find("repld_peerdevice_verify_"), std::string::npos);
  EXPECT_EQ(text.find("repld_peer_rtt_seconds"), std::string::npos);
}

TEST(MetricsText, ResyncProgressAndVerify) {
  const std::string text = FormatMetrics(ResyncingStatus());
  for (
      const char* line : {
          R"(repld_peerdevice_replication_state{resource="r0",peer="beta",replication="SyncSource"} 1)",
          R"(repld_peerdevice_replication_state{resource="r0",peer="beta",replication="Established"} 0)",
          R"(repld_peerdevice_peer_disk_state{resource="r0",peer="beta",disk="Inconsistent"} 1)",
          R"(repld_peerdevice_outofsync_bytes{resource="r0",peer="beta"} 771751936)",
          R"(repld_peerdevice_resync_total_bytes{resource="r0",peer="beta"} 1073741824)",
          R"(repld_peerdevice_resync_done_bytes{resource="r0",peer="beta"} 301989888)",
          R"(repld_peerdevice_resync_average_bytes_per_second{resource="r0",peer="beta"} 22147072)",
          R"(repld_peerdevice_resync_paused{resource="r0",peer="beta"} 1)",
          R"(repld_peerdevice_verify_running{resource="r0",peer="beta"} 0)",
          R"(repld_peerdevice_verify_done_bytes{resource="r0",peer="beta"} 1073741824)",
          R"(repld_peerdevice_verify_differing_bytes{resource="r0",peer="beta"} 8192)",
      }) {
    EXPECT_TRUE(HasLine(text, line)) << line << "\nin:\n" << text;
  }
  EXPECT_EQ(FamilyLines(text, "repld_peerdevice_resync_done_bytes").size(), 3u);
  // Unknown in the first second: left out, not reported as 0.
  EXPECT_EQ(text.find("repld_peerdevice_resync_speed_bytes_per_second"), std::string::npos);
  EXPECT_EQ(text.find("repld_peerdevice_resync_eta_seconds"), std::string::npos);
}

TEST(MetricsText, AFailedDiskIsAGaugeAndAState) {
  EXPECT_TRUE(
      HasLine(FormatMetrics(InSyncStatus()), R"(repld_device_disk_failed{resource="r0"} 0)"));
  json s = InSyncStatus();
  s["role"] = "Secondary";
  s["disk"] = "Failed";
  s["disk_error"] = {{"what", "a write of the peer's at byte 0 (4096 bytes)"},
                     {"errno", 5},
                     {"error", "Input/output error"},
                     {"on_io_error", "detach"},
                     {"at", "2026-12-07T07:10:00.123Z"}};
  const std::string text = FormatMetrics(s);
  EXPECT_TRUE(HasLine(text, R"(repld_device_disk_failed{resource="r0"} 1)")) << text;
  EXPECT_TRUE(HasLine(text, R"(repld_device_state{resource="r0",disk="Failed"} 1)")) << text;
  EXPECT_TRUE(HasLine(text, R"(repld_device_state{resource="r0",disk="UpToDate"} 0)")) << text;
}

// Every family has one HELP and one TYPE, before its samples, and its samples are together;
// every sample names the resource, and those of the peer families the peer.
TEST(MetricsText, EachFamilyHasHelpAndTypeOnce) {
  const std::string text = FormatMetrics(ResyncingStatus(), 0.00125);
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  std::map<std::string, int> helps, types;
  std::set<std::string> done;  // families whose samples have ended
  std::string current;
  for (const std::string& l : Lines(text)) {
    ASSERT_FALSE(l.empty());
    if (l.rfind("# HELP ", 0) == 0) {
      const std::string name = l.substr(7, l.find(' ', 7) - 7);
      ++helps[name];
      if (!current.empty()) done.insert(current);
      current = name;
      continue;
    }
    if (l.rfind("# TYPE ", 0) == 0) {
      const std::string name = l.substr(7, l.find(' ', 7) - 7);
      ++types[name];
      EXPECT_EQ(name, current) << "TYPE right after its HELP";
      const std::string type = l.substr(8 + name.size());
      EXPECT_TRUE(type == "gauge" || type == "counter") << l;
      EXPECT_EQ(type == "counter", name.size() > 6 && name.ends_with("_total")) << l;
      continue;
    }
    const std::string name = l.substr(0, l.find('{'));
    EXPECT_EQ(name, current) << "sample outside its family: " << l;
    EXPECT_FALSE(done.count(name)) << l;
    EXPECT_EQ(name.rfind("repld_", 0), 0u) << l;
    EXPECT_NE(l.find("{resource=\"r0\""), std::string::npos) << l;
    const bool is_peer = name.rfind("repld_peer", 0) == 0 || name.rfind("repld_connection", 0) == 0;
    EXPECT_EQ(l.find(",peer=\"beta\"") != std::string::npos, is_peer) << l;
  }
  EXPECT_GE(helps.size(), 30u);
  for (const auto& [name, n] : helps) {
    EXPECT_EQ(n, 1) << name;
    EXPECT_EQ(types[name], 1) << name;
  }
  EXPECT_TRUE(HasLine(text, R"(repld_peer_rtt_seconds{resource="r0",peer="beta"} 0.00125)"));
  EXPECT_TRUE(HasLine(text, "# TYPE repld_peer_rtt_seconds gauge"));
}

TEST(MetricsText, OutputIsDeterministic) {
  EXPECT_EQ(FormatMetrics(ResyncingStatus()), FormatMetrics(ResyncingStatus()));
  // The order of the fields in the object does not matter either.
  const json s = ResyncingStatus();
  json reordered = json::object();
  std::vector<std::string> keys;
  for (const auto& [k, v] : s.items()) keys.push_back(k);
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) reordered[*it] = s[*it];
  EXPECT_EQ(FormatMetrics(reordered), FormatMetrics(s));
}

TEST(MetricsText, EscapesLabelValues) {
  EXPECT_EQ(EscapeMetricLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeMetricLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  json s = InSyncStatus();
  s["resource"] = "r\"0\\\n";
  s["peer"]["node"] = "be\"ta";
  const std::string text = FormatMetrics(s);
  EXPECT_TRUE(HasLine(text, R"(repld_device_size_bytes{resource="r\"0\\\n"} 1073741824)")) << text;
  EXPECT_TRUE(HasLine(text, R"(repld_peerdevice_unacked{resource="r\"0\\\n",peer="be\"ta"} 2)"))
      << text;
}

TEST(MetricsText, ToleratesNullsAndMissingFields) {
  EXPECT_EQ(FormatMetrics(json(nullptr)), "");
  EXPECT_EQ(FormatMetrics(json::array({1, 2})), "");
  // A node with no peer in its file: no connection and no peer-device families.
  json alone = InSyncStatus();
  alone["peer"] = nullptr;
  alone["connection"] = "StandAlone";
  alone["replication"] = "Off";
  std::string text = FormatMetrics(alone, 0.001);
  EXPECT_TRUE(HasLine(text, R"(repld_resource_role{resource="r0",role="Primary"} 1)"));
  EXPECT_TRUE(HasLine(text, R"(repld_device_written_bytes_total{resource="r0"} 2097152)"));
  EXPECT_EQ(text.find("peer="), std::string::npos) << text;
  // Nulls, wrong types and missing fields leave their samples out, nothing else.
  json holes = InSyncStatus();
  holes.erase("counters");
  holes["role"] = nullptr;
  holes["size_bytes"] = "big";
  holes["clients"] = nullptr;
  holes["resync"] = {{"total_bytes", nullptr}, {"done_bytes", 5}};
  holes["peer"].erase("role");
  text = FormatMetrics(holes);
  EXPECT_EQ(text.find("repld_resource_role"), std::string::npos);
  EXPECT_EQ(text.find("repld_device_size_bytes"), std::string::npos);
  EXPECT_EQ(text.find("repld_device_written_bytes_total"), std::string::npos);
  EXPECT_EQ(text.find("repld_device_open"), std::string::npos);
  EXPECT_EQ(text.find("repld_connection_peer_role"), std::string::npos);
  EXPECT_EQ(text.find("repld_peerdevice_resync_total_bytes"), std::string::npos);
  EXPECT_TRUE(HasLine(text, R"(repld_peerdevice_resync_done_bytes{resource="r0",peer="beta"} 5)"));
  EXPECT_TRUE(HasLine(text, R"(repld_device_state{resource="r0",disk="UpToDate"} 1)"));
  // Even the resource name: the samples are still labelled.
  json nameless = InSyncStatus();
  nameless.erase("resource");
  EXPECT_TRUE(HasLine(FormatMetrics(nameless), R"(repld_device_clients{resource=""} 1)"));
}

TEST(MetricsText, UnknownStateIsAddedAsCurrent) {
  json s = InSyncStatus();
  s["replication"] = "PausedSyncT";  // a state a newer daemon might report
  const std::string text = FormatMetrics(s);
  const auto lines = FamilyLines(text, "repld_peerdevice_replication_state");
  ASSERT_EQ(lines.size(), 2u + 6u + 1u);
  EXPECT_EQ(
      lines.back(),
      R"(repld_peerdevice_replication_state{resource="r0",peer="beta",replication="PausedSyncT"} 1)");
  for (size_t i = 2; i + 1 < lines.size(); ++i) EXPECT_EQ(lines[i].back(), '0') << lines[i];
}

TEST(MetricsText, NumbersAreExact) {
  json s = InSyncStatus();
  s["out_of_sync_bytes"] = uint64_t{18446744073709551615u};
  s["counters"]["written_bytes"] = uint64_t{(1ull << 53) + 1};
  const std::string text = FormatMetrics(s, 0.25);
  EXPECT_TRUE(HasLine(
      text, R"(repld_peerdevice_outofsync_bytes{resource="r0",peer="beta"} 18446744073709551615)"));
  EXPECT_TRUE(HasLine(text, R"(repld_device_written_bytes_total{resource="r0"} 9007199254740993)"));
  EXPECT_TRUE(HasLine(text, R"(repld_peer_rtt_seconds{resource="r0",peer="beta"} 0.25)"));
}

// What the daemon really sends (StatusToJson) has every field the metrics read.
TEST(MetricsText, ReadsTheDaemonsStatusObject) {
  StatusSnapshot snap;
  snap.resource = "r0";
  snap.node = "alpha";
  snap.peer_node = "beta";
  snap.replica = ReplicaStatus{};
  snap.replica.role = Role::kSecondary;
  snap.replica.disk = DiskState::kInconsistent;
  snap.replica.conn = ConnState::kConnected;
  snap.replica.repl = ReplState::kSyncTarget;
  snap.replica.peer = PeerState{};
  snap.replica.peer->role = Role::kPrimary;
  snap.replica.peer->disk = DiskState::kUpToDate;
  snap.replica.protocol = Protocol::kB;
  snap.replica.counters.received_bytes = 5 * kMiB;
  snap.replica.counters.al_writes = 4;
  snap.replica.unacked = 3;
  snap.replica.out_of_sync_bytes = 8 * kMiB;
  snap.replica.resync_total_bytes = 12 * kMiB;
  snap.replica.resync_done_bytes = 4 * kMiB;
  snap.resync_rate.speed_bytes_per_second = 1 * kMiB;
  snap.resync_rate.eta_seconds = 8;
  snap.replica.verify = VerifyStatus{true, kGiB, kMiB, 0};
  snap.size_bytes = kGiB;
  const std::string text = FormatMetrics(StatusToJson(snap));
  for (
      const char* line : {
          R"(repld_resource_info{resource="r0",node="alpha",protocol="B"} 1)",
          R"(repld_resource_role{resource="r0",role="Secondary"} 1)",
          R"(repld_device_state{resource="r0",disk="Inconsistent"} 1)",
          R"(repld_device_alwrites_total{resource="r0"} 4)",
          R"(repld_device_open{resource="r0"} 0)",
          R"(repld_connection_peer_role{resource="r0",peer="beta",role="Primary"} 1)",
          R"(repld_peerdevice_replication_state{resource="r0",peer="beta",replication="SyncTarget"} 1)",
          R"(repld_peerdevice_received_bytes_total{resource="r0",peer="beta"} 5242880)",
          R"(repld_peerdevice_unacked{resource="r0",peer="beta"} 3)",
          R"(repld_peerdevice_outofsync_bytes{resource="r0",peer="beta"} 8388608)",
          R"(repld_peerdevice_resync_total_bytes{resource="r0",peer="beta"} 12582912)",
          R"(repld_peerdevice_resync_done_bytes{resource="r0",peer="beta"} 4194304)",
          R"(repld_peerdevice_resync_speed_bytes_per_second{resource="r0",peer="beta"} 1048576)",
          R"(repld_peerdevice_resync_eta_seconds{resource="r0",peer="beta"} 8)",
          R"(repld_peerdevice_verify_running{resource="r0",peer="beta"} 1)",
          R"(repld_peerdevice_verify_total_bytes{resource="r0",peer="beta"} 1073741824)",
      }) {
    EXPECT_TRUE(HasLine(text, line)) << line << "\nin:\n" << text;
  }
}

}  // namespace
}  // namespace repld
