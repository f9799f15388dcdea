// replctl import-drbd: the seed's drbd.conf (tests/data/seed-drbd.conf, the users' file as the
// howto gives it) and DRBD 8.3 / 8.4 variants, checked through repld's own config loader.
#include "cli/drbd_import.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/drbd_conf.h"
#include "daemon/config.h"

namespace repld::drbd {
namespace {

constexpr const char* kSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

std::string SeedPath() {
  const std::string here = __FILE__;  // .../tests/unit/drbd_import_test.cc
  return here.substr(0, here.rfind("/unit/")) + "/data/seed-drbd.conf";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Result<Imported> Import(std::string_view text, const std::string& resource = "") {
  auto conf = ParseConf(text, "t.conf");
  if (!conf.ok()) return conf.status();
  return ImportConf(conf.value(),
                    {resource, []() -> Result<std::string> { return std::string(kSecret); }});
}

// The generated file as repld's loader sees it.
ResourceConfig Load(const ImportedResource& res) {
  auto config = ParseConfig(res.toml, res.name + ".toml");
  EXPECT_TRUE(config.ok()) << config.status().message() << "\n" << res.toml;
  return config.ok() ? config.value() : ResourceConfig{};
}

bool HasWarning(const Imported& imported, uint32_t line, const std::string& part) {
  for (const Warning& w : imported.warnings) {
    if (w.where.line == line && w.text.find(part) != std::string::npos) return true;
  }
  return false;
}

const NodeConfig* FindNode(const ResourceConfig& c, const std::string& name) {
  for (const NodeConfig& n : c.nodes) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

std::string ErrorOf(std::string_view text) {
  auto imported = Import(text);
  return imported.ok() ? "(no error)" : imported.status().message();
}

// Two nodes with the settings a resource needs; `extra` goes inside the resource.
std::string Pair(const std::string& extra) {
  return "resource r0 {\n"
         "  on alpha { device /dev/drbd3; disk /dev/sdb1; address 10.0.0.1:7788; "
         "meta-disk internal; }\n"
         "  on beta { device /dev/drbd3; disk /dev/sdc1; address 10.0.0.2:7788; "
         "meta-disk internal; }\n" +
         extra + "}\n";
}

TEST(DrbdImport, SeedFileGivesTwoResourcesThatLoad) {
  auto conf = ParseConf(ReadFile(SeedPath()), SeedPath());
  ASSERT_TRUE(conf.ok()) << conf.status().message();
  auto imported =
      ImportConf(conf.value(), {"", []() -> Result<std::string> { return std::string(kSecret); }});
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  ASSERT_EQ(imported->resources.size(), 2u);
  struct Expected {
    const char* name;
    const char* disk;
    uint32_t port;
    uint32_t minor;
  };
  const Expected expected[] = {{"www", "/dev/sda5", 7788, 0}, {"mysql", "/dev/sda6", 7789, 1}};
  for (size_t i = 0; i < 2; ++i) {
    const Expected& e = expected[i];
    const ImportedResource& res = imported->resources[i];
    SCOPED_TRACE(e.name);
    EXPECT_EQ(res.name, e.name);
    EXPECT_EQ(res.toml.rfind("# /etc/repld/" + std::string(e.name) + ".toml", 0), 0u) << res.toml;
    const ResourceConfig c = Load(res);
    EXPECT_EQ(c.name, e.name);
    EXPECT_EQ(c.protocol, Protocol::kC);
    EXPECT_EQ(c.frontend, Frontend::kUblk);
    EXPECT_EQ(c.net.secret, kSecret);
    EXPECT_EQ(c.net.max_buffers, 2048u);
    EXPECT_EQ(c.net.ko_count, 4u);
    EXPECT_EQ(c.meta.al_extents, 257u);
    EXPECT_EQ(c.meta.meta_disk, "internal");
    EXPECT_EQ(c.resync.rate_bytes, 10u << 20);  // DRBD's 10M: 10 MiB per second
    EXPECT_EQ(c.resync.checksums, false);
    EXPECT_EQ(c.startup.wfc_timeout, std::chrono::milliseconds(0));
    EXPECT_EQ(c.startup.degr_wfc_timeout, std::chrono::seconds(120));
    ASSERT_EQ(c.nodes.size(), 2u);
    const NodeConfig* lb1 = FindNode(c, "lb1");
    const NodeConfig* lb2 = FindNode(c, "lb2");
    ASSERT_TRUE(lb1 && lb2);
    EXPECT_EQ(lb1->disk, e.disk);
    EXPECT_EQ(lb2->disk, e.disk);
    EXPECT_EQ(lb1->address, "172.16.1.248:" + std::to_string(e.port));
    EXPECT_EQ(lb2->address, "172.16.1.247:" + std::to_string(e.port));
    EXPECT_EQ(lb1->meta_disk, std::nullopt);
    EXPECT_EQ(lb1->ublk_device_id, e.minor);
    EXPECT_EQ(lb2->ublk_device_id, e.minor);
    const std::string minor = std::to_string(e.minor);
    EXPECT_NE(res.toml.find("device /dev/drbd" + minor + " becomes /dev/ublkb" + minor),
              std::string::npos);
  }
}

TEST(DrbdImport, SeedFileLoadsWithLoadConfig) {
  auto imported = Import(ReadFile(SeedPath()), "www");
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  ASSERT_EQ(imported->resources.size(), 1u);
  char dir[] = "/tmp/repld-import-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/www.toml";
  std::ofstream(path) << imported->resources[0].toml;
  auto config = LoadConfig(path);
  unlink(path.c_str());
  rmdir(dir);
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->name, "www");
}

TEST(DrbdImport, SeedFileWarnings) {
  auto imported = Import(ReadFile(SeedPath()));
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  // Lines of tests/data/seed-drbd.conf: resource www at 5, mysql at 35; on-io-error at 20, 50.
  EXPECT_TRUE(HasWarning(imported.value(), 5, "has no shared-secret"));
  EXPECT_TRUE(HasWarning(imported.value(), 35, "has no shared-secret"));
  EXPECT_EQ(imported->warnings.size(), 2u);  // global's options are notes, not warnings
  const std::string& www = imported->resources[0].toml;
  EXPECT_NE(www.find("# t.conf:2: global minor-count 2: dropped"), std::string::npos) << www;
  EXPECT_NE(www.find("# t.conf:3: global dialog-refresh 5: dropped"), std::string::npos);
  // on-io-error detach is [disk] on_io_error, with its line.
  EXPECT_NE(www.find("on_io_error = \"detach\""), std::string::npos) << www;
  EXPECT_NE(www.find("# on-io-error detach, line 20"), std::string::npos) << www;
  EXPECT_NE(www.find("# warning: t.conf:5: resource www has no shared-secret"), std::string::npos);
  // The key sits in [disk], next to al_extents; the secret's warning in [net].
  EXPECT_LT(www.find("[disk]"), www.find("on_io_error = "));
  EXPECT_LT(www.find("[net]"), www.find("has no shared-secret"));
  EXPECT_LT(www.find("has no shared-secret"), www.find("[disk]"));
}

TEST(DrbdImport, SyntaxErrorsNameLineAndColumn) {
  EXPECT_EQ(ErrorOf("global {\n  minor-count 2\n}\n"),
            "t.conf:2:16: expected ';' or '{' after 'minor-count 2', found '}'");
  EXPECT_EQ(ErrorOf("resource r0 {\n  on alpha {\n    disk /dev/sdb1;\n"),
            "t.conf:4:1: expected '}' to close 'on alpha' (opened at line 2), found the end of "
            "the file");
  EXPECT_EQ(ErrorOf("global { }\n}\n"), "t.conf:2:1: unexpected '}': no section is open here");
  EXPECT_EQ(ErrorOf("net { shared-secret \"abc;\n}"),
            "t.conf:1:21: unterminated string: expected a closing '\"' on the same line");
  EXPECT_EQ(ErrorOf("{ resource r0 }"),
            "t.conf:1:1: expected a keyword (such as resource, on, net, disk or an option name), "
            "found '{'");
  // A missing ';' between two options parses as one option with too many values.
  EXPECT_EQ(ErrorOf(Pair("  net {\n    max-buffers 2048\n    ko-count 4;\n  }\n")),
            "t.conf:5:21: expected ';' after 'max-buffers 2048', found 'ko-count'");
  EXPECT_EQ(ErrorOf(Pair("  net { ko-count four; }\n")),
            "t.conf:4:18: ko-count: 'four' is not a number; expected decimal digits");
  EXPECT_EQ(ErrorOf(Pair("  syncer { rate 10X; }\n")),
            "t.conf:4:17: rate: '10X' is not a size; expected digits and an optional unit K, M or "
            "G (as in 10M)");
  EXPECT_EQ(ErrorOf(Pair("  syncer { rate 999999999999G; }\n")),
            "t.conf:4:17: rate: '999999999999G' is not a size; expected digits and an optional "
            "unit K, M or G (as in 10M)");
  EXPECT_EQ(ErrorOf(Pair("  protocol D;\n")), "t.conf:4:12: protocol D: expected A, B or C");
  EXPECT_EQ(
      ErrorOf("resource r0 {\n  on a { disk /dev/x; address 10.0.0.1:7788\n"
              "    meta-disk internal; }\n  on b { disk /dev/y; address 10.0.0.2:7788; }\n}\n"),
      "t.conf:2:44: expected ';' after 'address 10.0.0.1:7788', found 'meta-disk'");
}

TEST(DrbdImport, GarbageIsRefused) {
  EXPECT_EQ(ErrorOf(std::string("\x7f"
                                "ELF\x02\x01\x01",
                                7)),
            "t.conf:1:1: unexpected byte 0x7f; expected a keyword, a value, '{', '}' or ';' (is "
            "this a drbd.conf?)");
  EXPECT_EQ(ErrorOf("Hello, this is not a config file.\n"),
            "t.conf:1:1: expected a keyword (such as resource, on, net, disk or an option name), "
            "found 'Hello,'");
  EXPECT_EQ(ErrorOf("hello world\n"),
            "t.conf:1:12: expected ';' or '{' after 'hello world', found the end of the file");
  EXPECT_EQ(ErrorOf("# only a comment\nfoo bar;\n"),
            "t.conf: no resource section; is this a drbd.conf?");
  EXPECT_EQ(ErrorOf(""), "t.conf: no resource section; is this a drbd.conf?");
  EXPECT_NE(ErrorOf(std::string(kConfBytesMax + 1, ' ')).find("is this a drbd.conf?"),
            std::string::npos);
  EXPECT_EQ(ErrorOf("resource r0 { }\n"),
            "t.conf:1:1: resource r0 has 0 'on HOST' sections; repld takes one (standalone) or "
            "two (a pair)");
}

TEST(DrbdImport, IncludeLinesAreNotFollowed) {
  EXPECT_EQ(ErrorOf("include \"drbd.d/global_common.conf\";\ninclude \"drbd.d/*.res\";\n"),
            "t.conf: no resource section; the resources may be in the included files, which "
            "import-drbd does not read: cat them into one file (common first) and import that");
  auto imported = Import("include \"drbd.d/*.res\";\n" + Pair(""));
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  EXPECT_TRUE(HasWarning(imported.value(), 1, "include drbd.d/*.res: not followed"));
  EXPECT_NE(imported->resources[0].toml.find("# warning: t.conf:1: include drbd.d/*.res"),
            std::string::npos);
  Load(imported->resources[0]);
}

TEST(DrbdImport, ExternalMetaDisk) {
  auto imported = Import(
      "resource r0 {\n"
      "  on alpha { device /dev/drbd0; disk /dev/sdb1; address 10.0.0.1:7788;\n"
      "             meta-disk /dev/sdd1 [2]; }\n"
      "  on beta { device /dev/drbd0; disk /dev/sdc1; address 10.0.0.2:7788;\n"
      "            flexible-meta-disk /dev/sde1; }\n"
      "}\n");
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  EXPECT_TRUE(HasWarning(imported.value(), 3, "without an index"));
  EXPECT_EQ(imported->warnings.size(), 2u);  // and the generated secret
  const ResourceConfig c = Load(imported->resources[0]);
  ASSERT_EQ(c.nodes.size(), 2u);
  EXPECT_EQ(EffectiveMetaDisk(c, *FindNode(c, "alpha")), "/dev/sdd1");
  EXPECT_EQ(EffectiveMetaDisk(c, *FindNode(c, "beta")), "/dev/sde1");
  auto packed =
      Import(Pair("").replace(Pair("").find("meta-disk internal"), 18, "meta-disk /dev/sdd1[0]"));
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  EXPECT_EQ(EffectiveMetaDisk(Load(packed->resources[0]), Load(packed->resources[0]).nodes[0]),
            "/dev/sdd1");
}

// DRBD 8.4 moved the syncer's options to disk and net, and allows settings at resource level.
TEST(DrbdImport, Drbd84Options) {
  auto imported = Import(
      "common {\n"
      "  net { protocol B; ping-int 3; ping-timeout 7; connect-int 20; }\n"
      "  disk { resync-rate 40M; al-extents 7; c-plan-ahead 25; c-min-rate 4M;\n"
      "         c-max-rate 102400; c-fill-target 100; }\n"
      "}\n"
      "resource r1 {\n"
      "  device minor 5; disk /dev/vg/r1; meta-disk internal;\n"
      "  net { shared-secret \"s3cr\\\"et\"; cram-hmac-alg sha1; csums-alg md5;\n"
      "        verify-alg sha1; after-sb-0pri discard-least-changes;\n"
      "        after-sb-1pri discard-secondary; after-sb-2pri violently-as0p; }\n"
      "  on alpha { address 10.0.0.1:7000; }\n"
      "  on beta { address ipv4 10.0.0.2:7000; }\n"
      "}\n");
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  const ResourceConfig c = Load(imported->resources[0]);
  EXPECT_EQ(c.protocol, Protocol::kB);
  EXPECT_EQ(c.net.secret, "s3cr\"et");
  EXPECT_EQ(c.net.ping_interval, std::chrono::seconds(3));
  EXPECT_EQ(c.net.ping_timeout, std::chrono::milliseconds(700));  // tenths of a second
  EXPECT_EQ(c.net.reconnect_max, std::chrono::seconds(20));
  EXPECT_EQ(c.net.split_brain.zero_primaries, AfterSb0Pri::kDiscardLeastChanges);
  EXPECT_EQ(c.net.split_brain.one_primary, AfterSb1Pri::kDiscardSecondary);
  EXPECT_EQ(c.net.split_brain.two_primaries, AfterSb2Pri::kDisconnect);
  EXPECT_TRUE(HasWarning(imported.value(), 10, "after-sb-2pri violently-as0p: repld has no"));
  EXPECT_EQ(c.meta.al_extents, 7u);
  EXPECT_EQ(c.nbd.request_bytes_max, 8u << 20);  // two 8 MiB writes fit 7 extents
  EXPECT_TRUE(HasWarning(imported.value(), 3, "al-extents 7: below the 18 extents"));
  EXPECT_EQ(c.resync.rate_bytes, 0u);  // the controller instead
  EXPECT_TRUE(HasWarning(imported.value(), 3, "resync-rate 40M: dropped"));
  EXPECT_EQ(c.resync.controller.plan_ahead_ticks, 3u);  // 2.5 s, rounded up
  EXPECT_EQ(c.resync.controller.min_rate_bytes, 4u << 20);
  EXPECT_EQ(c.resync.controller.max_rate_bytes, 100u << 20);     // 102400 KiB/s
  EXPECT_EQ(c.resync.controller.fill_target_bytes, 100u * 512);  // sectors
  EXPECT_TRUE(c.resync.checksums);
  const std::string& toml = imported->resources[0].toml;
  EXPECT_NE(toml.find("cram-hmac-alg sha1: dropped"), std::string::npos) << toml;
  EXPECT_NE(toml.find("verify-alg sha1: dropped"), std::string::npos);
  EXPECT_EQ(toml.find("warning: t.conf:8"), std::string::npos);  // notes only
  ASSERT_EQ(c.nodes.size(), 2u);
  for (const NodeConfig& n : c.nodes) {
    EXPECT_EQ(n.disk, "/dev/vg/r1");
    EXPECT_EQ(n.ublk_device_id, 5u);
  }
  EXPECT_EQ(FindNode(c, "beta")->address, "10.0.0.2:7000");
}

TEST(DrbdImport, NothingIsDroppedSilently) {
  auto imported =
      Import(Pair("  net { sndbuf-size 512k; max-buffers 20; no-such-option 1; timeout 60; }\n"
                  "  disk { on-io-error call-local-io-error; fencing resource-only; }\n"
                  "  handlers { pri-lost \"/usr/lib/drbd/notify.sh\"; split-brain \"x\"; }\n"
                  "  startup { become-primary-on alpha; }\n"
                  "  options { cpu-mask 1; }\n"
                  "  floppy { }\n"));
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  const Imported& i = imported.value();
  EXPECT_TRUE(HasWarning(i, 4, "max-buffers 20: 20 is out of repld's range 32..131072"));
  EXPECT_TRUE(HasWarning(i, 4, "no-such-option 1 (net): dropped; no repld equivalent"));
  EXPECT_TRUE(HasWarning(i, 4, "timeout 60 (net): dropped"));
  EXPECT_TRUE(HasWarning(i, 5, "repld runs no local-io-error handler"));
  EXPECT_NE(i.resources[0].toml.find("on_io_error = \"detach\""), std::string::npos);
  EXPECT_TRUE(HasWarning(i, 5, "fencing resource-only (disk): dropped"));
  EXPECT_TRUE(HasWarning(i, 6, "handlers { pri-lost, split-brain }: dropped"));
  EXPECT_TRUE(HasWarning(i, 7, "become-primary-on alpha (startup): dropped"));
  EXPECT_TRUE(HasWarning(i, 9, "floppy: dropped"));
  const std::string& toml = i.resources[0].toml;
  EXPECT_NE(toml.find("# t.conf:4: sndbuf-size 512k (net): dropped"), std::string::npos) << toml;
  EXPECT_NE(toml.find("# t.conf:8: cpu-mask 1 (options): dropped"), std::string::npos);
  EXPECT_EQ(Load(i.resources[0]).net.max_buffers, 32u);
}

TEST(DrbdImport, OnIoErrorBecomesTheDiskKey) {
  for (const char* policy : {"detach", "pass_on"}) {
    auto imported = Import(Pair(std::string("  disk { on-io-error ") + policy + "; }\n"));
    ASSERT_TRUE(imported.ok()) << imported.status().message();
    const ImportedResource& res = imported->resources[0];
    EXPECT_NE(res.toml.find("# on-io-error " + std::string(policy) + ", line 4"), std::string::npos)
        << res.toml;
    EXPECT_FALSE(HasWarning(imported.value(), 4, "on-io-error"));
    EXPECT_EQ(Load(res).on_io_error,
              std::string(policy) == "detach" ? OnIoError::kDetach : OnIoError::kPassOn);
  }
  EXPECT_EQ(ErrorOf(Pair("  disk { on-io-error panic; }\n")),
            "t.conf:4:22: on-io-error panic: not a DRBD policy; allowed: detach, pass_on, "
            "call-local-io-error");
}

TEST(DrbdImport, OneResourceOrTheOther) {
  auto imported = Import(ReadFile(SeedPath()), "mysql");
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  ASSERT_EQ(imported->resources.size(), 1u);
  EXPECT_EQ(imported->resources[0].name, "mysql");
  EXPECT_FALSE(HasWarning(imported.value(), 5, "shared-secret"));  // www's
  auto missing = Import(ReadFile(SeedPath()), "pgsql");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "t.conf: no resource pgsql; resources here: www, mysql");
}

TEST(DrbdImport, StandaloneAndDeviceWithoutMinor) {
  auto imported = Import(
      "resource solo {\n"
      "  on alpha { device /dev/mydisk; disk /var/lib/solo.img; }\n"
      "}\n");
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  EXPECT_TRUE(HasWarning(imported.value(), 2, "the frontend stays NBD"));
  const ResourceConfig c = Load(imported->resources[0]);
  EXPECT_EQ(c.frontend, Frontend::kNbd);
  EXPECT_TRUE(c.net.secret.empty());  // alone: no peer to authenticate
  ASSERT_EQ(c.nodes.size(), 1u);
  EXPECT_EQ(c.nodes[0].disk, "/var/lib/solo.img");
}

TEST(DrbdImport, ResourcesRepldCannotRepresent) {
  EXPECT_EQ(ErrorOf("resource r0 { on a { disk /dev/x; address 10.0.0.1:1; }\n"
                    " on b { disk /dev/y; address 10.0.0.2:1; } on c { disk /dev/z; } }"),
            "t.conf:1:1: resource r0 has 3 'on HOST' sections; repld takes one (standalone) or "
            "two (a pair)");
  EXPECT_EQ(ErrorOf("resource r0 { on a { disk /dev/x; address 10.0.0.1:1; }\n"
                    " on b { disk /dev/y; } }"),
            "t.conf:2:2: on b: no address; a pair needs one per node (ADDRESS:PORT of the peer "
            "link)");
  EXPECT_EQ(ErrorOf("resource r0 { on a { volume 0 { disk /dev/x; } volume 1 { disk /dev/y; } "
                    "} }"),
            "t.conf:1:48: a second volume: repld replicates one device per resource; make each "
            "volume a resource of its own in drbd.conf first");
  EXPECT_EQ(ErrorOf("resource \"my res\" { on a { disk /dev/x; } }"),
            "t.conf:1:10: resource name 'my res' is not one repld takes; allowed: 1 to 64 of A-Z "
            "a-z 0-9 _ - .");
}

}  // namespace
}  // namespace repld::drbd
