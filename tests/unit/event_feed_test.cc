// replctl events' objects and changes, from status objects.
#include "daemon/event_feed.h"

#include <gtest/gtest.h>

#include <regex>

namespace repld {
namespace {

using nlohmann::json;

json Status(const char* role, const char* conn, const char* repl, const char* peer_disk) {
  return {{"resource", "r0"},
          {"role", role},
          {"disk", "UpToDate"},
          {"connection", conn},
          {"replication", repl},
          {"resync_paused", false},
          {"peer", {{"node", "beta"}, {"role", "Secondary"}, {"disk", peer_disk}}}};
}

TEST(EventFeed, ExistsNamesEveryObjectWithItsStates) {
  const auto events =
      ExistsEvents(EventObjects(Status("Primary", "Connected", "Established", "UpToDate")), "T");
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(FormatEventLine(events[0]), "T exists resource name:r0 role:Primary");
  EXPECT_EQ(FormatEventLine(events[1]), "T exists device name:r0 disk:UpToDate");
  EXPECT_EQ(FormatEventLine(events[2]),
            "T exists connection name:r0 peer:beta connection:Connected role:Secondary");
  EXPECT_EQ(FormatEventLine(events[3]),
            "T exists peer-device name:r0 peer:beta peer-disk:UpToDate replication:Established "
            "resync-suspended:no");
}

TEST(EventFeed, ChangesCarryOnlyWhatChangedAndWhoItIs) {
  const json before = EventObjects(Status("Secondary", "Connected", "Established", "UpToDate"));
  const json after = EventObjects(Status("Primary", "Connected", "SyncSource", "Inconsistent"));
  const auto events = ChangeEvents(before, after, "T");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(FormatEventLine(events[0]), "T change resource name:r0 role:Primary");
  EXPECT_EQ(FormatEventLine(events[1]),
            "T change peer-device name:r0 peer:beta peer-disk:Inconsistent replication:SyncSource");
  EXPECT_TRUE(ChangeEvents(after, after, "T").empty());
}

TEST(EventFeed, APeerLessResourceHasNoConnection) {
  json status = Status("Primary", "StandAlone", "Off", "UpToDate");
  status["peer"] = nullptr;
  EXPECT_EQ(ExistsEvents(EventObjects(status), "T").size(), 2u);
}

TEST(EventFeed, TimeStampsAreUtcMilliseconds) {
  EXPECT_TRUE(
      std::regex_match(EventTimeNow(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
}

}  // namespace
}  // namespace repld
