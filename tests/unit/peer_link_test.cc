// The peer link over real TCP on 127.0.0.1: two PeerLinks in one io_context, and, where a test
// needs a peer that misbehaves, a scripted peer built from the codec alone (peer_proto.h,
// peer_auth.h). Every wait has a deadline; nothing sleeps.
#include "daemon/peer_link.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "replication/peer_auth.h"

namespace repld {
namespace {

using namespace std::chrono_literals;
using asio::redirect_error;
using asio::use_awaitable;
using asio::ip::tcp;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// ---- Log capture ------------------------------------------------------------------------------

class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::pair<spdlog::level::level_enum, std::string>> lines;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines.emplace_back(msg.level, std::string(msg.payload.begin(), msg.payload.end()));
  }
  void flush_() override {}
};

// Routes the default logger into a CaptureSink for the life of the object.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<CaptureSink>()), saved_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("capture", sink_);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(saved_); }
  size_t Count(spdlog::level::level_enum level, const std::string& text) const {
    size_t n = 0;
    for (const auto& [l, line] : sink_->lines) n += (l == level && line.find(text) != line.npos);
    return n;
  }

 private:
  std::shared_ptr<CaptureSink> sink_;
  std::shared_ptr<spdlog::logger> saved_;
};

// ---- A handler that records everything --------------------------------------------------------

struct Received {
  peer::Data head;
  size_t chunk_count = 0;
  std::vector<uint8_t> bytes;
};

class Recorder : public PeerLinkHandler {
 public:
  Recorder(BufferPool& pool, PeerState state) : pool_(pool), state_(state) {}
  ~Recorder() override {
    if (!held.empty()) pool_.Release(held);
  }

  PeerState HandshakeState() override { return state_; }
  void OnConnecting() override { events.push_back("connecting"); }
  void OnUp(const PeerState& p, uint64_t agreed, const PeerState& ours) override {
    events.push_back("up");
    ++ups;
    peer = p;
    features = agreed;
    sent = ours;
  }
  void OnDown(const std::string& reason) override {
    events.push_back("down");
    down_reasons.push_back(reason);
  }
  void OnData(const peer::Data& head, std::span<uint8_t* const> chunks) override {
    Received r{head, chunks.size(), {}};
    uint64_t left = head.HasPayloadData() ? head.length_bytes : 0;
    for (uint8_t* chunk : chunks) {
      const size_t n = std::min<uint64_t>(left, BufferPool::kChunkBytes);
      r.bytes.insert(r.bytes.end(), chunk, chunk + n);
      left -= n;
    }
    data.push_back(std::move(r));
    if (keep_chunks) {
      held.insert(held.end(), chunks.begin(), chunks.end());
    } else {
      pool_.Release(chunks);
    }
  }
  void OnRecvAck(uint64_t seq) override { recv_acks.push_back(seq); }
  void OnWriteAck(uint64_t seq, int error) override { write_acks.emplace_back(seq, error); }
  void OnFlush(uint64_t seq) override { flushes.push_back(seq); }
  void OnFlushAck(uint64_t seq, int error) override { flush_acks.emplace_back(seq, error); }
  void OnState(const PeerState& p) override { states.push_back(p); }
  void OnOutOfSync(const peer::OutOfSync& m) override { out_of_sync.push_back(m); }
  void OnCsums(const peer::Csums&) override {}
  void OnCsumReply(const peer::CsumReply&) override {}
  void OnReadRequest(const peer::ReadRequest&) override {}
  void OnReadError(const peer::ReadError&) override {}
  void OnPromoteRequest(uint64_t token) override { promote_requests.push_back(token); }
  void OnPromoteReply(const peer::PromoteReply& m) override { promote_replies.push_back(m); }
  void OnSendDone(uint64_t cookie, bool sent) override {
    events.push_back(sent ? "sent" : "unsent");
    send_done.emplace_back(cookie, sent);
  }

  size_t downs() const { return down_reasons.size(); }

  bool keep_chunks = false;  // hold received chunks: the pool runs dry, the reader stalls
  std::vector<uint8_t*> held;
  std::vector<std::string> events;
  int ups = 0;
  std::optional<PeerState> peer;
  uint64_t features = 0;          // agreed, as OnUp said
  std::optional<PeerState> sent;  // ours, as OnUp said the peer decoded it
  std::vector<uint64_t> promote_requests;
  std::vector<peer::PromoteReply> promote_replies;
  std::vector<std::string> down_reasons;
  std::vector<Received> data;
  std::vector<uint64_t> recv_acks;
  std::vector<std::pair<uint64_t, int>> write_acks;
  std::vector<uint64_t> flushes;
  std::vector<std::pair<uint64_t, int>> flush_acks;
  std::vector<PeerState> states;
  std::vector<peer::OutOfSync> out_of_sync;
  std::vector<std::pair<uint64_t, bool>> send_done;

 private:
  BufferPool& pool_;
  PeerState state_;
};

PeerState AlphaState() {
  PeerState s;
  s.role = Role::kPrimary;
  s.disk = DiskState::kUpToDate;
  s.ids = GenerationIds{0x1111, 0x2222, {0x3333, 0x4444}};
  s.data_bytes = kGiB;
  s.out_of_sync_bytes = 8192;
  s.resync_done = true;
  return s;
}

PeerState BetaState() {
  PeerState s;
  s.role = Role::kSecondary;
  s.disk = DiskState::kOutdated;
  s.ids = GenerationIds{0xaaaa, 0, {0xbbbb, 0}};
  s.data_bytes = kGiB;
  s.resync_done = false;
  return s;
}

void ExpectSameState(const PeerState& got, const PeerState& want) {
  EXPECT_EQ(got.role, want.role);
  EXPECT_EQ(got.disk, want.disk);
  EXPECT_EQ(got.ids, want.ids);
  EXPECT_EQ(got.data_bytes, want.data_bytes);
  EXPECT_EQ(got.out_of_sync_bytes, want.out_of_sync_bytes);
  EXPECT_EQ(got.resync_done, want.resync_done);
}

uint16_t FreePort() {
  asio::io_context io;
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

std::string Local(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

// One node: its receive pool, its handler and its link.
struct Node {
  Node(asio::io_context& io, PeerLinkConfig config, PeerState state, size_t pool_bytes = 8 * kMiB)
      : pool(io.get_executor(), pool_bytes),
        rec(pool, state),
        link(io, std::move(config), rec, pool) {}
  BufferPool pool;
  Recorder rec;
  PeerLink link;
};

// ---- The scripted peer ------------------------------------------------------------------------

asio::awaitable<void> Write(tcp::socket& s, std::span<const uint8_t> bytes) {
  asio::error_code ec;
  co_await asio::async_write(s, asio::buffer(bytes.data(), bytes.size()),
                             redirect_error(use_awaitable, ec));
}

// One whole frame, or nothing if the connection ended.
asio::awaitable<std::vector<uint8_t>> ReadFrame(tcp::socket& s) {
  std::vector<uint8_t> frame(peer::kFrameHeaderBytes);
  asio::error_code ec;
  co_await asio::async_read(s, asio::buffer(frame), redirect_error(use_awaitable, ec));
  if (ec) co_return std::vector<uint8_t>{};
  Result<peer::FrameHeader> h = peer::DecodeFrameHeader(frame);
  if (!h.ok()) co_return std::vector<uint8_t>{};
  frame.resize(peer::kFrameHeaderBytes + h->payload_bytes);
  co_await asio::async_read(s,
                            asio::buffer(frame.data() + peer::kFrameHeaderBytes, h->payload_bytes),
                            redirect_error(use_awaitable, ec));
  if (ec) co_return std::vector<uint8_t>{};
  co_return frame;
}

// The handshake as node `me` on `side` would run it, without checking the other side.
asio::awaitable<bool> ScriptedHandshake(tcp::socket& s, const PeerLinkConfig& me,
                                        peer::HandshakeSide side) {
  peer::HelloExpectations mine{.resource = me.resource,
                               .node = me.node,
                               .peer_node = me.peer_node,
                               .protocol = me.protocol,
                               .data_bytes = me.data_bytes};
  mine.nonce.fill(0x5a);
  // Every argument of a co_await is a named object: GCC 12 may destroy temporaries there twice.
  const std::vector<uint8_t> hello = mine.ToHello().Encode();
  co_await Write(s, hello);
  const std::vector<uint8_t> hello_back = co_await ReadFrame(s);
  Result<peer::Hello> theirs = peer::DecodeMessage<peer::Hello>(hello_back);
  if (!theirs.ok()) co_return false;
  Result<peer::AuthResponse> answer =
      peer::ComputeAuthResponse(me.secret, peer::OurAnswerTranscript(side, mine, theirs.value()));
  if (!answer.ok()) co_return false;
  const auto auth = peer::Auth{answer.value()}.Encode();
  co_await Write(s, auth);
  const std::vector<uint8_t> auth_back = co_await ReadFrame(s);
  if (!peer::DecodeMessage<peer::Auth>(auth_back).ok()) co_return false;
  peer::State state;
  state.disk = DiskState::kUpToDate;
  state.data_bytes = me.data_bytes;
  const auto state_frame = state.Encode();
  co_await Write(s, state_frame);
  const std::vector<uint8_t> state_back = co_await ReadFrame(s);
  co_return peer::DecodeMessage<peer::State>(state_back).ok();
}

// ---- Fixture ----------------------------------------------------------------------------------

class PeerLinkTest : public ::testing::Test {
 protected:
  PeerLinkTest() : alpha_port_(FreePort()), beta_port_(FreePort()) {}
  // The nodes are gone by now (their links closed everything); their coroutines and aborted
  // operations still wait in the loop. Run them out before the io_context goes: destroying a
  // pending io_uring operation during the io_context's destructor touches services it has
  // already destroyed.
  ~PeerLinkTest() override {
    io_.restart();
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (!io_.stopped() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
    EXPECT_TRUE(io_.stopped()) << "work left in the loop after every link was destroyed";
  }

  PeerLinkConfig Config(const std::string& node) const {
    const bool is_alpha = node == "alpha";
    PeerLinkConfig c;
    c.resource = "r0";
    c.node = node;
    c.peer_node = is_alpha ? "beta" : "alpha";
    c.address = Local(is_alpha ? alpha_port_ : beta_port_);
    c.peer_address = Local(is_alpha ? beta_port_ : alpha_port_);
    c.secret = "correct horse battery staple";
    c.protocol = Protocol::kC;
    c.data_bytes = kGiB;
    c.connect_timeout = 1000ms;
    c.reconnect_max = 200ms;
    return c;
  }

  // Runs the loop until `done()` or the deadline; false on the deadline.
  bool RunUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 2000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.run_one_for(5ms);
      if (io_.stopped()) io_.restart();
    }
    return true;
  }
  void RunFor(std::chrono::milliseconds d) {
    RunUntil([] { return false; }, d);
  }

  static bool BothUp(Node& a, Node& b, int times = 1) {
    return a.rec.ups == times && b.rec.ups == times;
  }

  asio::io_context io_;
  const uint16_t alpha_port_;
  const uint16_t beta_port_;
  LogCapture log_;
};

// ---- Tests ------------------------------------------------------------------------------------

TEST_F(PeerLinkTest, BothNodesComeUpWithEachOthersState) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); })) << alpha.link.last_error();
  EXPECT_TRUE(alpha.link.up());
  EXPECT_TRUE(beta.link.up());
  ExpectSameState(*alpha.rec.peer, BetaState());
  ExpectSameState(*beta.rec.peer, AlphaState());
  // Each side learns the state it sent as the other decoded it: both decide from those.
  ExpectSameState(*alpha.rec.sent, AlphaState());
  ExpectSameState(*beta.rec.sent, BetaState());
  // Two nodes of this build agree on every feature it has (CRC-64 digests among them).
  EXPECT_EQ(alpha.rec.features, peer::kFeaturesSupported);
  EXPECT_EQ(beta.rec.features, peer::kFeaturesSupported);
  EXPECT_THAT(alpha.rec.events, ElementsAre("connecting", "up"));
  EXPECT_THAT(beta.rec.events, ElementsAre("connecting", "up"));
  EXPECT_EQ(log_.Count(spdlog::level::info, "peer 'beta' at " + Local(beta_port_) +
                                                " connected (protocol C, version 1)"),
            1u);

  // A later State travels too, resync_done included.
  PeerState changed = BetaState();
  changed.disk = DiskState::kUpToDate;
  changed.resync_done = true;
  beta.link.SendState(changed);
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.states.size() == 1; }));
  ExpectSameState(alpha.rec.states[0], changed);
}

TEST_F(PeerLinkTest, DataAndSmallFramesArriveIntact) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  // 300 KiB (3 chunks on the receiver) from five uneven pieces, one of them empty.
  std::vector<uint8_t> buffer(300 * kKiB);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<uint8_t>(i * 7 + i / 251);
  const size_t cuts[] = {0, 4096, 4096, 100'001, 131'072 + 512, buffer.size()};
  std::vector<iovec> pieces;
  for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
    pieces.push_back(iovec{buffer.data() + cuts[i], cuts[i + 1] - cuts[i]});
  }
  const peer::Data plain{.seq = 1,
                         .offset_bytes = kMiB,
                         .length_bytes = static_cast<uint32_t>(buffer.size()),
                         .flags = peer::kDataFlagFua};
  const peer::Data zeroes{
      .seq = 2, .offset_bytes = 0, .length_bytes = 4 * kMiB, .flags = peer::kDataFlagZeroes};
  const peer::Data trim{
      .seq = 3, .offset_bytes = 8 * kMiB, .length_bytes = 64 * kKiB, .flags = peer::kDataFlagTrim};
  const peer::Data small{.seq = 4, .offset_bytes = 512, .length_bytes = 4096, .flags = 0};
  ASSERT_TRUE(alpha.link.SendData(plain, pieces, 101));
  ASSERT_TRUE(alpha.link.SendData(zeroes, {}, 102));
  ASSERT_TRUE(alpha.link.SendData(trim, {}, 103));
  const iovec small_piece{buffer.data() + 512, 4096};
  ASSERT_TRUE(alpha.link.SendData(small, std::span(&small_piece, 1), 104));
  alpha.link.SendRecvAck(7);
  alpha.link.SendWriteAck(8, 5);
  alpha.link.SendFlush(9);
  alpha.link.SendFlushAck(10, 0);
  beta.link.SendWriteAck(1, 0);
  beta.link.SendRecvAck(4);
  alpha.link.SendPromoteRequest(0xABCDEF0123456789);
  const std::string reason = "'beta' is Primary; demote it first " + std::string(400, '.');
  beta.link.SendPromoteReply({.token = 0xABCDEF0123456789, .granted = false, .reason = reason});

  ASSERT_TRUE(RunUntil([&] {
    return beta.rec.data.size() == 4 && beta.rec.flush_acks.size() == 1 &&
           alpha.rec.send_done.size() == 4 && alpha.rec.recv_acks.size() == 1 &&
           alpha.rec.promote_replies.size() == 1;
  }));
  RunFor(20ms);  // nothing more may come

  ASSERT_EQ(beta.rec.data.size(), 4u);
  const Received& r = beta.rec.data[0];
  EXPECT_EQ(r.head.seq, 1u);
  EXPECT_EQ(r.head.offset_bytes, kMiB);
  EXPECT_EQ(r.head.length_bytes, buffer.size());
  EXPECT_EQ(r.head.flags, peer::kDataFlagFua);
  EXPECT_EQ(r.chunk_count, 3u);
  EXPECT_TRUE(r.bytes == buffer) << "the 300 KiB payload changed on the way";
  EXPECT_EQ(beta.rec.data[1].head.flags, peer::kDataFlagZeroes);
  EXPECT_EQ(beta.rec.data[1].head.length_bytes, 4 * kMiB);
  EXPECT_EQ(beta.rec.data[1].chunk_count, 0u);
  EXPECT_EQ(beta.rec.data[2].head.flags, peer::kDataFlagTrim);
  EXPECT_EQ(beta.rec.data[2].head.offset_bytes, 8 * kMiB);
  EXPECT_EQ(beta.rec.data[2].chunk_count, 0u);
  EXPECT_EQ(beta.rec.data[3].chunk_count, 1u);
  EXPECT_TRUE(std::equal(beta.rec.data[3].bytes.begin(), beta.rec.data[3].bytes.end(),
                         buffer.begin() + 512));

  EXPECT_THAT(alpha.rec.send_done,
              ElementsAre(Pair(101, true), Pair(102, true), Pair(103, true), Pair(104, true)));
  EXPECT_THAT(beta.rec.recv_acks, ElementsAre(7));
  EXPECT_THAT(beta.rec.write_acks, ElementsAre(Pair(8, 5)));
  EXPECT_THAT(beta.rec.flushes, ElementsAre(9));
  EXPECT_THAT(beta.rec.flush_acks, ElementsAre(Pair(10, 0)));
  EXPECT_THAT(alpha.rec.write_acks, ElementsAre(Pair(1, 0)));
  EXPECT_THAT(alpha.rec.recv_acks, ElementsAre(4));
  EXPECT_THAT(beta.rec.promote_requests, ElementsAre(0xABCDEF0123456789));
  EXPECT_EQ(alpha.rec.promote_replies[0].token, 0xABCDEF0123456789u);
  EXPECT_FALSE(alpha.rec.promote_replies[0].granted);
  EXPECT_EQ(alpha.rec.promote_replies[0].reason, reason);
  EXPECT_EQ(beta.pool.free_count(), beta.pool.chunk_count());
}

// Frames alone on the link (no pings, nothing after them), from below the low-water minimum to
// beyond its cap, arrive whole and at once. The next test pins the low-water logic itself.
TEST_F(PeerLinkTest, ALargeFrameWithNothingAfterItArrivesWhole) {
  PeerLinkConfig alpha_config = Config("alpha");
  PeerLinkConfig beta_config = Config("beta");
  alpha_config.ping_interval = beta_config.ping_interval = 0ms;  // no other traffic at all
  Node alpha(io_, alpha_config, AlphaState());
  Node beta(io_, beta_config, BetaState(), 16 * kMiB);
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  for (const size_t length : {size_t{1'000'448}, size_t{8 * kMiB} + 4096, size_t{4096}}) {
    std::vector<uint8_t> buffer(length);
    for (size_t i = 0; i < length; ++i) buffer[i] = static_cast<uint8_t>(i * 13 + i / 509);
    const iovec piece{buffer.data(), buffer.size()};
    const size_t before = beta.rec.data.size();
    const peer::Data head{.seq = before + 1, .length_bytes = static_cast<uint32_t>(length)};
    ASSERT_TRUE(alpha.link.SendData(head, std::span(&piece, 1), before + 1));
    ASSERT_TRUE(RunUntil([&] { return beta.rec.data.size() == before + 1; }, 1000ms))
        << "a " << length << "-byte frame did not arrive within 1 s";
    EXPECT_TRUE(beta.rec.data.back().bytes == buffer) << length << " bytes changed on the way";
  }
}

// The same from a scripted peer that pauses inside the payload: the reader must wait for the
// rest (not wake per segment) and must never wait for more than the frame still has.
TEST_F(PeerLinkTest, APayloadThatArrivesInPiecesIsReadWhole) {
  PeerLinkConfig beta_config = Config("beta");
  beta_config.ping_interval = 0ms;
  Node beta(io_, beta_config, BetaState());
  ASSERT_TRUE(beta.link.Start().ok());
  const tcp::endpoint beta_endpoint(asio::ip::make_address("127.0.0.1"), beta_port_);

  std::vector<uint8_t> data(kMiB);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + i / 4093);
  const peer::Data head{.seq = 1, .length_bytes = static_cast<uint32_t>(data.size())};
  const auto head_bytes = head.EncodeHead(data);
  std::vector<uint8_t> frame(head_bytes.size() + data.size());
  std::copy(head_bytes.begin(), head_bytes.end(), frame.begin());
  std::copy(data.begin(), data.end(), frame.begin() + head_bytes.size());
  bool sent = false;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        tcp::socket s(io_);
        co_await s.async_connect(beta_endpoint, use_awaitable);
        const PeerLinkConfig alpha_config = Config("alpha");
        if (!co_await ScriptedHandshake(s, alpha_config, peer::HandshakeSide::kConnector)) {
          co_return;
        }
        // 600 KiB, a pause long enough for the reader to go back to waiting, then the rest.
        const size_t first = 600 * kKiB;
        co_await Write(s, std::span<const uint8_t>(frame.data(), first));
        asio::steady_timer pause(io_, 100ms);
        co_await pause.async_wait(use_awaitable);
        co_await Write(s, std::span<const uint8_t>(frame.data() + first, frame.size() - first));
        sent = true;
        while (!(co_await ReadFrame(s)).empty()) {
        }  // the connection stays open until beta's link goes
      },
      asio::detached);
  ASSERT_TRUE(RunUntil([&] { return sent && beta.rec.data.size() == 1; }, 1500ms))
      << "the 1 MiB frame did not arrive within 1.5 s (sent: " << sent << ")";
  EXPECT_TRUE(beta.rec.data[0].bytes == data) << "the payload changed on the way";
}

TEST_F(PeerLinkTest, WrongSecretIsRefusedAndLoggedOnBothNodes) {
  PeerLinkConfig beta_config = Config("beta");
  beta_config.secret = "a different secret";
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, beta_config, BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] {
    return log_.Count(spdlog::level::err, "peer 'beta' failed authentication") >= 2 &&
           log_.Count(spdlog::level::err, "peer 'alpha' failed authentication") >= 2;
  })) << "expected a refusal on both nodes, twice (the connector retries)";
  EXPECT_EQ(alpha.rec.ups, 0);
  EXPECT_EQ(beta.rec.ups, 0);
  EXPECT_FALSE(alpha.link.up());
  for (Node* n : {&alpha, &beta}) {
    EXPECT_THAT(n->link.last_error(), HasSubstr("authentication"));
    EXPECT_THAT(n->link.last_error(), HasSubstr("secret"));
  }
  EXPECT_EQ(log_.Count(spdlog::level::err, "net.secret"), log_.Count(spdlog::level::err, ""));
}

TEST_F(PeerLinkTest, HelloMismatchIsRefusedWithItsReason) {
  PeerLinkConfig beta_config = Config("beta");
  beta_config.data_bytes = 2 * kGiB;
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, beta_config, BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil(
      [&] { return !alpha.link.last_error().empty() && !beta.link.last_error().empty(); }));
  RunFor(150ms);  // a retry, which is refused again
  EXPECT_EQ(alpha.rec.ups + beta.rec.ups, 0);
  EXPECT_THAT(alpha.link.last_error(), HasSubstr("data size mismatch"));
  EXPECT_THAT(beta.link.last_error(), HasSubstr("data size mismatch"));
  // The connector knows whom it reached; the acceptor only where the connection came from.
  EXPECT_GE(log_.Count(spdlog::level::err,
                       "refused peer 'beta' at " + Local(beta_port_) + ": data size mismatch"),
            1u);
  EXPECT_GE(log_.Count(spdlog::level::err, "refused the connection from 127.0.0.1:"), 1u);
}

TEST_F(PeerLinkTest, ProtocolMismatchIsRefused) {
  PeerLinkConfig alpha_config = Config("alpha");
  alpha_config.protocol = Protocol::kA;
  Node alpha(io_, alpha_config, AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] {
    return alpha.link.last_error().find("replication protocol mismatch") != std::string::npos &&
           beta.link.last_error().find("replication protocol mismatch") != std::string::npos;
  })) << alpha.link.last_error()
      << " / " << beta.link.last_error();
  EXPECT_EQ(alpha.rec.ups + beta.rec.ups, 0);
}

TEST_F(PeerLinkTest, PeerGoesAwayAndComesBack) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  beta.link.Stop();
  EXPECT_THAT(beta.rec.events, ElementsAre("connecting", "up", "down"));  // at once
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.downs() == 1; }));
  EXPECT_FALSE(alpha.link.up());
  EXPECT_FALSE(alpha.link.SendData(
      peer::Data{.seq = 1, .length_bytes = 512, .flags = peer::kDataFlagTrim}, {}, 1));
  EXPECT_THAT(alpha.rec.events, ElementsAre("connecting", "up", "down", "connecting"));
  EXPECT_THAT(alpha.link.last_error(), HasSubstr("peer 'beta'"));

  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta, 2); })) << alpha.link.last_error();
  EXPECT_THAT(beta.rec.events, ElementsAre("connecting", "up", "down", "connecting", "up"));
  EXPECT_EQ(beta.rec.send_done.size() + alpha.rec.send_done.size(), 0u);
}

TEST_F(PeerLinkTest, StopReportsQueuedDataUnsentThenDownAndThenNothing) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  std::vector<uint8_t> buffer(4096, 0xee);
  const iovec piece{buffer.data(), buffer.size()};
  for (uint64_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(alpha.link.SendData(peer::Data{.seq = i, .offset_bytes = 0, .length_bytes = 4096},
                                    std::span(&piece, 1), 100 + i));
  }
  alpha.link.Stop();
  EXPECT_THAT(alpha.rec.send_done,
              ElementsAre(Pair(101, false), Pair(102, false), Pair(103, false)));
  EXPECT_THAT(alpha.rec.events,
              ElementsAre("connecting", "up", "unsent", "unsent", "unsent", "down"));
  const size_t events = alpha.rec.events.size();
  ASSERT_TRUE(RunUntil([&] { return beta.rec.downs() == 1; }));
  RunFor(150ms);  // beyond the first reconnect delay
  EXPECT_EQ(alpha.rec.events.size(), events) << "a handler call after Stop()";
  EXPECT_FALSE(alpha.link.up());
}

TEST_F(PeerLinkTest, DropReportsUnsentBeforeDownAndReconnects) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  std::vector<uint8_t> buffer(4096, 0x11);
  const iovec piece{buffer.data(), buffer.size()};
  ASSERT_TRUE(
      alpha.link.SendData(peer::Data{.seq = 1, .length_bytes = 4096}, std::span(&piece, 1), 7));
  ASSERT_TRUE(
      alpha.link.SendData(peer::Data{.seq = 2, .length_bytes = 4096}, std::span(&piece, 1), 8));
  alpha.link.Drop("split brain detected", true);
  EXPECT_EQ(alpha.rec.events.size(), 2u) << "Drop() reports later, not from inside the call";
  EXPECT_FALSE(alpha.link.up());
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.downs() == 1 && beta.rec.downs() == 1; }));
  EXPECT_THAT(alpha.rec.send_done, ElementsAre(Pair(7, false), Pair(8, false)));
  EXPECT_THAT(alpha.rec.events,
              ElementsAre("connecting", "up", "unsent", "unsent", "down", "connecting"));
  EXPECT_EQ(alpha.rec.down_reasons[0], "split brain detected");
  EXPECT_THAT(beta.rec.down_reasons[0], HasSubstr("split brain detected"));
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta, 2); }));

  // Without reconnect, it stays down until started again.
  alpha.link.Drop("operator said disconnect", false);
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.downs() == 2 && beta.rec.downs() == 2; }));
  RunFor(300ms);
  EXPECT_EQ(alpha.rec.ups, 2);
  EXPECT_EQ(alpha.rec.events.back(), "down");
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta, 3); }));
}

TEST_F(PeerLinkTest, WritesStuckInTheSocketAreReportedOnceWhenThePeerDies) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState(), 4 * BufferPool::kChunkBytes);
  beta.rec.keep_chunks = true;  // beta stops reading after 4 writes
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  std::vector<uint8_t> buffer(BufferPool::kChunkBytes, 0x42);
  const iovec piece{buffer.data(), buffer.size()};
  constexpr uint64_t kWrites = 300;  // 37.5 MiB: more than the socket buffers hold
  for (uint64_t i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(alpha.link.SendData(
        peer::Data{.seq = i, .length_bytes = static_cast<uint32_t>(buffer.size())},
        std::span(&piece, 1), i));
  }
  ASSERT_TRUE(RunUntil([&] { return beta.rec.data.size() == 4; }));
  RunFor(50ms);  // alpha's writer is now stuck in a write
  ASSERT_LT(alpha.rec.send_done.size(), kWrites);

  beta.link.Stop();
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.downs() == 1; }));
  ASSERT_EQ(alpha.rec.send_done.size(), kWrites);
  size_t sent = 0;
  for (uint64_t i = 0; i < kWrites; ++i) {
    EXPECT_EQ(alpha.rec.send_done[i].first, i);  // each once, in order
    sent += alpha.rec.send_done[i].second;
    if (i > 0 && alpha.rec.send_done[i].second) {
      EXPECT_TRUE(alpha.rec.send_done[i - 1].second) << "sent after unsent, at " << i;
    }
  }
  EXPECT_GE(sent, 4u);
  EXPECT_LT(sent, kWrites);
  EXPECT_EQ(alpha.rec.events[alpha.rec.events.size() - 2], "down");  // then "connecting"
}

TEST_F(PeerLinkTest, StopDuringAStuckWriteReportsItsWholeBatchUnsent) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState(), 4 * BufferPool::kChunkBytes);
  beta.rec.keep_chunks = true;
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  std::vector<uint8_t> buffer(BufferPool::kChunkBytes, 0x24);
  const iovec piece{buffer.data(), buffer.size()};
  constexpr uint64_t kWrites = 300;
  for (uint64_t i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(alpha.link.SendData(
        peer::Data{.seq = i, .length_bytes = static_cast<uint32_t>(buffer.size())},
        std::span(&piece, 1), i));
  }
  ASSERT_TRUE(RunUntil([&] { return beta.rec.data.size() == 4; }));
  RunFor(50ms);
  const size_t reported_before = alpha.rec.send_done.size();
  ASSERT_LT(reported_before, kWrites);

  alpha.link.Stop();
  // Everything at once; what was not reported before was not completely written, so: unsent.
  ASSERT_EQ(alpha.rec.send_done.size(), kWrites);
  for (size_t i = 0; i < kWrites; ++i) {
    EXPECT_EQ(alpha.rec.send_done[i].second, i < reported_before) << "write " << i;
  }
  EXPECT_EQ(alpha.rec.events.back(), "down");
}

TEST_F(PeerLinkTest, GarbageOnTheListenPortIsRefusedAndThePeerStillGetsIn) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(beta.link.Start().ok());
  RunFor(10ms);

  tcp::socket stranger(io_);
  stranger.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), beta_port_));
  const std::string junk = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
  asio::write(stranger, asio::buffer(junk));
  ASSERT_TRUE(RunUntil([&] { return !beta.link.last_error().empty(); }));
  EXPECT_THAT(beta.link.last_error(), HasSubstr("protocol violation"));
  EXPECT_THAT(beta.link.last_error(), HasSubstr("HTTP"));
  EXPECT_EQ(log_.Count(spdlog::level::err, "protocol violation by the connection from"), 1u);

  // The stranger got our Hello and the refusal, then the end of the stream.
  std::vector<uint8_t> received(4096);
  asio::error_code ec;
  size_t n = 0;
  while (!ec) n += stranger.read_some(asio::buffer(received.data() + n, received.size() - n), ec);
  received.resize(n);
  const std::string as_text(received.begin(), received.end());
  EXPECT_THAT(as_text, HasSubstr("RPL1"));
  EXPECT_THAT(as_text, HasSubstr("speaks something else"));

  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));
}

TEST_F(PeerLinkTest, SilentServerTimesOutAndIsRetried) {
  PeerLinkConfig config = Config("alpha");
  config.connect_timeout = 150ms;
  Node alpha(io_, config, AlphaState());
  tcp::acceptor silent(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), beta_port_));
  std::vector<tcp::socket> accepted;
  std::function<void()> accept_next = [&] {
    silent.async_accept([&](asio::error_code ec, tcp::socket s) {
      if (ec) return;
      accepted.push_back(std::move(s));
      accept_next();
    });
  };
  accept_next();
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return accepted.size() >= 2; }));
  EXPECT_THAT(alpha.link.last_error(), HasSubstr("timeout"));
  EXPECT_THAT(alpha.link.last_error(), HasSubstr("handshake"));
  EXPECT_EQ(alpha.rec.ups, 0);
  alpha.link.Stop();
  silent.close();
}

TEST_F(PeerLinkTest, ConnectRefusedIsLoggedOnceAtInfo) {
  Node alpha(io_, Config("alpha"), AlphaState());  // beta never runs
  ASSERT_TRUE(alpha.link.Start().ok());
  RunFor(700ms);  // attempts at about 0, 100, 300 and 700 ms
  EXPECT_THAT(alpha.link.last_error(), HasSubstr("cannot connect to peer 'beta'"));
  EXPECT_EQ(log_.Count(spdlog::level::info, "cannot connect to peer 'beta'"), 1u);
  EXPECT_GE(log_.Count(spdlog::level::debug, "cannot connect to peer 'beta'"), 1u);
  EXPECT_THAT(alpha.rec.events, ElementsAre("connecting"));
}

TEST_F(PeerLinkTest, UnansweredPingsDropThePeer) {
  PeerLinkConfig config = Config("alpha");
  config.ping_interval = 30ms;
  config.ping_timeout = 30ms;
  config.ko_count = 2;
  Node alpha(io_, config, AlphaState());
  // A beta that completes the handshake and then reads nothing.
  tcp::acceptor listener(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), beta_port_));
  tcp::socket fake(io_);
  bool handshake_done = false;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        fake = co_await listener.async_accept(use_awaitable);
        const PeerLinkConfig beta_config = Config("beta");
        handshake_done =
            co_await ScriptedHandshake(fake, beta_config, peer::HandshakeSide::kAcceptor);
      },
      asio::detached);
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.ups == 1 && handshake_done; }))
      << alpha.link.last_error();
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.downs() == 1; }));
  EXPECT_EQ(alpha.rec.down_reasons[0],
            "peer 'beta' at " + Local(beta_port_) + " did not answer 2 pings within 30 ms");
  alpha.link.Stop();
}

TEST_F(PeerLinkTest, ANewAuthenticatedConnectionReplacesTheOldOne) {
  Node alpha(io_, Config("alpha"), AlphaState());
  Node beta(io_, Config("beta"), BetaState());
  ASSERT_TRUE(alpha.link.Start().ok());
  ASSERT_TRUE(beta.link.Start().ok());
  ASSERT_TRUE(RunUntil([&] { return BothUp(alpha, beta); }));

  // alpha again, as a restarted alpha would be: a second connection with the right secret.
  tcp::socket second(io_);
  bool handshake_done = false;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        co_await second.async_connect(
            tcp::endpoint(asio::ip::make_address("127.0.0.1"), beta_port_), use_awaitable);
        const PeerLinkConfig alpha_config = Config("alpha");
        handshake_done =
            co_await ScriptedHandshake(second, alpha_config, peer::HandshakeSide::kConnector);
      },
      asio::detached);
  ASSERT_TRUE(RunUntil([&] { return beta.rec.ups == 2 && handshake_done; }));
  EXPECT_EQ(beta.rec.down_reasons[0], "replaced by a new connection from the peer");
  EXPECT_THAT(beta.rec.events, ElementsAre("connecting", "up", "down", "connecting", "up"));
  // The first alpha lost its connection; it comes back and replaces the scripted one.
  ASSERT_TRUE(RunUntil([&] { return alpha.rec.ups == 2 && beta.rec.ups == 3; }));
}

TEST_F(PeerLinkTest, ProtocolViolationsAfterTheHandshakeDropTheConnection) {
  Node beta(io_, Config("beta"), BetaState(), 4 * BufferPool::kChunkBytes);
  ASSERT_TRUE(beta.link.Start().ok());
  const tcp::endpoint beta_endpoint(asio::ip::make_address("127.0.0.1"), beta_port_);
  std::map<std::string, peer::ErrorCode> told;  // what beta told the scripted alpha

  // Each case: a scripted alpha connects, authenticates, sends `frame`, reads the Error back.
  auto run_case = [&](const std::string& name, std::vector<uint8_t> frame) {
    asio::co_spawn(
        io_,
        [&, name, frame]() -> asio::awaitable<void> {
          tcp::socket s(io_);
          co_await s.async_connect(beta_endpoint, use_awaitable);
          const PeerLinkConfig alpha_config = Config("alpha");
          if (!co_await ScriptedHandshake(s, alpha_config, peer::HandshakeSide::kConnector)) {
            co_return;
          }
          co_await Write(s, frame);
          for (;;) {
            const std::vector<uint8_t> got = co_await ReadFrame(s);
            if (got.empty()) co_return;
            if (auto e = peer::DecodeMessage<peer::Error>(got); e.ok()) {
              told[name] = e->code;
              co_return;
            }
          }
        },
        asio::detached);
  };

  // 1 MiB of data: more than beta's whole pool of four 128 KiB chunks.
  const peer::Data big{.seq = 1, .length_bytes = static_cast<uint32_t>(kMiB)};
  std::vector<uint8_t> big_data(kMiB, 1);
  const auto big_head = big.EncodeHead(big_data);
  run_case("too big", std::vector<uint8_t>(big_head.begin(), big_head.end()));
  ASSERT_TRUE(RunUntil([&] { return beta.rec.downs() == 1 && told.size() == 1; }));
  EXPECT_THAT(beta.rec.down_reasons[0], HasSubstr("more than the 4 of the whole receive pool"));

  // A data payload whose checksum does not match.
  const peer::Data bad{.seq = 2, .length_bytes = 4096};
  std::vector<uint8_t> bad_data(4096, 2);
  const auto bad_head = bad.EncodeHead(bad_data);
  bad_data[100] ^= 0x80;
  std::vector<uint8_t> bad_frame(bad_head.size() + bad_data.size());
  std::copy(bad_head.begin(), bad_head.end(), bad_frame.begin());
  std::copy(bad_data.begin(), bad_data.end(), bad_frame.begin() + bad_head.size());
  run_case("bad crc", bad_frame);
  ASSERT_TRUE(RunUntil([&] { return beta.rec.downs() == 2 && told.size() == 2; }));
  EXPECT_THAT(beta.rec.down_reasons[1], HasSubstr("checksum mismatch"));

  // A second Hello.
  peer::Hello hello;
  hello.resource = "r0";
  hello.node = "alpha";
  hello.peer_node = "beta";
  run_case("hello", hello.Encode());
  ASSERT_TRUE(RunUntil([&] { return beta.rec.downs() == 3 && told.size() == 3; }));
  EXPECT_THAT(beta.rec.down_reasons[2], HasSubstr("Hello after the handshake"));

  for (const auto& [name, code] : told) {
    EXPECT_EQ(code, peer::ErrorCode::kProtocolViolation) << name;
  }
  EXPECT_TRUE(beta.rec.data.empty());
  EXPECT_EQ(beta.pool.free_count(), beta.pool.chunk_count());
}

TEST_F(PeerLinkTest, StartRefusesBadConfig) {
  PeerLinkConfig no_secret = Config("alpha");
  no_secret.secret.clear();
  Node a(io_, no_secret, AlphaState());
  Status s = a.link.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("net.secret"));

  // The acceptor's listen address is taken.
  tcp::acceptor squatter(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), beta_port_));
  Node b(io_, Config("beta"), BetaState());
  s = b.link.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(Local(beta_port_)));
}

}  // namespace
}  // namespace repld
