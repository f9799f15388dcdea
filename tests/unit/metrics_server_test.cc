// The metrics endpoint over real TCP on 127.0.0.1: the server's loop runs on its own thread, as
// the daemon's does, and a raw client speaks HTTP to it.
#include "daemon/metrics_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <functional>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "daemon/metrics_text.h"

namespace repld {
namespace {

using namespace std::chrono_literals;

constexpr const char* kBody = "# HELP repld_test A test.\n# TYPE repld_test gauge\nrepld_test 1\n";

struct HttpAnswer {
  std::string status_line;  // "HTTP/1.1 200 OK"
  std::string headers;      // the header lines, each ending in "\r\n"
  std::string body;
  bool complete = false;  // the head ended and the connection closed
};

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<MetricsServer>(
        io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), [this] {
          body_thread_ = std::this_thread::get_id();
          ++scrapes_;
          if (fail_) throw std::runtime_error("no status");
          return std::string(kBody);
        });
    const Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_NE(server_->port(), 0);
    loop_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (!loop_.joinable()) return;
    OnLoop([this] { server_->Stop(); });
    work_.reset();
    loop_.join();
    server_.reset();
  }

  // Runs `fn` on the loop's thread and waits for it.
  void OnLoop(const std::function<void()>& fn) {
    std::promise<void> done;
    asio::post(io_, [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  size_t Connections() {
    size_t n = 0;
    OnLoop([&] { n = server_->connection_count(); });
    return n;
  }

  bool WaitForConnections(size_t want) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (Connections() != want) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  int Connect() const {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server_->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << errno;
    return fd;
  }

  static void Send(int fd, const std::string& text) {
    for (size_t sent = 0; sent < text.size();) {
      const ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close on us: the test then checks what it said
      sent += static_cast<size_t>(n);
    }
  }

  // Everything until the server closes (or 5 s pass), split into status line, headers, body.
  static HttpAnswer ReadAnswer(int fd) {
    std::string all;
    bool closed = false;
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 5000) != 1) break;
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        closed = true;
        break;
      }
      all.append(buf, static_cast<size_t>(n));
    }
    HttpAnswer a;
    const size_t line_end = all.find("\r\n");
    const size_t head_end = all.find("\r\n\r\n");
    if (line_end == std::string::npos || head_end == std::string::npos) {
      a.status_line = all;
      return a;
    }
    a.status_line = all.substr(0, line_end);
    a.headers = all.substr(line_end + 2, head_end + 2 - (line_end + 2));
    a.body = all.substr(head_end + 4);
    a.complete = closed;
    return a;
  }

  HttpAnswer Request(const std::string& request) {
    const int fd = Connect();
    Send(fd, request);
    HttpAnswer a = ReadAnswer(fd);
    close(fd);
    return a;
  }

  HttpAnswer Get(const std::string& target) {
    return Request("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n");
  }

  static bool HasHeader(const HttpAnswer& a, const std::string& line) {
    return a.headers.find(line + "\r\n") != std::string::npos;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<MetricsServer> server_;
  std::thread loop_;
  std::atomic<int> scrapes_{0};
  std::atomic<bool> fail_{false};
  std::thread::id body_thread_;
};

TEST_F(MetricsServerTest, ServesTheMetrics) {
  const HttpAnswer a = Get("/metrics");
  EXPECT_TRUE(a.complete);
  EXPECT_EQ(a.status_line, "HTTP/1.1 200 OK");
  EXPECT_TRUE(HasHeader(a, "Content-Type: text/plain; version=0.0.4; charset=utf-8")) << a.headers;
  EXPECT_TRUE(HasHeader(a, "Content-Length: " + std::to_string(std::string(kBody).size())))
      << a.headers;
  EXPECT_TRUE(HasHeader(a, "Connection: close")) << a.headers;
  EXPECT_EQ(a.body, kBody);
  EXPECT_EQ(scrapes_, 1);
  EXPECT_EQ(body_thread_, loop_.get_id()) << "body() runs on the event loop's thread";
  // A query string does not change the path; HTTP/1.0 and bare LF line ends are fine too.
  EXPECT_EQ(Get("/metrics?name[]=x").status_line, "HTTP/1.1 200 OK");
  EXPECT_EQ(Request("GET /metrics HTTP/1.0\n\n").body, kBody);
}

TEST_F(MetricsServerTest, PointsFromTheRootToTheMetrics) {
  const HttpAnswer a = Get("/");
  EXPECT_EQ(a.status_line, "HTTP/1.1 200 OK");
  EXPECT_NE(a.body.find("/metrics"), std::string::npos) << a.body;
  EXPECT_EQ(scrapes_, 0);
}

TEST_F(MetricsServerTest, AnswersOtherPathsAndMethodsAndGarbage) {
  const HttpAnswer missing = Get("/nope");
  EXPECT_EQ(missing.status_line, "HTTP/1.1 404 Not Found");
  EXPECT_TRUE(missing.complete);
  const HttpAnswer post =
      Request("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(post.status_line, "HTTP/1.1 405 Method Not Allowed");
  EXPECT_TRUE(HasHeader(post, "Allow: GET")) << post.headers;
  for (const char* garbage :
       {"hello\r\n\r\n", "GET /metrics\r\n\r\n", "GET /metrics HTTP/9.9\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n", "\r\n\r\n"}) {
    EXPECT_EQ(Request(garbage).status_line, "HTTP/1.1 400 Bad Request") << garbage;
  }
  // A client that half-closes in the middle of its head.
  const int fd = Connect();
  Send(fd, "GET /metr");
  shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadAnswer(fd).status_line, "HTTP/1.1 400 Bad Request");
  close(fd);
  EXPECT_EQ(scrapes_, 0);
  EXPECT_EQ(Get("/metrics").body, kBody);
}

TEST_F(MetricsServerTest, RefusesAnOverlongHeadAndKeepsServing) {
  const std::string junk =
      "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: " + std::string(20 * 1024, 'j') + "\r\n\r\n";
  const HttpAnswer a = Request(junk);
  EXPECT_TRUE(a.status_line == "HTTP/1.1 431 Request Header Fields Too Large" ||
              a.status_line == "HTTP/1.1 400 Bad Request")
      << a.status_line;
  EXPECT_TRUE(a.complete);
  EXPECT_EQ(scrapes_, 0);
  const HttpAnswer after = Get("/metrics");
  EXPECT_EQ(after.status_line, "HTTP/1.1 200 OK");
  EXPECT_EQ(after.body, kBody);
  EXPECT_TRUE(WaitForConnections(0));
}

TEST_F(MetricsServerTest, AFailingBodyIsA500) {
  fail_ = true;
  const HttpAnswer a = Get("/metrics");
  EXPECT_EQ(a.status_line, "HTTP/1.1 500 Internal Server Error");
  EXPECT_NE(a.body.find("no status"), std::string::npos) << a.body;
  fail_ = false;
  EXPECT_EQ(Get("/metrics").body, kBody);
}

TEST_F(MetricsServerTest, RefusesConnectionsBeyondTheLimit) {
  std::vector<int> idle;
  for (size_t i = 0; i < kMetricsConnectionsMax; ++i) idle.push_back(Connect());
  ASSERT_TRUE(WaitForConnections(kMetricsConnectionsMax));
  const int extra = Connect();
  const HttpAnswer refused = ReadAnswer(extra);
  close(extra);
  EXPECT_EQ(refused.status_line, "HTTP/1.1 503 Service Unavailable");
  EXPECT_TRUE(refused.complete);
  // One slot frees: a scrape gets through again.
  close(idle.back());
  idle.pop_back();
  ASSERT_TRUE(WaitForConnections(kMetricsConnectionsMax - 1));
  EXPECT_EQ(Get("/metrics").body, kBody);
  for (int fd : idle) close(fd);
  EXPECT_TRUE(WaitForConnections(0));
}

// A client that stops half-way through its head holds its slot for kMetricsRequestTimeout only.
TEST_F(MetricsServerTest, ClosesAnIdleConnectionAfterTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = Connect();
  Send(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 15'000), 1) << "still open after 15 s";
  char c;
  EXPECT_LE(recv(fd, &c, 1, 0), 0) << "closed without an answer";
  const auto open_for = std::chrono::steady_clock::now() - start;
  EXPECT_GE(open_for, kMetricsRequestTimeout - 500ms);
  EXPECT_LT(open_for, kMetricsRequestTimeout + 3s);
  close(fd);
  EXPECT_TRUE(WaitForConnections(0));
  EXPECT_EQ(scrapes_, 0);
}

TEST_F(MetricsServerTest, StopClosesEverything) {
  const int fd = Connect();
  ASSERT_TRUE(WaitForConnections(1));
  OnLoop([this] { server_->Stop(); });
  const HttpAnswer a = ReadAnswer(fd);
  EXPECT_TRUE(a.status_line.empty()) << a.status_line;  // closed without an answer
  close(fd);
  EXPECT_TRUE(WaitForConnections(0));
  const int after = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server_->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(connect(after, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(after);
  EXPECT_EQ(scrapes_, 0);
}

TEST_F(MetricsServerTest, ASecondBindOnThePortSaysWhy) {
  const std::string listen = "127.0.0.1:" + std::to_string(server_->port());
  Status s;
  OnLoop([&] {
    MetricsServer second(io_, listen, [] { return std::string(); });
    s = second.Start();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), EADDRINUSE);
  EXPECT_EQ(s.message(), "metrics: cannot listen on " + listen +
                             ": Address already in use; set [metrics] listen to a free port");
  EXPECT_EQ(Get("/metrics").body, kBody);  // the first one is undisturbed
}

TEST_F(MetricsServerTest, RefusesAListenThatIsNotHostPort) {
  for (const char* listen : {"9942", "localhost:9942", "127.0.0.1:", "::1:9942x", ""}) {
    Status s;
    OnLoop([&] {
      MetricsServer bad(io_, listen, [] { return std::string(); });
      s = bad.Start();
    });
    ASSERT_FALSE(s.ok()) << listen;
    EXPECT_NE(s.message().find("is not HOST:PORT"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace repld
