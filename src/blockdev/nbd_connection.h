// One NBD client connection in the transmission phase. A reader coroutine parses requests and
// starts them (many in flight), disk completions queue replies, and a writer coroutine sends the
// queued replies in batches. Per-request state lives in slots allocated when the connection is
// made; data buffers come from the shared BufferPool. The number of requests in flight is bounded
// by the slot count: when every slot is busy the reader stops reading (backpressure).
#pragma once

#include <sys/uio.h>

#include <array>
#include <asio/awaitable.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockdev/async_signal.h"
#include "blockdev/backing_store.h"
#include "blockdev/block_sink.h"
#include "blockdev/buffer_pool.h"
#include "blockdev/nbd_export.h"
#include "blockdev/nbd_handshake.h"
#include "blockdev/nbd_proto.h"

namespace repld {

class NbdConnection : public std::enable_shared_from_this<NbdConnection> {
 public:
  using Socket = asio::generic::stream_protocol::socket;

  NbdConnection(Socket socket, std::string name, const NbdExport& exp, const NbdLimits& limits,
                BlockSink& store, BufferPool& pool);

  // Handshake, then serve requests until the client disconnects or Stop() is called; returns
  // when every request in flight has completed and its reply was sent (or could not be).
  asio::awaitable<void> Run();

  // Stop reading new requests; requests in flight complete and are answered.
  void Stop();
  // Close the socket now: for a drain that did not finish in time.
  void Abort();

  const std::string& name() const { return name_; }

 private:
  static constexpr size_t kReplyHeaderBytesMax = nbd::kStructuredReplyHeaderBytes + 8;
  static constexpr size_t kErrorMessageBytesMax = 160;
  static constexpr size_t kReadBufferBytes = 256 * 1024;
  static constexpr size_t kRepliesPerSendMax = 64;

  struct Slot {
    DiskIo io;
    NbdConnection* connection = nullptr;
    uint64_t cookie = 0;
    uint64_t offset_bytes = 0;
    uint32_t length_bytes = 0;
    uint16_t type = 0;
    uint32_t error = 0;  // NBD error value, 0 on success
    uint32_t chunk_count = 0;
    std::vector<uint8_t*> chunks;  // sized once: request_bytes_max / chunk size
    std::vector<iovec> iov;        // sized once; the disk may rewrite it
    std::array<uint8_t, kReplyHeaderBytesMax> reply_header{};
    std::array<uint8_t, 6 + kErrorMessageBytesMax> error_payload{};
    uint16_t error_payload_bytes = 0;
  };

  asio::awaitable<void> ReadRequests();
  asio::awaitable<void> WriteReplies();
  asio::awaitable<bool> ReadExactly(uint8_t* dest, size_t length_bytes);
  asio::awaitable<bool> ReadPayload(Slot& slot);
  asio::awaitable<bool> DiscardPayload(uint64_t length_bytes);
  asio::awaitable<Slot*> TakeSlot();
  // Returns an NBD error value and fills `message` when the request must be refused.
  uint32_t Validate(const nbd::Request& r, std::string& message) const;
  void SetError(Slot& slot, uint32_t error, std::string_view message);
  void StartDiskIo(Slot& slot, uint16_t flags);
  void QueueReply(Slot& slot);
  void AppendReply(Slot& slot, std::vector<asio::const_buffer>& out);
  void ReleaseSlot(Slot& slot);
  asio::awaitable<void> SendGathered(asio::error_code& ec);
  static void OnDiskDone(DiskIo* io, int error);

  Socket socket_;
  std::string name_;
  const NbdExport& export_;
  const NbdLimits& limits_;
  BlockSink& store_;
  BufferPool& pool_;
  NbdSession session_;

  std::vector<Slot> slots_;
  std::vector<Slot*> free_slots_;
  std::vector<Slot*> reply_queue_;  // completed, waiting for the writer; capacity = slot count
  std::vector<Slot*> sending_;
  std::vector<asio::const_buffer> gather_;
  std::vector<asio::mutable_buffer> payload_buffers_;

  std::vector<uint8_t> read_buffer_;
  size_t read_begin_ = 0;
  size_t read_end_ = 0;

  AsyncSignal slot_freed_;
  AsyncSignal reply_ready_;
  bool stopping_ = false;
  bool reading_done_ = false;
  bool send_failed_ = false;
  asio::error_code read_error_;  // why reading from the client ended, when it failed
  bool aborted_ = false;
  uint64_t requests_served_ = 0;
};

}  // namespace repld
