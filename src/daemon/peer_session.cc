// A peer connection's life after the handshake: promotion to the link's current connection,
// the writer, the end (Close / Finish / Abandon), and the keepalive. The reader is in
// peer_reader.cc, the handshake in peer_handshake.cc.
#include "daemon/peer_session.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "common/asio_transfer.h"

namespace repld::link {

using asio::redirect_error;
using asio::use_awaitable;

namespace {
// Enough for a burst of acks per receive; larger Data payloads bypass it.
constexpr size_t kReadAheadBytes = 64 * 1024;
}  // namespace

void ShutdownAndClose(asio::ip::tcp::socket& socket) {
  if (!socket.is_open()) return;
  ::shutdown(socket.native_handle(), SHUT_RDWR);
  asio::error_code ignored;
  socket.close(ignored);
}

void LogIfFailed(std::exception_ptr e, const char* what) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("peer link: {} failed: {}", what, ex.what());
  }
}

LinkCore::LinkCore(asio::io_context& io_context, PeerLinkConfig link_config,
                   PeerLinkHandler& link_handler, BufferPool& receive_pool)
    : io(io_context),
      config(std::move(link_config)),
      handler(link_handler),
      pool(receive_pool),
      side(config.node < config.peer_node ? peer::HandshakeSide::kConnector
                                          : peer::HandshakeSide::kAcceptor),
      peer_name("peer '" + config.peer_node + "'"),
      ended(io.get_executor()) {}

std::shared_ptr<PeerSession> LinkCore::NewSession(asio::ip::tcp::socket socket, std::string address,
                                                  std::string who) {
  std::erase_if(sessions, [](const std::weak_ptr<PeerSession>& s) { return s.expired(); });
  auto session = std::make_shared<PeerSession>(shared_from_this(), std::move(socket),
                                               std::move(address), std::move(who));
  sessions.push_back(session);
  return session;
}

size_t LinkCore::HandshakesInProgress() const {
  return std::count_if(sessions.begin(), sessions.end(), [](const auto& weak) {
    const auto s = weak.lock();
    return s && s->handshaking();
  });
}

PeerSession::PeerSession(std::shared_ptr<LinkCore> core, asio::ip::tcp::socket socket,
                         std::string address, std::string who)
    : core_(std::move(core)),
      config_(core_->config),
      run_(core_->run),
      socket_(std::move(socket)),
      address_(std::move(address)),
      who_(std::move(who)),
      watchdog_(core_->io),
      queue_(PeerLink::kSendBatchMax * 4, PeerLink::kSendBatchMax * 8),
      send_ready_(core_->io.get_executor()),
      read_buffer_(kReadAheadBytes),
      chunks_(std::min(core_->pool.chunk_count(), BufferPool::ChunksFor(peer::kDataBytesMax))),
      keepalive_timer_(core_->io) {
  gather_.reserve(PeerLink::kSendBatchMax * 4);
  pieces_.reserve(chunks_.size());
}

asio::awaitable<bool> PeerSession::Run() {
  auto self = shared_from_this();
  Status s = co_await Handshake();
  if (!s.ok()) {
    Close(s.message());
    co_return false;
  }
  if (!co_await Promote()) co_return false;
  GoUp();
  if (!closed_) {
    const auto ex = socket_.get_executor();
    asio::co_spawn(ex, Reader(self), [](std::exception_ptr e) { LogIfFailed(e, "the reader"); });
    if (config_.ping_interval.count() > 0) {
      asio::co_spawn(ex, Keepalive(self),
                     [](std::exception_ptr e) { LogIfFailed(e, "the keepalive"); });
    }
  }
  co_await Writer();
  Finish();
  co_return true;
}

// Becomes the link's current connection. An older one (the acceptor's, when the peer came back
// before the old socket noticed it was gone) is closed, and its OnDown must come before our
// OnUp, so this waits for it.
asio::awaitable<bool> PeerSession::Promote() {
  auto self = shared_from_this();
  if (core_->current && core_->current != self) {
    spdlog::info("{}: a new connection from {} replaces the old one", config_.resource, who_);
    core_->current->Close("replaced by a new connection from the peer");
  }
  core_->current = self;
  while (core_->ending > 0 && !closed_) co_await core_->ended.Wait();
  co_return !closed_ && core_->current == self;
}

void PeerSession::GoUp() {
  up_reported_ = true;
  core_->last_connect_failure.clear();
  spdlog::info("{}: {} connected (protocol {}, version {})", config_.resource, who_,
               ProtocolLetter(config_.protocol), version_);
  core_->handler.OnUp(peer_state_, features_, sent_state_);
}

// After the writer's last write completed: what never left, then OnDown. OnSendDone(false)
// comes first so the handler sees its buffers free before it re-plans on OnDown.
void PeerSession::Finish() {
  if (abandoned_) return;
  ReportUnsent();
  if (abandoned_) return;  // the handler called Stop() from OnSendDone
  down_reported_ = true;
  --core_->ending;
  core_->ended.Notify();
  spdlog::info("{}: {} disconnected: {}", config_.resource, who_, reason_);
  core_->handler.OnDown(reason_);
  if (!abandoned_ && core_->Active(run_)) core_->handler.OnConnecting();
}

void PeerSession::Close(const std::string& reason, std::optional<peer::Error> tell) {
  if (closed_) return;
  auto self = shared_from_this();
  closed_ = true;
  reason_ = reason;
  core_->last_error = reason;
  if (up_reported_ && !down_reported_) ++core_->ending;
  if (core_->current == self) core_->current.reset();
  // Between writes the socket holds only whole frames, so an Error can follow them; and its
  // send buffer probably has room, so this does not block. Otherwise the peer learns nothing.
  if (tell && !writing_ && socket_.is_open()) {
    const std::vector<uint8_t> frame = tell->Encode();
    (void)!::send(socket_.native_handle(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  ShutdownAndClose(socket_);
  DisarmWatchdog();
  keepalive_timer_.cancel();
  send_ready_.Notify();
  if (waiting_for_pool_) core_->pool.WakeWaiters();
  core_->ended.Notify();
}

// Reporting now is safe even for a write in progress: the socket is non-blocking, so the
// kernel reads the frames' buffers only inside send calls made on this thread, and after the
// shutdown in Close() none will be made.
void PeerSession::Abandon(bool notify) {
  if (abandoned_) return;
  Close("the link was stopped",
        peer::Error{peer::ErrorCode::kShutdown, "node '" + config_.node + "' stopped the link"});
  abandoned_ = true;
  ReleaseChunks();
  if (!up_reported_ || down_reported_) return;
  down_reported_ = true;
  --core_->ending;
  core_->ended.Notify();
  if (!notify) return;
  ReportBatch();  // a write still in progress counts as 0 bytes written
  while (!queue_.empty()) {
    const Frame f = queue_.PopUnsent();
    if (f.is_data) core_->handler.OnSendDone(f.cookie, false);
  }
  spdlog::info("{}: {} disconnected: {}", config_.resource, who_, reason_);
  core_->handler.OnDown(reason_);
}

bool PeerSession::HasRoom() {
  if (queue_.size() < kSendQueueFramesMax) return true;
  Close(std::to_string(kSendQueueFramesMax) + " frames wait to be sent to " + who_ +
        ", which reads nothing");
  return false;
}

bool PeerSession::SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie) {
  if (!up() || !HasRoom()) return false;
  queue_.PushData(head.EncodeHeadGathered(data), data, cookie);
  send_ready_.Notify();
  return true;
}

void PeerSession::SendSmall(std::span<const uint8_t> frame) {
  if (!up() || !HasRoom()) return;
  queue_.PushSmall(frame);
  send_ready_.Notify();
}

void PeerSession::SendLarge(std::vector<uint8_t> frame) {
  if (!up() || !HasRoom()) return;
  queue_.PushLarge(std::move(frame));
  send_ready_.Notify();
}

// Drains the queue in gathered batches. Returns once the session is closed and no write is in
// progress, so nothing reads the handler's buffers any more.
asio::awaitable<void> PeerSession::Writer() {
  while (!closed_) {
    if (queue_.empty()) {
      co_await send_ready_.Wait();
      continue;
    }
    gather_.clear();
    batch_count_ = batch_reported_ = 0;
    batch_written_bytes_ = 0;
    while (batch_count_ < batch_.size() && !queue_.empty()) {
      queue_.PopInto(batch_[batch_count_++], gather_);
    }
    asio::error_code ec;
    writing_ = true;
    const size_t written_bytes =
        co_await asio::async_write(socket_, std::span<const asio::const_buffer>(gather_),
                                   TransferAllUncapped{}, redirect_error(use_awaitable, ec));
    writing_ = false;
    batch_written_bytes_ = written_bytes;
    if (!abandoned_) ReportBatch();
    if (ec) Close(LostReason(ec));
  }
}

// Reports the batch's frames not reported yet. A frame was sent if the write got past its last
// byte: a failed write may still have sent the first frames of its batch whole.
void PeerSession::ReportBatch() {
  uint64_t end_bytes = 0;
  for (size_t i = 0; i < batch_reported_; ++i) end_bytes += batch_[i].wire_bytes;
  while (batch_reported_ < batch_count_) {
    const Frame& f = batch_[batch_reported_++];
    end_bytes += f.wire_bytes;
    if (f.is_data) core_->handler.OnSendDone(f.cookie, end_bytes <= batch_written_bytes_);
  }
}

void PeerSession::ReportUnsent() {
  while (!queue_.empty() && !abandoned_) {
    const Frame f = queue_.PopUnsent();
    if (f.is_data) core_->handler.OnSendDone(f.cookie, false);
  }
}

// A Ping every ping_interval; the answer is anything at all received within ping_timeout.
asio::awaitable<void> PeerSession::Keepalive(std::shared_ptr<PeerSession> /*self*/) {
  const uint32_t misses_max = std::max<uint32_t>(config_.ko_count, 1);
  uint64_t token = 0;
  while (co_await Sleep(config_.ping_interval)) {
    const uint64_t received_before = frames_received_;
    ping_token_ = ++token;
    ping_sent_ = std::chrono::steady_clock::now();
    SendSmall(peer::Ping{token}.Encode());
    if (!co_await Sleep(config_.ping_timeout)) co_return;
    // While our reader waits for receive buffers, the peer's answers sit unread: not its fault.
    if (frames_received_ != received_before || waiting_for_pool_) continue;
    if (++misses_ < misses_max) continue;
    Close(who_ + " did not answer " + std::to_string(misses_max) + " pings within " +
          std::to_string(config_.ping_timeout.count()) + " ms");
    co_return;
  }
}

asio::awaitable<bool> PeerSession::Sleep(std::chrono::milliseconds duration) {
  if (closed_) co_return false;
  keepalive_timer_.expires_after(duration);
  asio::error_code ignored;
  co_await keepalive_timer_.async_wait(redirect_error(use_awaitable, ignored));
  co_return !closed_;
}

std::string PeerSession::LostReason(const asio::error_code& ec) const {
  if (ec == asio::error::eof) return who_ + " closed the connection";
  return "the connection to " + who_ + " failed: " + ec.message();
}

}  // namespace repld::link
