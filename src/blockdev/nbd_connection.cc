#include "blockdev/nbd_connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cstring>

#include "common/asio_transfer.h"
#include "common/units.h"

namespace repld {
namespace {

using asio::redirect_error;
using asio::use_awaitable;

constexpr uint16_t kKnownCommandFlags = nbd::kCmdFlagFua | nbd::kCmdFlagNoHole | nbd::kCmdFlagDf |
                                        nbd::kCmdFlagReqOne | nbd::kCmdFlagFastZero;

uint32_t ToNbdError(int errno_value) {
  switch (errno_value) {
    case 0:
      return 0;
    case EPERM:
    case EROFS:
      return nbd::kEperm;
    case ENOMEM:
      return nbd::kEnomem;
    case ENOSPC:
    case EDQUOT:
      return nbd::kEnospc;
    case EINVAL:
      return nbd::kEinval;
    case EOPNOTSUPP:
      return nbd::kEnotsup;
    default:
      return nbd::kEio;
  }
}

}  // namespace

NbdConnection::NbdConnection(Socket socket, std::string name, const NbdExport& exp,
                             const NbdLimits& limits, BlockSink& store, BufferPool& pool)
    : socket_(std::move(socket)),
      name_(std::move(name)),
      export_(exp),
      limits_(limits),
      store_(store),
      pool_(pool),
      slots_(limits.inflight_max),
      slot_freed_(socket_.get_executor()),
      reply_ready_(socket_.get_executor()) {
  const size_t chunks_max = BufferPool::ChunksFor(exp.block_max_bytes);
  free_slots_.reserve(slots_.size());
  reply_queue_.reserve(slots_.size());
  sending_.reserve(slots_.size());
  gather_.reserve(kRepliesPerSendMax * (2 + chunks_max));
  payload_buffers_.reserve(chunks_max);
  for (auto it = slots_.rbegin(); it != slots_.rend(); ++it) {
    it->connection = this;
    it->chunks.resize(chunks_max);
    it->iov.resize(chunks_max);
    it->io.context = &*it;
    it->io.done = &NbdConnection::OnDiskDone;
    free_slots_.push_back(&*it);
  }
}

void NbdConnection::Stop() {
  stopping_ = true;
  asio::error_code ignored;
  socket_.cancel(ignored);  // wakes a reader blocked on the socket
  slot_freed_.Notify();     // ... or waiting for a slot
  pool_.WakeWaiters();      // ... or for buffers
}

void NbdConnection::Abort() {
  aborted_ = true;
  Stop();
  asio::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  socket_.close(ignored);
}

asio::awaitable<void> NbdConnection::Run() {
  auto self = shared_from_this();
  std::string why;
  {
    // The handshake is bounded in time: a client that connects and says nothing is dropped.
    asio::steady_timer watchdog(socket_.get_executor(), limits_.handshake_timeout);
    watchdog.async_wait([this](const asio::error_code& ec) {
      if (!ec) {
        asio::error_code ignored;
        socket_.close(ignored);
      }
    });
    auto session = co_await NegotiateNbd(socket_, export_, limits_, why);
    watchdog.cancel();
    if (!session || stopping_) {
      spdlog::info("nbd {}: handshake ended: {}", name_, session ? "daemon is stopping" : why);
      co_return;
    }
    session_ = *session;
  }
  spdlog::info("nbd {}: client connected (structured replies: {})", name_,
               session_.structured_replies ? "yes" : "no");
  read_buffer_.resize(kReadBufferBytes);
  asio::co_spawn(
      socket_.get_executor(), [self]() { return self->WriteReplies(); }, asio::detached);
  co_await ReadRequests();
  reading_done_ = true;
  // Every request in flight completes and is answered before the socket closes.
  while (free_slots_.size() != slots_.size()) {
    reply_ready_.Notify();
    co_await slot_freed_.Wait();
  }
  reply_ready_.Notify();  // lets the writer see that it is done
  asio::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  socket_.close(ignored);
  const bool eof = read_error_ == asio::error::eof || !read_error_;
  spdlog::info("nbd {}: disconnected after {} requests{}", name_, requests_served_,
               eof || stopping_ ? "" : " (reading from the client: " + read_error_.message() + ")");
}

asio::awaitable<bool> NbdConnection::ReadExactly(uint8_t* dest, size_t length_bytes) {
  asio::error_code ec;
  const size_t buffered = std::min(length_bytes, read_end_ - read_begin_);
  std::memcpy(dest, read_buffer_.data() + read_begin_, buffered);
  read_begin_ += buffered;
  dest += buffered;
  length_bytes -= buffered;
  if (length_bytes == 0) co_return true;
  read_begin_ = read_end_ = 0;
  if (length_bytes >= read_buffer_.size() / 4) {
    // Large reads go straight to `dest` (the buffered loop below only fits smaller ones).
    co_await asio::async_read(socket_, asio::buffer(dest, length_bytes), TransferAllUncapped{},
                              redirect_error(use_awaitable, ec));
    if (ec) read_error_ = ec;
    co_return !ec;
  }
  while (read_end_ < length_bytes) {
    const size_t n = co_await socket_.async_read_some(
        asio::buffer(read_buffer_.data() + read_end_, read_buffer_.size() - read_end_),
        redirect_error(use_awaitable, ec));
    if (ec) {
      read_error_ = ec;
      co_return false;
    }
    read_end_ += n;
  }
  std::memcpy(dest, read_buffer_.data(), length_bytes);
  read_begin_ = length_bytes;
  co_return true;
}

asio::awaitable<bool> NbdConnection::ReadPayload(Slot& slot) {
  // What the last socket read already brought is copied; a large remainder is read straight
  // into the chunks with one gathered read instead of one read per chunk.
  uint32_t chunk = 0;
  size_t chunk_offset = 0;
  while (chunk < slot.chunk_count && read_begin_ < read_end_) {
    const size_t n = std::min(read_end_ - read_begin_, slot.iov[chunk].iov_len - chunk_offset);
    std::memcpy(slot.chunks[chunk] + chunk_offset, read_buffer_.data() + read_begin_, n);
    read_begin_ += n;
    chunk_offset += n;
    if (chunk_offset == slot.iov[chunk].iov_len) {
      ++chunk;
      chunk_offset = 0;
    }
  }
  if (chunk == slot.chunk_count) co_return true;
  size_t remaining = 0;
  payload_buffers_.clear();
  for (uint32_t i = chunk; i < slot.chunk_count; ++i) {
    const size_t skip = i == chunk ? chunk_offset : 0;
    payload_buffers_.emplace_back(slot.chunks[i] + skip, slot.iov[i].iov_len - skip);
    remaining += slot.iov[i].iov_len - skip;
  }
  if (remaining < read_buffer_.size() / 4) {
    // Small: through the read buffer, which may also pick up the requests that follow.
    for (const asio::mutable_buffer& b : payload_buffers_) {
      if (!co_await ReadExactly(static_cast<uint8_t*>(b.data()), b.size())) co_return false;
    }
    co_return true;
  }
  asio::error_code ec;
  read_begin_ = read_end_ = 0;
  co_await asio::async_read(socket_, payload_buffers_, TransferAllUncapped{},
                            redirect_error(use_awaitable, ec));
  co_return !ec;
}

asio::awaitable<bool> NbdConnection::DiscardPayload(uint64_t length_bytes) {
  std::array<uint8_t, 4096> sink;
  while (length_bytes > 0) {
    const size_t n = std::min<uint64_t>(length_bytes, sink.size());
    if (!co_await ReadExactly(sink.data(), n)) co_return false;
    length_bytes -= n;
  }
  co_return true;
}

asio::awaitable<NbdConnection::Slot*> NbdConnection::TakeSlot() {
  while (free_slots_.empty() && !stopping_) co_await slot_freed_.Wait();
  if (stopping_) co_return nullptr;
  Slot* slot = free_slots_.back();
  free_slots_.pop_back();
  slot->error = 0;
  slot->error_payload_bytes = 0;
  slot->chunk_count = 0;
  co_return slot;
}

uint32_t NbdConnection::Validate(const nbd::Request& r, std::string& message) const {
  const uint64_t size = export_.size_bytes;
  const bool in_range = r.offset_bytes <= size && r.length_bytes <= size - r.offset_bytes;
  switch (r.type) {
    case nbd::kCmdRead:
    case nbd::kCmdWrite:
      if (r.length_bytes > export_.block_max_bytes) {
        message = "request of " + std::to_string(r.length_bytes) +
                  " bytes exceeds the maximum block size " +
                  std::to_string(export_.block_max_bytes);
        return nbd::kEinval;
      }
      [[fallthrough]];
    case nbd::kCmdTrim:
    case nbd::kCmdWriteZeroes:
      if (!in_range) {
        message = "offset " + std::to_string(r.offset_bytes) + " + length " +
                  std::to_string(r.length_bytes) + " is beyond the end of the export (" +
                  std::to_string(size) + " bytes)";
        // The protocol: EINVAL for reads and trims past the end, ENOSPC for writes.
        return (r.type == nbd::kCmdRead || r.type == nbd::kCmdTrim) ? nbd::kEinval : nbd::kEnospc;
      }
      if (!IsAligned(r.offset_bytes, export_.block_min_bytes) ||
          !IsAligned(r.length_bytes, export_.block_min_bytes)) {
        message = "offset and length must be multiples of the minimum block size " +
                  std::to_string(export_.block_min_bytes);
        return nbd::kEinval;
      }
      break;
    case nbd::kCmdFlush:
      break;
    default:
      message = "command " + std::to_string(r.type) + " (" + std::string(nbd::CommandName(r.type)) +
                ") is not supported";
      return nbd::kEinval;
  }
  if ((r.flags & ~kKnownCommandFlags) != 0) {
    message = "unknown command flags " + std::to_string(r.flags);
    return nbd::kEinval;
  }
  return 0;
}

asio::awaitable<void> NbdConnection::ReadRequests() {
  std::array<uint8_t, nbd::kRequestBytes> header_bytes{};
  std::string message;
  while (!stopping_) {
    if (!co_await ReadExactly(header_bytes.data(), header_bytes.size())) co_return;
    const nbd::Request r = nbd::DecodeRequest(header_bytes);
    if (r.magic != nbd::kMagicRequest) {
      spdlog::warn("nbd {}: bad request magic {:#x}; closing the connection", name_, r.magic);
      co_return;
    }
    if (r.type == nbd::kCmdDisc) co_return;
    Slot* slot = co_await TakeSlot();
    if (slot == nullptr) co_return;
    ++requests_served_;
    slot->cookie = r.cookie;
    slot->type = r.type;
    slot->offset_bytes = r.offset_bytes;
    slot->length_bytes = r.length_bytes;
    const uint32_t error = Validate(r, message);
    if (error != 0) {
      spdlog::debug("nbd {}: {} refused: {}", name_, nbd::CommandName(r.type), message);
      SetError(*slot, error, message);
      // A refused write still carries its payload: read it away to stay in step.
      const bool ok = r.type != nbd::kCmdWrite || co_await DiscardPayload(r.length_bytes);
      QueueReply(*slot);
      if (!ok) co_return;
      continue;
    }
    const bool has_data = r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite;
    if (has_data) {
      slot->chunk_count = static_cast<uint32_t>(BufferPool::ChunksFor(r.length_bytes));
      std::span<uint8_t*> chunks(slot->chunks.data(), slot->chunk_count);
      bool acquired = true;
      while (!pool_.TryAcquire(chunks)) {
        if (stopping_) {
          acquired = false;
          break;
        }
        co_await pool_.WaitForFree();
      }
      if (!acquired) {
        slot->chunk_count = 0;
        ReleaseSlot(*slot);
        co_return;
      }
      uint64_t left = r.length_bytes;
      for (uint32_t i = 0; i < slot->chunk_count; ++i) {
        const size_t n = std::min<uint64_t>(left, BufferPool::kChunkBytes);
        slot->iov[i] = {slot->chunks[i], n};
        left -= n;
      }
      if (r.type == nbd::kCmdWrite) {
        if (!co_await ReadPayload(*slot)) {
          ReleaseSlot(*slot);  // the client went away mid-payload: nothing was started
          co_return;
        }
      }
    }
    StartDiskIo(*slot, r.flags);
  }
}

void NbdConnection::StartDiskIo(Slot& slot, uint16_t flags) {
  BlockRequest& req = slot.io.request;
  req.offset_bytes = slot.offset_bytes;
  req.length_bytes = slot.length_bytes;
  req.fua = (flags & nbd::kCmdFlagFua) != 0;
  req.may_punch = (flags & nbd::kCmdFlagNoHole) == 0;
  switch (slot.type) {
    case nbd::kCmdRead:
      req.op = BlockOp::kRead;
      break;
    case nbd::kCmdWrite:
      req.op = BlockOp::kWrite;
      break;
    case nbd::kCmdFlush:
      req.op = BlockOp::kFlush;
      break;
    case nbd::kCmdTrim:
      req.op = BlockOp::kTrim;
      break;
    case nbd::kCmdWriteZeroes:
      req.op = BlockOp::kWriteZeroes;
      break;
    default:
      REPLD_CHECK(false);
  }
  if (slot.length_bytes == 0 && req.op != BlockOp::kFlush) {
    QueueReply(slot);  // nothing to do
    return;
  }
  slot.io.iov = slot.iov.data();
  slot.io.iov_count = slot.chunk_count;
  store_.Submit(&slot.io);
}

void NbdConnection::OnDiskDone(DiskIo* io, int error) {
  auto* slot = static_cast<Slot*>(io->context);
  NbdConnection* self = slot->connection;
  if (error != 0) {
    self->SetError(*slot, ToNbdError(error),
                   std::string(BlockOpName(io->request.op)) +
                       " failed on the backing disk: " + ErrnoText(error));
  }
  self->QueueReply(*slot);
}

void NbdConnection::SetError(Slot& slot, uint32_t error, std::string_view message) {
  slot.error = error;
  const size_t n = std::min(message.size(), kErrorMessageBytesMax);
  nbd::PutU32(slot.error_payload.data(), error);
  nbd::PutU16(slot.error_payload.data() + 4, static_cast<uint16_t>(n));
  std::memcpy(slot.error_payload.data() + 6, message.data(), n);
  slot.error_payload_bytes = static_cast<uint16_t>(6 + n);
}

void NbdConnection::QueueReply(Slot& slot) {
  REPLD_CHECK(reply_queue_.size() < slots_.size());
  reply_queue_.push_back(&slot);
  reply_ready_.Notify();
}

void NbdConnection::AppendReply(Slot& slot, std::vector<asio::const_buffer>& out) {
  uint8_t* h = slot.reply_header.data();
  const bool data = slot.type == nbd::kCmdRead && slot.error == 0 && slot.length_bytes > 0;
  if (!session_.structured_replies) {
    nbd::EncodeSimpleReply(slot.error, slot.cookie,
                           std::span<uint8_t, nbd::kSimpleReplyBytes>(h, nbd::kSimpleReplyBytes));
    out.emplace_back(h, nbd::kSimpleReplyBytes);
  } else if (slot.error != 0) {
    nbd::EncodeStructuredReplyHeader(
        nbd::kReplyFlagDone, nbd::kReplyTypeError, slot.cookie, slot.error_payload_bytes,
        std::span<uint8_t, nbd::kStructuredReplyHeaderBytes>(h, nbd::kStructuredReplyHeaderBytes));
    out.emplace_back(h, nbd::kStructuredReplyHeaderBytes);
    out.emplace_back(slot.error_payload.data(), slot.error_payload_bytes);
    return;
  } else if (data) {
    nbd::EncodeStructuredReplyHeader(
        nbd::kReplyFlagDone, nbd::kReplyTypeOffsetData, slot.cookie, 8 + slot.length_bytes,
        std::span<uint8_t, nbd::kStructuredReplyHeaderBytes>(h, nbd::kStructuredReplyHeaderBytes));
    nbd::PutU64(h + nbd::kStructuredReplyHeaderBytes, slot.offset_bytes);
    out.emplace_back(h, nbd::kStructuredReplyHeaderBytes + 8);
  } else {
    nbd::EncodeStructuredReplyHeader(
        nbd::kReplyFlagDone, nbd::kReplyTypeNone, slot.cookie, 0,
        std::span<uint8_t, nbd::kStructuredReplyHeaderBytes>(h, nbd::kStructuredReplyHeaderBytes));
    out.emplace_back(h, nbd::kStructuredReplyHeaderBytes);
  }
  if (!data) return;
  uint64_t left = slot.length_bytes;
  for (uint32_t i = 0; i < slot.chunk_count; ++i) {
    const size_t n = std::min<uint64_t>(left, BufferPool::kChunkBytes);
    out.emplace_back(slot.chunks[i], n);
    left -= n;
  }
}

asio::awaitable<void> NbdConnection::WriteReplies() {
  auto self = shared_from_this();
  asio::error_code ec;
  for (;;) {
    if (reply_queue_.empty()) {
      if (reading_done_ && free_slots_.size() == slots_.size()) co_return;
      co_await reply_ready_.Wait();
      continue;
    }
    sending_.clear();
    gather_.clear();
    if (reply_queue_.size() <= kRepliesPerSendMax) {
      std::swap(sending_, reply_queue_);
    } else {
      sending_.assign(reply_queue_.begin(), reply_queue_.begin() + kRepliesPerSendMax);
      reply_queue_.erase(reply_queue_.begin(), reply_queue_.begin() + kRepliesPerSendMax);
    }
    if (!send_failed_) {
      for (Slot* slot : sending_) AppendReply(*slot, gather_);
      co_await SendGathered(ec);
      if (ec) {
        send_failed_ = true;
        spdlog::info("nbd {}: cannot send replies: {}", name_, ec.message());
        Stop();
      }
    }
    for (Slot* slot : sending_) ReleaseSlot(*slot);
  }
}

asio::awaitable<void> NbdConnection::SendGathered(asio::error_code& ec) {
  size_t first = 0;
  for (;;) {
    const size_t sent = co_await asio::async_write(
        socket_,
        std::span<const asio::const_buffer>(gather_.data() + first, gather_.size() - first),
        TransferAllUncapped{}, redirect_error(use_awaitable, ec));
    // Stop() cancels the reader's receive, and with it this send: carry on unless aborted.
    if (ec != asio::error::operation_aborted || aborted_) co_return;
    size_t skip = sent;
    while (skip > 0 && skip >= gather_[first].size()) skip -= gather_[first++].size();
    if (first == gather_.size()) {
      ec = {};
      co_return;
    }
    gather_[first] += skip;
  }
}

void NbdConnection::ReleaseSlot(Slot& slot) {
  pool_.Release(std::span<uint8_t* const>(slot.chunks.data(), slot.chunk_count));
  slot.chunk_count = 0;
  free_slots_.push_back(&slot);
  slot_freed_.Notify();
}

}  // namespace repld
