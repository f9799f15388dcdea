#include "cli/status_format.h"

#include <gtest/gtest.h>

namespace repld::cli {
namespace {

using nlohmann::json;

json Status(const char* overrides) {
  json s = json::parse(R"({
    "resource":"r0","node":"alpha","role":"Primary","disk":"UpToDate",
    "connection":"Connected","replication":"Established","protocol":"C",
    "peer":{"node":"beta","role":"Secondary","disk":"UpToDate"},
    "out_of_sync_bytes":0,"resync":null,
    "counters":{"sent_bytes":1288490189,"received_bytes":0,"written_bytes":1288490189,
                "read_bytes":3565158,"al_writes":12,"bitmap_writes":3,"pending":0,"unacked":0},
    "generation":{"current":"0123456789ABCDEF","bitmap":"0000000000000000",
                  "history":["0000000000000000","0000000000000000"]},
    "clients":1,"size_bytes":1073741824})");
  s.update(json::parse(overrides));
  return s;
}

constexpr const char* kCounters =
    "  counters: sent 1.2 GiB, received 0 B, written 1.2 GiB, read 3.4 MiB, al-writes 12, "
    "bitmap-writes 3, pending 0, unacked 0\n";

TEST(StatusFormat, Connected) {
  EXPECT_EQ(FormatStatus(Status("{}")),
            std::string("r0 role:Primary\n"
                        "  disk:UpToDate\n"
                        "  beta role:Secondary\n"
                        "    replication:Established peer-disk:UpToDate\n") +
                kCounters);
}

TEST(StatusFormat, Disconnected) {
  EXPECT_EQ(FormatStatus(Status(R"({"connection":"Connecting","replication":"Off",
                                    "peer":{"node":"beta","role":"Unknown","disk":"DUnknown"}})")),
            std::string("r0 role:Primary\n"
                        "  disk:UpToDate\n"
                        "  beta connection:Connecting\n") +
                kCounters);
  // No peer in the file, and not trying: no peer line at all.
  EXPECT_EQ(FormatStatus(Status(R"({"connection":"StandAlone","replication":"Off","peer":null})")),
            std::string("r0 role:Primary\n  disk:UpToDate\n") + kCounters);
}

TEST(StatusFormat, AFailedDiskSaysWhatFailedAndWhen) {
  EXPECT_EQ(FormatStatus(Status(R"j({"role":"Secondary","disk":"Diskless","connection":"StandAlone",
      "replication":"Off","peer":null,
      "disk_error":{"what":"a write of the peer's at byte 0 (65536 bytes)","errno":5,
                    "error":"Input/output error","on_io_error":"detach",
                    "at":"2026-12-07T07:10:00.123Z"}})j")),
            std::string("r0 role:Secondary\n"
                        "  disk:Diskless\n"
                        "    failed: a write of the peer's at byte 0 (65536 bytes): Input/output "
                        "error (errno 5) at 2026-12-07T07:10:00.123Z; on_io_error = detach\n") +
                kCounters);
  // Recorded by an earlier run: no errno, no time.
  EXPECT_EQ(FormatStatus(Status(R"({"role":"Secondary","disk":"Inconsistent",
      "connection":"StandAlone","replication":"Off","peer":null,
      "disk_error":{"what":"an I/O","errno":null,"error":null,"on_io_error":"detach",
                    "at":null}})")),
            std::string("r0 role:Secondary\n"
                        "  disk:Inconsistent\n"
                        "    failed: an I/O; on_io_error = detach\n") +
                kCounters);
}

TEST(StatusFormat, OutOfSync) {
  EXPECT_EQ(FormatStatus(Status(R"({"connection":"StandAlone","replication":"Off",
                              "out_of_sync_bytes":13107200,
                              "peer":{"node":"beta","role":"Unknown","disk":"DUnknown"}})")),
            std::string("r0 role:Primary\n"
                        "  disk:UpToDate\n"
                        "  beta connection:StandAlone\n"
                        "    out-of-sync: 12.5 MiB\n") +
                kCounters);
}

TEST(StatusFormat, Resyncing) {
  // 288 of 1024 MiB done: 28.1%.
  EXPECT_EQ(FormatStatus(Status(R"({"role":"Secondary","disk":"Inconsistent",
                                    "replication":"SyncTarget","out_of_sync_bytes":771751936,
                                    "peer":{"node":"beta","role":"Primary","disk":"UpToDate"},
                                    "resync":{"total_bytes":1073741824,"done_bytes":301989888}})")),
            std::string("r0 role:Secondary\n"
                        "  disk:Inconsistent\n"
                        "  beta role:Primary\n"
                        "    replication:SyncTarget peer-disk:UpToDate\n"
                        "    out-of-sync: 736.0 MiB\n"
                        "    [=====>..............] sync'ed: 28.1% (736/1024)M  done: 288.0 MiB "
                        "of 1.0 GiB\n") +
                kCounters);
}

TEST(StatusFormat, ResyncingWithSpeedShowsFinishAndSpeed) {
  const std::string out = FormatStatus(Status(R"({"role":"Primary","disk":"UpToDate",
      "connection":"Connected","replication":"SyncSource","out_of_sync_bytes":0,
      "peer":{"node":"beta","role":"Secondary","disk":"Inconsistent"},
      "resync":{"total_bytes":1073741824,"done_bytes":301989888,
                "speed_bytes_per_second":23818240,"average_bytes_per_second":22147072,
                "eta_seconds":150}})"));
  EXPECT_NE(out.find("\n    finish: 0:02:30 speed: 23,260 (21,628) K/sec\n"), std::string::npos)
      << out;
}

TEST(StatusFormat, ResyncBlocksThePeerFailedAndTheNextPass) {
  const std::string out = FormatStatus(Status(R"({"role":"Primary","disk":"UpToDate",
      "connection":"Connected","replication":"SyncSource","out_of_sync_bytes":44040192,
      "peer":{"node":"beta","role":"Secondary","disk":"Inconsistent"},
      "resync":{"total_bytes":67108864,"done_bytes":23068672,"failed_bytes":44040192,
                "next_pass_in_seconds":4}})"));
  EXPECT_NE(out.find("\n    the peer failed to write 42.0 MiB of the last pass (its log says "
                     "why); next pass in 4 s\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(FormatStatus(Status(R"({"replication":"SyncSource",
                "resync":{"total_bytes":1,"done_bytes":0,"failed_bytes":0}})"))
                .find("failed"),
            std::string::npos);
}

TEST(StatusFormat, AStoppedResyncSaysWhy) {
  const std::string out = FormatStatus(Status(R"({"out_of_sync_bytes":1048576,
      "peer":{"node":"beta","role":"Secondary","disk":"Inconsistent"},
      "resync_stopped_reason":"reading this node's disk failed"})"));
  EXPECT_NE(out.find("\n    resync stopped: reading this node's disk failed\n"), std::string::npos)
      << out;
  EXPECT_EQ(FormatStatus(Status(R"({"resync_stopped_reason":null})")).find("stopped"),
            std::string::npos);
}

TEST(StatusFormat, VerifyRunningAndFinished) {
  std::string out = FormatStatus(Status(R"({"connection":"Connected","replication":"VerifyS",
      "peer":{"node":"beta","role":"Secondary","disk":"UpToDate"},
      "verify":{"running":true,"total_bytes":1073741824,"done_bytes":268435456,
                "differing_bytes":0}})"));
  EXPECT_NE(out.find("    verify: 256.0 MiB of 1.0 GiB compared, 0 B differ\n"), std::string::npos)
      << out;
  out = FormatStatus(Status(R"({"connection":"Connected","replication":"Established",
      "peer":{"node":"beta","role":"Secondary","disk":"UpToDate"},
      "verify":{"running":false,"total_bytes":1073741824,"done_bytes":1073741824,
                "differing_bytes":12288}})"));
  EXPECT_NE(out.find("    last verify: 1.0 GiB of 1.0 GiB compared, 12.0 KiB differ (marked out "
                     "of sync: 'replctl disconnect' then 'replctl connect' resyncs them)\n"),
            std::string::npos)
      << out;
}

TEST(StatusFormat, ResyncSpeedUnknowns) {
  EXPECT_EQ(FormatResyncSpeed(std::nullopt, 0, std::nullopt), "finish: ? speed: 0 (?) K/sec");
  EXPECT_EQ(FormatResyncSpeed(3600 * 27 + 61, 1024 * 1024 * 1024, 1024),
            "finish: 27:01:01 speed: 1,048,576 (1) K/sec");
}

TEST(StatusFormat, ProgressBarEnds) {
  EXPECT_EQ(FormatResyncProgress(0, 100 * (1 << 20)).substr(0, 22), "[>...................]");
  EXPECT_EQ(FormatResyncProgress(100 * (1 << 20), 100 * (1 << 20)).substr(0, 36),
            "[====================] sync'ed: 100.");
  // Almost done is not done.
  EXPECT_NE(FormatResyncProgress(9999, 10000).find("99.9%"), std::string::npos);
  EXPECT_NE(FormatResyncProgress(0, 0).find("100.0%"), std::string::npos);
}

// create-md and verify --wait: the bar, the percentage and the sizes.
TEST(StatusFormat, PlainProgress) {
  EXPECT_EQ(FormatProgress(uint64_t{9} << 20, uint64_t{32} << 20),
            "[=====>..............] 28.1% (9.0 MiB of 32.0 MiB)");
  EXPECT_EQ(FormatProgress(7, 5), "[====================] 100.0% (5 B of 5 B)");
}

TEST(StatusFormat, SurvivesMissingAndMistypedFields) {
  EXPECT_NO_THROW(FormatStatus(json::object()));
  EXPECT_NO_THROW(FormatStatus(json::array()));
  EXPECT_NO_THROW(FormatStatus(Status(R"({"peer":7,"counters":"x","resync":{"done_bytes":-1}})")));
  EXPECT_EQ(FormatStatus(json::object()).substr(0, 25), "? role:?\n  disk:?\n  peer ");
}

}  // namespace
}  // namespace repld::cli
