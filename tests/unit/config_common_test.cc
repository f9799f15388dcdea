// The common file (/etc/repld/common.toml) and the [startup] / [metrics] tables.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/config.h"

namespace repld {
namespace {

constexpr const char* kResource = R"([resource]
name = "www"

[net]
secret = "FooFunFactory"
ko_count = 4

[node.lb1]
disk = "/dev/sda5"
address = "10.0.0.1:7788"

[node.lb2]
disk = "/dev/sdb5"
address = "10.0.0.2:7788"
)";

TEST(ConfigCommon, TheCommonFileSuppliesDefaultsTheResourceOverrides) {
  constexpr const char* kCommon = R"([resource]
protocol = "B"

[net]
ko_count = 9
max_buffers = 4096

[resync]
rate = "10M"

[startup]
wfc_timeout = "0s"
degr_wfc_timeout = "2m"

[disk]
on_io_error = "pass_on"
)";
  auto c = ParseConfig(kResource, "/etc/repld/www.toml", kCommon, "/etc/repld/common.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->protocol, Protocol::kB) << "from the common file";
  EXPECT_EQ(c->net.ko_count, 4u) << "the resource's own value wins";
  EXPECT_EQ(c->net.max_buffers, 4096u);
  EXPECT_EQ(c->resync.rate_bytes, 10u << 20);
  EXPECT_EQ(c->startup.wfc_timeout, std::chrono::milliseconds(0));
  EXPECT_EQ(c->startup.degr_wfc_timeout, std::chrono::minutes(2));
  EXPECT_EQ(c->on_io_error, OnIoError::kPassOn);
  EXPECT_EQ(c->common_path, "/etc/repld/common.toml");
}

TEST(ConfigCommon, DefaultsWithoutACommonFile) {
  auto c = ParseConfig(kResource, "www.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->startup.wfc_timeout, std::chrono::milliseconds(0)) << "DRBD's: wait forever";
  EXPECT_EQ(c->startup.degr_wfc_timeout, std::chrono::seconds(60));
  EXPECT_TRUE(c->metrics.listen.empty()) << "metrics are off by default";
  EXPECT_TRUE(c->common_path.empty());
}

struct CommonError {
  const char* common;
  const char* message;
};

class ConfigCommonErrors : public testing::TestWithParam<CommonError> {};

TEST_P(ConfigCommonErrors, NameTheCommonFileItsLineAndTheWayOut) {
  auto c =
      ParseConfig(kResource, "/etc/repld/www.toml", GetParam().common, "/etc/repld/common.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    All, ConfigCommonErrors,
    testing::Values(
        CommonError{"[node.lb1]\ndisk = \"/dev/x\"\n",
                    "/etc/repld/common.toml:1:2: key 'node': not allowed in the common file (it "
                    "is per resource: set it in the resource's own file); allowed tables here: "
                    "resource, net, nbd, ublk, disk, resync, startup, control"},
        CommonError{"[resource]\nname = \"x\"\n",
                    "/etc/repld/common.toml:2:1: key 'resource.name': not allowed in the common "
                    "file; allowed in [resource] here: protocol, frontend"},
        CommonError{"[net]\nmax_buffers = 5\n",
                    "/etc/repld/common.toml:2:15: key 'net.max_buffers': 5 is out of range; "
                    "allowed: 32..131072"},
        CommonError{"[startup]\nwfc_timeout = \"soon\"\n",
                    "/etc/repld/common.toml:2:15: key 'startup.wfc_timeout': 'soon' is not a "
                    "duration; allowed: 0ms to 31622400000ms, as \"500ms\", \"10s\", \"2m\""},
        CommonError{"[net\n",
                    "/etc/repld/common.toml:1:5: Error while parsing table header: "
                    "expected ']', saw '\\n'"}));

TEST(ConfigCommon, ControlGroup) {
  auto c = ParseConfig(kResource, "www.toml", "[control]\ngroup = \"repld\"\n", "common.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->control.group, "repld");
  c = ParseConfig(std::string(kResource) + "\n[control]\ngroup = \"wheel staff\"\n", "www.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "www.toml:17:9: key 'control.group': 'wheel staff' is not a group name; allowed: a "
            "group of this machine, as \"repld\"");
}

TEST(ConfigCommon, MetricsListen) {
  std::string text = std::string(kResource) + "\n[metrics]\nlisten = \"127.0.0.1:9942\"\n";
  auto c = ParseConfig(text, "www.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->metrics.listen, "127.0.0.1:9942");
  text = std::string(kResource) + "\n[metrics]\nlisten = \"everywhere\"\n";
  c = ParseConfig(text, "www.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "www.toml:17:10: key 'metrics.listen': 'everywhere' is not HOST:PORT; allowed: "
            "\"127.0.0.1:9942\", \"[::1]:9942\"");
}

// LoadConfig finds common.toml next to the resource's file; `all` is every other *.toml there.
TEST(ConfigCommon, LoadConfigReadsTheCommonFileNextToTheResource) {
  char dir_template[] = "/tmp/repld-config-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::filesystem::path dir(dir_template);
  std::ofstream(dir / "www.toml") << kResource;
  std::ofstream(dir / "mysql.toml") << "[resource]\nname = \"mysql\"\n[node.a]\ndisk = \"/x\"\n";
  std::ofstream(dir / "notes.txt") << "not a resource";
  auto c = LoadConfig((dir / "www.toml").string());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->protocol, Protocol::kC);
  EXPECT_TRUE(c->common_path.empty());
  std::ofstream(dir / "common.toml") << "[resource]\nprotocol = \"A\"\n";
  c = LoadConfig((dir / "www.toml").string());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->protocol, Protocol::kA);
  EXPECT_EQ(c->common_path, (dir / "common.toml").string());
  auto common = LoadConfig((dir / "common.toml").string());
  ASSERT_FALSE(common.ok());
  EXPECT_NE(common.status().message().find("this is the common file"), std::string::npos);
  auto files = ResourceFiles(dir.string());
  ASSERT_TRUE(files.ok()) << files.status().message();
  EXPECT_EQ(files.value(),
            (std::vector<std::string>{(dir / "mysql.toml").string(), (dir / "www.toml").string()}));
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(ResourceFiles(dir.string()).ok());
}

}  // namespace
}  // namespace repld
