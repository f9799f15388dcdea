#include "daemon/control_proto.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <cerrno>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "daemon/control_server.h"

namespace repld {
namespace {

using nlohmann::json;

// --- The protocol helpers ---

TEST(ControlProto, AcceptsTheThreeCommands) {
  for (const char* line :
       {R"({"version":1,"command":"status"})", R"({"version":1,"command":"primary","force":true})",
        R"({"version":1,"command":"primary"})", R"({"version":1,"command":"secondary"})"}) {
    auto r = ParseControlRequest(line);
    ASSERT_TRUE(r.ok()) << line << ": " << r.status().message();
    EXPECT_TRUE(r.value()["command"].is_string());
  }
}

TEST(ControlProto, RefusesGarbage) {
  for (const char* line : {"", "hello", "{\"version\":1,", "[1,2]", "42", "\"status\"", "null"}) {
    auto r = ParseControlRequest(line);
    ASSERT_FALSE(r.ok()) << line;
    EXPECT_FALSE(r.status().message().empty());
  }
  EXPECT_NE(ParseControlRequest("hello").status().message().find("not JSON"), std::string::npos);
  EXPECT_NE(ParseControlRequest("[1]").status().message().find("JSON object"), std::string::npos);
}

TEST(ControlProto, RefusesMissingOrTooNewVersion) {
  auto newer = ParseControlRequest(R"({"version":2,"command":"status"})");
  ASSERT_FALSE(newer.ok());
  EXPECT_EQ(newer.status().message().rfind(
                "unsupported control protocol version 2; this daemon speaks 1", 0),
            0u)
      << newer.status().message();
  auto missing = ParseControlRequest(R"({"command":"status"})");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("this daemon speaks 1"), std::string::npos);
  for (const char* line :
       {R"({"version":0,"command":"status"})", R"({"version":-1,"command":"status"})",
        R"({"version":"1","command":"status"})", R"({"version":1.5,"command":"status"})"}) {
    EXPECT_FALSE(ParseControlRequest(line).ok()) << line;
  }
}

TEST(ControlProto, RefusesUnknownCommandsAndBadArguments) {
  auto unknown = ParseControlRequest(R"({"version":1,"command":"explode"})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown command 'explode'"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("status, primary, secondary"), std::string::npos);
  EXPECT_FALSE(ParseControlRequest(R"({"version":1})").ok());
  EXPECT_FALSE(ParseControlRequest(R"({"version":1,"command":7})").ok());
  EXPECT_FALSE(ParseControlRequest(R"({"version":1,"command":"primary","force":"yes"})").ok());
}

TEST(ControlProto, RefusesOverlongLines) {
  const std::string line =
      R"({"version":1,"command":"status","pad":")" + std::string(kControlLineBytesMax, 'x') + "\"}";
  EXPECT_FALSE(ParseControlRequest(line).ok());
}

TEST(ControlProto, ResponseLinesCarryVersionAndOk) {
  const std::string ok = ControlResponseLine(json{{"status", {{"role", "Primary"}}}});
  ASSERT_EQ(ok.back(), '\n');
  EXPECT_EQ(ok.find('\n'), ok.size() - 1);
  const json parsed = json::parse(ok);
  EXPECT_EQ(parsed["version"], 1);
  EXPECT_EQ(parsed["ok"], true);
  EXPECT_EQ(parsed["status"]["role"], "Primary");

  const json refused = json::parse(ControlResponseLine(json{{"ok", false}, {"error", "no"}}));
  EXPECT_EQ(refused["ok"], false);
  EXPECT_EQ(refused["error"], "no");
  EXPECT_EQ(refused["version"], 1);

  const json error = json::parse(ControlErrorLine("disk on fire"));
  EXPECT_EQ(error, (json{{"version", 1}, {"ok", false}, {"error", "disk on fire"}}));
  EXPECT_EQ(json::parse(ControlResponseLine(json::array()))["ok"], false);
  // Invalid UTF-8 is replaced, not thrown.
  EXPECT_NO_THROW(json::parse(ControlErrorLine(std::string("bad \xff byte"))));
}

TEST(ControlProto, RequestLinesRoundTrip) {
  const std::string line = ControlRequestLine("primary", json{{"force", true}});
  ASSERT_EQ(line.back(), '\n');
  auto r = ParseControlRequest(std::string_view(line).substr(0, line.size() - 1));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value()["force"], true);
  EXPECT_EQ(r.value()["version"], 1);
}

TEST(ControlProto, ParsesResponses) {
  auto ok = ParseControlResponse(R"({"version":1,"ok":true,"status":{}})");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok.value()["status"].is_object());
  auto refused = ParseControlResponse(R"({"version":1,"ok":false,"error":"peer is Primary"})");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(), "peer is Primary");
  EXPECT_FALSE(ParseControlResponse(R"({"version":2,"ok":true})").ok());
  EXPECT_FALSE(ParseControlResponse("garbage").ok());
  EXPECT_FALSE(ParseControlResponse(R"({"version":1})").ok());
}

StatusSnapshot Snapshot() {
  StatusSnapshot s;
  s.resource = "r0";
  s.node = "alpha";
  s.peer_node = "beta";
  s.replica = ReplicaStatus{};
  s.replica.role = Role::kPrimary;
  s.replica.disk = DiskState::kUpToDate;
  s.replica.conn = ConnState::kConnected;
  s.replica.repl = ReplState::kSyncSource;
  s.replica.peer = PeerState{};
  s.replica.peer->disk = DiskState::kInconsistent;
  s.replica.protocol = Protocol::kC;
  s.replica.counters.sent_bytes = 7;
  s.replica.pending = 2;
  s.replica.out_of_sync_bytes = 3 * kMiB;
  s.replica.resync_total_bytes = 4 * kMiB;
  s.replica.resync_done_bytes = 1 * kMiB;
  s.resync_rate.speed_bytes_per_second = 2 * kMiB;
  s.resync_rate.eta_seconds = 2;
  s.replica.ids.current = 0x0123456789ABCDEFULL;
  s.replica.ids.history[0] = 0xF;
  s.clients = 1;
  s.size_bytes = 1 * kGiB;
  return s;
}

TEST(ControlProto, StatusCarriesThePeersRoundTripWhileConnected) {
  StatusSnapshot s = Snapshot();
  s.peer_rtt_seconds = 0.00025;
  s.pid = 4242;
  json j = StatusToJson(s);
  EXPECT_DOUBLE_EQ(j["peer"]["rtt_seconds"].get<double>(), 0.00025);
  EXPECT_EQ(j["pid"], 4242);
  s.replica.conn = ConnState::kConnecting;
  j = StatusToJson(s);
  EXPECT_TRUE(j["peer"]["rtt_seconds"].is_null()) << "not connected: no round trip";
}

TEST(ControlProto, StatusObjectFollowsTheSchema) {
  const json j = StatusToJson(Snapshot());
  for (const char* key :
       {"resource", "node", "role", "disk", "connection", "replication", "protocol", "peer",
        "out_of_sync_bytes", "resync", "counters", "generation", "clients", "size_bytes"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["role"], "Primary");
  EXPECT_EQ(j["connection"], "Connected");
  EXPECT_EQ(j["replication"], "SyncSource");
  EXPECT_EQ(j["protocol"], "C");
  EXPECT_EQ(j["peer"], (json{{"node", "beta"},
                             {"role", "Secondary"},
                             {"disk", "Inconsistent"},
                             {"rtt_seconds", nullptr}}));
  EXPECT_EQ(j["resync"], (json{{"total_bytes", 4 * kMiB},
                               {"done_bytes", 1 * kMiB},
                               {"speed_bytes_per_second", 2 * kMiB},
                               {"average_bytes_per_second", nullptr},
                               {"eta_seconds", 2},
                               {"failed_bytes", 0},
                               {"next_pass_in_seconds", nullptr}}));
  EXPECT_EQ(j["counters"]["sent_bytes"], 7);
  EXPECT_EQ(j["counters"]["pending"], 2);
  EXPECT_EQ(j["counters"].size(), 11u);
  EXPECT_EQ(j["generation"]["current"], "0123456789ABCDEF");
  EXPECT_EQ(j["generation"]["history"], (json{"000000000000000F", "0000000000000000"}));
  EXPECT_EQ(j["size_bytes"], kGiB);
  EXPECT_TRUE(j["resync_stopped_reason"].is_null());
  StatusSnapshot stopped = Snapshot();
  stopped.replica.resync_stopped_reason = "reading this node's disk failed";
  EXPECT_EQ(StatusToJson(stopped)["resync_stopped_reason"], "reading this node's disk failed");

  StatusSnapshot down = Snapshot();
  down.replica.conn = ConnState::kConnecting;
  down.replica.repl = ReplState::kOff;
  const json d = StatusToJson(down);
  EXPECT_TRUE(d["resync"].is_null());
  EXPECT_EQ(d["peer"]["role"], "Unknown");
  EXPECT_EQ(d["peer"]["disk"], "DUnknown");
  down.peer_node.reset();
  EXPECT_TRUE(StatusToJson(down)["peer"].is_null());
}

// --- The server, on a real socket ---

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/repld-ctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/run/r0.ctl";  // run/ does not exist yet: the server creates it
  }
  void TearDown() override {
    StopLoop();
    std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  // Starts a server whose handler answers status and refuses the rest; then runs the loop.
  void StartServer(ControlServer::Handler handler = {}) {
    if (!handler) {
      handler = [this](const json& request) -> asio::awaitable<json> {
        ++handled_;
        if (request["command"] == "status") co_return json{{"status", {{"resource", "r0"}}}};
        if (request["command"] == "secondary") throw std::runtime_error("boom");
        co_return json{{"ok", false}, {"error", "the peer is Primary; demote it first"}};
      };
    }
    server_ = std::make_unique<ControlServer>(io_, path_, std::move(handler));
    const Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.message();
    loop_ = std::thread([this] { io_.run(); });
  }

  void StopLoop() {
    if (!loop_.joinable()) return;
    std::promise<void> stopped;
    asio::post(io_, [&] {
      server_->Stop();
      stopped.set_value();
    });
    stopped.get_future().wait();
    work_.reset();
    loop_.join();
    server_.reset();
  }

  int Connect() {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << errno;
    return fd;
  }

  static void Send(int fd, const std::string& text) {
    size_t sent = 0;
    while (sent < text.size()) {
      const ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close on us: the test then checks what it said
      sent += static_cast<size_t>(n);
    }
  }

  // One line (without '\n'), or "" on EOF; "<timeout>" after 5 s.
  static std::string ReadLine(int fd) {
    std::string line;
    char c;
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 5000) != 1) return "<timeout>";
      if (recv(fd, &c, 1, 0) != 1 || c == '\n') return line;
      line += c;
    }
  }

  static bool ClosedByPeer(int fd) {
    pollfd p{fd, POLLIN, 0};
    char c;
    return poll(&p, 1, 5000) == 1 && recv(fd, &c, 1, 0) <= 0;
  }

  std::string dir_, path_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<ControlServer> server_;
  std::thread loop_;
  int handled_ = 0;
};

TEST_F(ControlServerTest, AnswersStatusThroughTheClientCall) {
  StartServer();
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);

  auto r = CallControl(path_, ControlRequestLine("status"), std::chrono::seconds(5));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value()["status"]["resource"], "r0");
  EXPECT_EQ(r.value()["version"], 1);

  auto refused = CallControl(path_, ControlRequestLine("primary"), std::chrono::seconds(5));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(), "the peer is Primary; demote it first");

  auto thrown = CallControl(path_, ControlRequestLine("secondary"), std::chrono::seconds(5));
  ASSERT_FALSE(thrown.ok());
  EXPECT_NE(thrown.status().message().find("boom"), std::string::npos);

  StopLoop();
  EXPECT_NE(stat(path_.c_str(), &st), 0) << "Stop() leaves the socket file behind";
  auto gone = CallControl(path_, ControlRequestLine("status"), std::chrono::seconds(1));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), ENOENT);
}

TEST_F(ControlServerTest, CarriesOnAfterBadRequestsOnOneConnection) {
  StartServer();
  const int fd = Connect();
  Send(fd,
       "not json\n[1]\n{\"version\":9,\"command\":\"status\"}\n"
       "{\"version\":1,\"command\":\"dance\"}\n{\"version\":1,\"command\":\"status\"}\r\n");
  for (const char* expected : {"not JSON", "JSON object", "unsupported control protocol version 9",
                               "unknown command 'dance'"}) {
    const json j = json::parse(ReadLine(fd));
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["version"], 1);
    EXPECT_NE(j["error"].get<std::string>().find(expected), std::string::npos) << j.dump();
  }
  const json last = json::parse(ReadLine(fd));
  EXPECT_EQ(last["ok"], true);
  EXPECT_EQ(last["status"]["resource"], "r0");
  // A last request without its newline is still answered.
  Send(fd, "{\"version\":1,\"command\":\"status\"}");
  shutdown(fd, SHUT_WR);
  EXPECT_EQ(json::parse(ReadLine(fd))["ok"], true);
  EXPECT_TRUE(ClosedByPeer(fd));
  close(fd);
}

TEST_F(ControlServerTest, ClosesOnOverlongLine) {
  StartServer();
  const int fd = Connect();
  Send(fd, std::string(kControlLineBytesMax + 10, 'x'));
  const json j = json::parse(ReadLine(fd));
  EXPECT_EQ(j["ok"], false);
  EXPECT_NE(j["error"].get<std::string>().find("longer than"), std::string::npos);
  EXPECT_TRUE(ClosedByPeer(fd));
  close(fd);
  // The daemon carries on.
  EXPECT_TRUE(CallControl(path_, ControlRequestLine("status"), std::chrono::seconds(5)).ok());
}

TEST_F(ControlServerTest, RefusesConnectionsBeyondTheLimit) {
  StartServer();
  std::vector<int> fds;
  for (size_t i = 0; i < kControlConnectionsMax; ++i) {
    fds.push_back(Connect());
    Send(fds.back(), ControlRequestLine("status"));
    ASSERT_EQ(json::parse(ReadLine(fds.back()))["ok"], true) << i;  // now surely accepted
  }
  const int extra = Connect();
  const json j = json::parse(ReadLine(extra));
  EXPECT_EQ(j["ok"], false);
  EXPECT_NE(j["error"].get<std::string>().find("too many control connections"), std::string::npos);
  EXPECT_TRUE(ClosedByPeer(extra));
  close(extra);
  // A slot frees up when one closes.
  close(fds.back());
  fds.pop_back();
  bool answered = false;
  for (int attempt = 0; attempt < 50 && !answered; ++attempt) {
    answered = CallControl(path_, ControlRequestLine("status"), std::chrono::seconds(5)).ok();
    if (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(answered);
  for (int fd : fds) close(fd);
}

TEST_F(ControlServerTest, ReplacesAStaleSocketButNotALiveOne) {
  // A socket file nobody listens on, as a killed daemon leaves it.
  ASSERT_EQ(mkdir((dir_ + "/run").c_str(), 0755), 0);
  {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    close(fd);
  }
  auto refused = CallControl(path_, ControlRequestLine("status"), std::chrono::seconds(1));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), ECONNREFUSED);

  StartServer();
  ControlServer second(io_, path_,
                       [](const json&) -> asio::awaitable<json> { co_return json::object(); });
  const Status s = second.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("already"), std::string::npos) << s.message();
  // The first one still answers: the second did not remove its socket.
  EXPECT_TRUE(CallControl(path_, ControlRequestLine("status"), std::chrono::seconds(5)).ok());
}

TEST_F(ControlServerTest, RefusesAPathThatIsNotASocket) {
  ASSERT_EQ(mkdir((dir_ + "/run").c_str(), 0755), 0);
  std::system(("touch '" + path_ + "'").c_str());
  ControlServer server(io_, path_,
                       [](const json&) -> asio::awaitable<json> { co_return json::object(); });
  const Status s = server.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a socket"), std::string::npos);
  struct stat st {};
  EXPECT_EQ(stat(path_.c_str(), &st), 0) << "the file was removed";
}

TEST_F(ControlServerTest, ClientCallTimesOutOnASilentDaemon) {
  ASSERT_EQ(mkdir((dir_ + "/run").c_str(), 0755), 0);
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 4), 0);  // listens, never accepts nor answers
  auto r = CallControl(path_, ControlRequestLine("status"), std::chrono::milliseconds(200));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ETIMEDOUT) << r.status().message();
  close(fd);
}

}  // namespace
}  // namespace repld
