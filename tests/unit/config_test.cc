#include "daemon/config.h"

#include <gtest/gtest.h>

namespace repld {
namespace {

constexpr const char* kMinimal = R"(
[resource]
name = "www"

[net]
secret = "FooFunFactory"

[node.lb1]
disk = "/dev/sda5"
address = "10.0.0.1:7788"

[node.lb2]
disk = "/dev/sdb5"
address = "10.0.0.2:7788"
nbd_socket = "/tmp/lb2.sock"
)";

TEST(Config, MinimalFileGetsDefaults) {
  auto c = ParseConfig(kMinimal, "www.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->name, "www");
  EXPECT_EQ(c->nbd.socket, "/run/repld/www.sock");
  EXPECT_EQ(c->nbd.export_name, "www");
  EXPECT_EQ(c->nbd.inflight_max, 64u);
  EXPECT_EQ(c->nbd.request_bytes_max, 32u << 20);
  EXPECT_EQ(c->direct_io, DirectIoMode::kAuto);
  EXPECT_EQ(c->protocol, Protocol::kC);
  EXPECT_EQ(c->net.ping_interval, std::chrono::seconds(10));
  EXPECT_EQ(c->net.ping_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(c->net.max_buffers, 2048u);
  EXPECT_EQ(c->meta.al_extents, 1237u);
  EXPECT_EQ(c->on_io_error, OnIoError::kDetach) << "as DRBD 8.4 and the seed's drbd.conf";
  ASSERT_EQ(c->nodes.size(), 2u);
  EXPECT_EQ(EffectiveMetaDisk(c.value(), c->nodes[0]), "internal");
  EXPECT_EQ(ControlSocketPath(c.value(), c->nodes[0]), "/run/repld/www.ctl");
  EXPECT_EQ(PeerOf(c.value(), c->nodes[0])->name, "lb2");
  EXPECT_EQ(PeerOf(c.value(), c->nodes[1])->name, "lb1");
}

TEST(Config, ReplicationKeys) {
  auto c = ParseConfig(R"(
[resource]
name = "mysql"
protocol = "B"
[net]
secret = "s"
ping_interval = "2s"
ping_timeout = "250ms"
ko_count = 4
reconnect_max = 30
max_buffers = 64
after_sb_0pri = "discard-zero-changes"
after_sb_1pri = "consensus"
[resync]
checksums = true
c_plan_ahead = "3s"
c_fill_target = "8M"
c_min_rate = "1M"
c_max_rate = "100M"
[disk]
meta_disk = "/dev/sdc1"
al_extents = 257
on_io_error = "pass_on"
[node.a]
disk = "/x"
address = "127.0.0.1:7788"
meta_disk = "/md-a"
control_socket = "/tmp/a.ctl"
[node.b]
disk = "/y"
address = "127.0.0.1:7789"
)",
                       "mysql.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->protocol, Protocol::kB);
  EXPECT_EQ(c->net.ping_interval, std::chrono::seconds(2));
  EXPECT_EQ(c->net.ping_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(c->net.ko_count, 4u);
  EXPECT_EQ(c->net.reconnect_max, std::chrono::seconds(30));
  EXPECT_EQ(c->net.max_buffers, 64u);
  EXPECT_EQ(c->net.split_brain.zero_primaries, AfterSb0Pri::kDiscardZeroChanges);
  EXPECT_EQ(c->net.split_brain.one_primary, AfterSb1Pri::kConsensus);
  EXPECT_EQ(c->net.split_brain.two_primaries, AfterSb2Pri::kDisconnect);
  EXPECT_EQ(c->meta.al_extents, 257u);
  EXPECT_EQ(c->on_io_error, OnIoError::kPassOn);
  EXPECT_TRUE(c->resync.checksums);
  EXPECT_EQ(c->resync.controller.plan_ahead_ticks, 3u);
  EXPECT_EQ(c->resync.controller.fill_target_bytes, 8u << 20);
  EXPECT_EQ(c->resync.controller.min_rate_bytes, 1u << 20);
  EXPECT_EQ(c->resync.controller.max_rate_bytes, 100u << 20);
  EXPECT_EQ(EffectiveMetaDisk(c.value(), c->nodes[0]), "/md-a");
  EXPECT_EQ(EffectiveMetaDisk(c.value(), c->nodes[1]), "/dev/sdc1");
  EXPECT_EQ(ControlSocketPath(c.value(), c->nodes[0]), "/tmp/a.ctl");
  EXPECT_EQ(*c->nodes[1].address, "127.0.0.1:7789");
}

TEST(Config, NodeSelectionAndOverrides) {
  auto c = ParseConfig(kMinimal, "www.toml");
  ASSERT_TRUE(c.ok());
  auto lb2 = SelectNode(c.value(), "lb2");
  ASSERT_TRUE(lb2.ok());
  EXPECT_EQ(lb2->disk, "/dev/sdb5");
  EXPECT_EQ(EffectiveNbd(c.value(), lb2.value()).socket, "/tmp/lb2.sock");
  EXPECT_EQ(EffectiveNbd(c.value(), SelectNode(c.value(), "lb1").value()).socket,
            "/run/repld/www.sock");
  auto missing = SelectNode(c.value(), "lb3");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no [node.lb3]"), std::string::npos);
  EXPECT_NE(missing.status().message().find("lb1, lb2"), std::string::npos);
}

TEST(Config, HostPort) {
  auto v4 = ParseHostPort("127.0.0.1:10809");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 10809);
  auto v6 = ParseHostPort("[::1]:7788");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_FALSE(ParseHostPort("localhost:80"));  // addresses, not names: no DNS at start
  EXPECT_FALSE(ParseHostPort("127.0.0.1"));
  EXPECT_FALSE(ParseHostPort("127.0.0.1:0"));
  EXPECT_FALSE(ParseHostPort("127.0.0.1:65536"));
  EXPECT_FALSE(ParseHostPort(":80"));
}

TEST(Config, SizesTakeUnits) {
  auto c = ParseConfig(R"(
[resource]
name = "r"
[nbd]
request_bytes_max = "1MiB"
buffer_pool_bytes = "64M"
[node.a]
disk = "/x"
)",
                       "r.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->nbd.request_bytes_max, 1u << 20);
  EXPECT_EQ(c->nbd.buffer_pool_bytes, 64u << 20);
}

struct BadCase {
  const char* text;
  const char* expect;  // substring of the one error line
};

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, NameFileLineKeyAndWhatIsAllowed) {
  auto c = ParseConfig(GetParam().text, "/etc/repld/r.toml");
  ASSERT_FALSE(c.ok());
  const std::string& m = c.status().message();
  EXPECT_EQ(m.rfind("/etc/repld/r.toml", 0), 0u) << m;
  EXPECT_NE(m.find(GetParam().expect), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << "one line: " << m;
}

INSTANTIATE_TEST_SUITE_P(
    Bad, ConfigErrors,
    ::testing::Values(
        BadCase{"[resource]\nname = \"r\"\n[nbd]\ninflight_max = 5000\n[node.a]\ndisk = \"/x\"\n",
                "r.toml:4:16: key 'nbd.inflight_max': 5000 is out of range; allowed: 1..1024"},
        BadCase{"[resource]\nname = \"r\"\n[nbd]\nsockett = \"/x\"\n[node.a]\ndisk = \"/x\"\n",
                "r.toml:4:1: key 'nbd.sockett': unknown key; allowed here: socket, listen"},
        BadCase{"[resource]\nname = \"r\"\n[nbd]\nrequest_bytes_max = \"10Q\"\n[node.a]\ndisk = "
                "\"/x\"\n",
                "key 'nbd.request_bytes_max': '10Q' is not a size"},
        BadCase{"[resource]\nname = \"r\"\n[nbd]\nrequest_bytes_max = \"3M\"\n[node.a]\ndisk = "
                "\"/x\"\n",
                "must be a power of two"},
        BadCase{"[resource]\nname = \"r\"\n[nbd]\nbuffer_pool_bytes = \"1M\"\n[node.a]\ndisk = "
                "\"/x\"\n",
                "cannot hold one request"},
        BadCase{
            "[resource]\nname = \"r\"\n[nbd]\ninflight_max = \"many\"\n[node.a]\ndisk = \"/x\"\n",
            "key 'nbd.inflight_max': 'many' is not an integer; allowed: 1..1024"},
        BadCase{
            "[resource]\nname = \"r\"\n[disk]\ndirect_io = \"maybe\"\n[node.a]\ndisk = \"/x\"\n",
            "allowed: \"auto\", \"on\", \"off\""},
        BadCase{"[resource]\nname = \"r\"\n[disk]\non_io_error = \"panic\"\n[node.a]\ndisk = "
                "\"/x\"\n",
                "r.toml:4:15: key 'disk.on_io_error': 'panic' is not allowed; allowed: "
                "\"detach\", \"pass_on\""},
        BadCase{"[resource]\nname = \"r\"\n[node.a]\nnbd_socket = \"/s\"\n",
                "key 'node.a.disk': is required"},
        BadCase{"[resource]\nname = \"r\"\n", "at least one [node.NAME]"},
        BadCase{"[node.a]\ndisk = \"/x\"\n", "key 'resource.name': is required"},
        BadCase{"[resource]\nname = \"bad name\"\n[node.a]\ndisk = \"/x\"\n",
                "is not a valid name"},
        BadCase{"[resource\nname = \"r\"\n", "r.toml:1:"},
        BadCase{"[resource]\nname = \"r\"\n[nbd]\nlisten = \"nowhere\"\n[node.a]\ndisk = \"/x\"\n",
                "r.toml:4:10: key 'nbd.listen': 'nowhere' is not HOST:PORT"},
        BadCase{
            "[resource]\nname = \"r\"\n[node.a]\ndisk = \"/x\"\nnbd_listen = \"1.2.3.4:99999\"\n",
            "key 'node.a.nbd_listen': '1.2.3.4:99999' is not HOST:PORT"},
        BadCase{
            "[resource]\nname = \"r\"\n[nbd]\nconnections_max = true\n[node.a]\ndisk = \"/x\"\n",
            "key 'nbd.connections_max': true is not an integer"},
        BadCase{"[resource]\nname = \"r\"\nprotocl = \"C\"\n[node.a]\ndisk = \"/x\"\n",
                "key 'resource.protocl': unknown key"},
        BadCase{"[resource]\nname = \"r\"\nprotocol = \"D\"\n[node.a]\ndisk = \"/x\"\n",
                "r.toml:3:12: key 'resource.protocol': 'D' is not a protocol; allowed: \"A\", "
                "\"B\", \"C\""},
        BadCase{"[resource]\nname = \"r\"\n[net]\nping_timeout = \"5 parsecs\"\n[node.a]\ndisk = "
                "\"/x\"\n",
                "key 'net.ping_timeout': '5 parsecs' is not a duration; allowed: 10ms to 60000ms"},
        BadCase{"[resource]\nname = \"r\"\n[net]\nafter_sb_1pri = \"discard-younger-primary\"\n"
                "[node.a]\ndisk = \"/x\"\n",
                "r.toml:4:17: key 'net.after_sb_1pri': 'discard-younger-primary' is not a "
                "split-brain policy; allowed: \"disconnect\", \"consensus\", "
                "\"discard-secondary\""},
        BadCase{"[resource]\nname = \"r\"\n[resync]\nrate = \"10M\"\nc_plan_ahead = \"2s\"\n"
                "[node.a]\ndisk = \"/x\"\n",
                "r.toml:4:8: key 'resync.rate': a fixed rate and the dynamic controller"},
        BadCase{"[resource]\nname = \"r\"\n[resync]\nc_min_rate = \"20M\"\nc_max_rate = "
                "\"10M\"\n[node.a]\ndisk = \"/x\"\n",
                "key 'resync.c_min_rate': is above resync.c_max_rate"},
        BadCase{
            "[resource]\nname = \"r\"\n[resync]\nchecksums = \"yes\"\n[node.a]\ndisk = \"/x\"\n",
            "r.toml:4:13: key 'resync.checksums': 'yes' is not a boolean; allowed: true, false"},
        BadCase{"[resource]\nname = \"r\"\n[disk]\nal_extents = 3\n[node.a]\ndisk = \"/x\"\n",
                "key 'disk.al_extents': 3 is out of range; allowed: 7..65534"},
        BadCase{"[resource]\nname = \"r\"\n[net]\nsecret = \"s\"\n[node.a]\ndisk = \"/x\"\n"
                "address = \"127.0.0.1:1\"\n[node.b]\ndisk = \"/y\"\n",
                "key 'node.b.address': is required when the file names two nodes"},
        BadCase{"[resource]\nname = \"r\"\n[node.a]\ndisk = \"/x\"\naddress = \"127.0.0.1:1\"\n"
                "[node.b]\ndisk = \"/y\"\naddress = \"127.0.0.1:2\"\n",
                "key 'net.secret': is required when the file names two nodes"},
        BadCase{"[resource]\nname = \"r\"\n[node.a]\ndisk = \"/x\"\naddress = \"peer:7788\"\n",
                "r.toml:5:11: key 'node.a.address': 'peer:7788' is not HOST:PORT"}));

TEST(Config, UblkFrontend) {
  auto c = ParseConfig(R"(
[resource]
name = "r"
frontend = "ublk"
[ublk]
device_id = 3
queues = 2
queue_depth = 64
io_bytes_max = "1MiB"
[net]
secret = "s"
[node.a]
disk = "/x"
address = "127.0.0.1:7788"
[node.b]
disk = "/y"
address = "127.0.0.1:7789"
ublk_device_id = 4
)",
                       "r.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c.value().frontend, Frontend::kUblk);
  EXPECT_EQ(c.value().ublk.queues, 2);
  EXPECT_EQ(c.value().ublk.queue_depth, 64);
  EXPECT_EQ(c.value().ublk.io_bytes_max, 1u << 20);
  EXPECT_EQ(EffectiveUblkDeviceId(c.value(), c.value().nodes[0]), 3u);
  EXPECT_EQ(EffectiveUblkDeviceId(c.value(), c.value().nodes[1]), 4u);

  auto missing = ParseConfig(
      "[resource]\nname = \"r\"\nfrontend = \"ublk\"\n[node.a]\ndisk = \"/x\"\n", "r.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("r.toml:3:12: key 'ublk.device_id': is required"), std::string::npos)
      << missing.status().message();
  auto bad = ParseConfig(
      "[resource]\nname = \"r\"\nfrontend = \"kernel\"\n[node.a]\ndisk = \"/x\"\n", "r.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("r.toml:3:12: key 'resource.frontend': 'kernel' is not a "
                                        "frontend; allowed: \"nbd\", \"ublk\""),
            std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace repld
