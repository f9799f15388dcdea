// replctl adjust's comparison: which keys changed, what they show, when each takes effect.
#include "daemon/config_diff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace repld {
namespace {

constexpr const char* kBase = R"([resource]
name = "www"

[net]
secret = "FooFunFactory"

[resync]
rate = "10M"

[node.lb1]
disk = "/dev/sda5"
address = "10.0.0.1:7788"

[node.lb2]
disk = "/dev/sdb5"
address = "10.0.0.2:7788"
)";

ResourceConfig Parse(const std::string& text) {
  auto c = ParseConfig(text, "/etc/repld/www.toml");
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.value();
}

std::string Replace(std::string text, const std::string& old, const std::string& now) {
  const size_t at = text.find(old);
  EXPECT_NE(at, std::string::npos) << old;
  return text.replace(at, old.size(), now);
}

std::vector<ConfigChange> Diff(const std::string& before, const std::string& after,
                               const std::string& node = "lb1") {
  const ResourceConfig a = Parse(before);
  const ResourceConfig b = Parse(after);
  return DiffConfig(a, SelectNode(a, node).value(), b, SelectNode(b, node).value());
}

TEST(ConfigDiff, TheSameFileHasNoChange) {
  EXPECT_TRUE(Diff(kBase, kBase).empty());
  // Another spelling of the same values is no change either.
  EXPECT_TRUE(Diff(kBase, Replace(kBase, "\"10M\"", "\"10MiB\"")).empty());
}

TEST(ConfigDiff, EachChangeSaysWhenItTakesEffect) {
  std::string next = Replace(kBase, "rate = \"10M\"", "rate = \"40M\"\nchecksums = true");
  next = Replace(next, "[resync]", "[nbd]\ninflight_max = 128\n\n[resync]");
  next = Replace(next, "[net]", "[net]\nafter_sb_0pri = \"discard-zero-changes\"\nko_count = 3");
  next = Replace(next, "[resync]", "[startup]\nwfc_timeout = \"2m\"\n\n[resync]");
  next = Replace(next, "[resync]", "[disk]\non_io_error = \"pass_on\"\n\n[resync]");
  const auto changes = Diff(kBase, next);
  auto find = [&](const std::string& key) {
    auto it = std::find_if(changes.begin(), changes.end(),
                           [&](const ConfigChange& c) { return c.key == key; });
    EXPECT_NE(it, changes.end()) << key;
    return it == changes.end() ? ConfigChange{} : *it;
  };
  ASSERT_EQ(changes.size(), 7u);
  EXPECT_EQ(find("disk.on_io_error").old_value, "detach");
  EXPECT_EQ(find("disk.on_io_error").new_value, "pass_on");
  EXPECT_EQ(find("disk.on_io_error").when, AdjustWhen::kNow);
  EXPECT_EQ(find("resync.rate").old_value, "10.0 MiB/s");
  EXPECT_EQ(find("resync.rate").new_value, "40.0 MiB/s");
  EXPECT_EQ(find("resync.rate").when, AdjustWhen::kNow);
  EXPECT_EQ(find("resync.checksums").when, AdjustWhen::kNextResync);
  EXPECT_EQ(find("nbd.inflight_max").when, AdjustWhen::kRestart);
  EXPECT_EQ(find("net.after_sb_0pri").new_value, "discard-zero-changes");
  EXPECT_EQ(find("net.after_sb_0pri").when, AdjustWhen::kNextConnection);
  EXPECT_EQ(find("net.ko_count").when, AdjustWhen::kNow);
  EXPECT_EQ(find("startup.wfc_timeout").new_value, "120s");
  EXPECT_EQ(find("startup.wfc_timeout").when, AdjustWhen::kNextStart);
}

TEST(ConfigDiff, TheSecretIsComparedButNeverShown) {
  const auto changes = Diff(kBase, Replace(kBase, "FooFunFactory", "BarBazFactory"));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].key, "net.secret");
  EXPECT_EQ(changes[0].old_value, "(hidden)");
  EXPECT_EQ(changes[0].new_value, "(hidden)");
  EXPECT_EQ(changes[0].when, AdjustWhen::kNextConnection);
}

TEST(ConfigDiff, OnlyTheKeysInForceOnThisNodeCount) {
  // lb2's disk is not lb1's business; lb2's address is (lb1 connects to it).
  const std::string disk = Replace(kBase, "/dev/sdb5", "/dev/sdc5");
  EXPECT_TRUE(Diff(kBase, disk, "lb1").empty());
  const auto on_lb2 = Diff(kBase, disk, "lb2");
  ASSERT_EQ(on_lb2.size(), 1u);
  EXPECT_EQ(on_lb2[0].key, "node.lb2.disk");
  EXPECT_EQ(on_lb2[0].when, AdjustWhen::kRestart);
  const auto address = Diff(kBase, Replace(kBase, "10.0.0.2:7788", "10.0.0.2:7789"), "lb1");
  ASSERT_EQ(address.size(), 1u);
  EXPECT_EQ(address[0].key, "node.lb2.address");
  // A node's own metrics_listen overrides [metrics] listen: one key, in force on that node.
  const std::string metrics = Replace(kBase, "[node.lb1]",
                                      "[node.lb1]\nmetrics_listen = "
                                      "\"127.0.0.1:9942\"");
  const auto m = Diff(kBase, metrics, "lb1");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].key, "metrics.listen");
  EXPECT_EQ(m[0].old_value, "(none)");
  EXPECT_EQ(m[0].new_value, "\"127.0.0.1:9942\"");
  EXPECT_EQ(m[0].when, AdjustWhen::kNow);
  EXPECT_TRUE(Diff(kBase, metrics, "lb2").empty());
}

TEST(ConfigDiff, WithLiveKeysTakesTheLiveOnesOnly) {
  std::string next = Replace(kBase, "rate = \"10M\"", "rate = \"40M\"");
  next = Replace(next, "[resync]",
                 "[nbd]\ninflight_max = 128\n\n[disk]\non_io_error = \"pass_on\"\n\n[resync]");
  next = Replace(next, "[node.lb1]", "[node.lb1]\nmetrics_listen = \"127.0.0.1:9942\"");
  const ResourceConfig a = Parse(kBase);
  const ResourceConfig b = Parse(next);
  NodeConfig node;
  const ResourceConfig live =
      WithLiveKeys(a, SelectNode(a, "lb1").value(), b, SelectNode(b, "lb1").value(), node);
  EXPECT_EQ(live.resync.rate_bytes, 40u << 20);
  EXPECT_EQ(live.nbd.inflight_max, a.nbd.inflight_max);
  EXPECT_EQ(live.on_io_error, OnIoError::kPassOn);
  EXPECT_EQ(EffectiveMetricsListen(live, node), "127.0.0.1:9942");
  // What is left is exactly what needs a restart.
  const auto left = DiffConfig(live, node, b, SelectNode(b, "lb1").value());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].key, "nbd.inflight_max");
  EXPECT_EQ(left[0].when, AdjustWhen::kRestart);
}

TEST(ConfigDiff, EveryKeyIsListedOnce) {
  const ResourceConfig a = Parse(kBase);
  const auto flat = FlattenConfig(a, SelectNode(a, "lb1").value());
  std::vector<std::string> keys;
  for (const auto& s : flat) keys.push_back(s.key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end());
  EXPECT_GE(keys.size(), 40u);
}

}  // namespace
}  // namespace repld
