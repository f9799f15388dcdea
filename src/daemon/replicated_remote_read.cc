// ReplicatedDevice, fast failback's reads: a Primary still receiving the resync reads the blocks
// it lacks from the peer (ReadRequest out, the data back as a Data frame with
// kDataFlagReadReply, straight into the client's buffers); the UpToDate peer reads them from its
// disk into a buffer of its own and sends it. The core decides which reads go where
// (replica_remote_read.cc).
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/check.h"
#include "daemon/replicated_device.h"

namespace repld {

// --- The Primary: the answers ---

void ReplicatedDevice::DeliverReadReply(const peer::Data& head, std::span<uint8_t* const> chunks) {
  int error = 0;
  if (const std::optional<RequestId> id = replica_->RemoteRead(head.seq)) {
    ClientSlot& slot = SlotOf(*id);
    if (head.offset_bytes != slot.part_offset_bytes ||
        head.length_bytes != slot.part_length_bytes) {
      error = EIO;
      link_->Drop("the peer answered read " + std::to_string(head.seq) + " with " +
                      std::to_string(head.length_bytes) + " bytes at " +
                      std::to_string(head.offset_bytes) + ", not the range asked",
                  true);
    } else {
      // Chunk by chunk into the client's pieces.
      uint64_t left = head.length_bytes;
      size_t chunk = 0, in_chunk = 0;
      for (unsigned i = 0; i < slot.client->iov_count && left > 0; ++i) {
        auto* dest = static_cast<uint8_t*>(slot.client->iov[i].iov_base);
        size_t room = slot.client->iov[i].iov_len;
        while (room > 0 && left > 0) {
          const size_t n = std::min({room, BufferPool::kChunkBytes - in_chunk, size_t(left)});
          std::memcpy(dest, chunks[chunk] + in_chunk, n);
          dest += n;
          room -= n;
          left -= n;
          in_chunk += n;
          if (in_chunk == BufferPool::kChunkBytes) {
            ++chunk;
            in_chunk = 0;
          }
        }
      }
      REPLD_CHECK(left == 0);  // the client's buffers hold the request's length
    }
  }
  receive_pool_->Release(chunks);
  replica_->PeerReadReply(head.seq, error);  // warns about one that is not outstanding
  Drain();
}

void ReplicatedDevice::OnReadError(const peer::ReadError& message) {
  replica_->PeerReadReply(message.seq, message.error);
  Drain();
}

// --- The UpToDate peer: the requests ---

void ReplicatedDevice::OnReadRequest(const peer::ReadRequest& message) {
  // The core bounds how many it keeps (and drops a peer that sends more).
  replica_->PeerReadRequest(next_key_++, message.seq, message.offset_bytes, message.length_bytes);
  Drain();
}

void ReplicatedDevice::ExecuteReadForPeer(const ReadForPeer& a) {
  const size_t bytes = (a.length_bytes + BufferPool::kAlignBytes - 1) / BufferPool::kAlignBytes *
                       BufferPool::kAlignBytes;
  PeerReadBuffer buffer;
  buffer.data = static_cast<uint8_t*>(std::aligned_alloc(BufferPool::kAlignBytes, bytes));
  REPLD_CHECK(buffer.data != nullptr);
  buffer.iov = iovec{buffer.data, static_cast<size_t>(a.length_bytes)};
  buffer.offset_bytes = a.offset_bytes;
  peer_reads_.emplace(a.key, buffer);
  SubmitAuxRead(AuxIo::Kind::kPeerRead, a.key, buffer.iov, a.offset_bytes, a.length_bytes);
}

void ReplicatedDevice::ExecuteSendReadReply(const SendReadReply& a) {
  auto it = peer_reads_.find(a.key);  // none for a request refused before any read
  if (!a.send) return FreePeerRead(a.key);
  if (a.error != 0 || it == peer_reads_.end()) {
    link_->SendReadError(a.seq, a.error != 0 ? a.error : EIO);
    return FreePeerRead(a.key);
  }
  PeerReadBuffer& buffer = it->second;
  peer::Data head;
  head.seq = a.seq;
  head.offset_bytes = buffer.offset_bytes;
  head.length_bytes = static_cast<uint32_t>(buffer.iov.iov_len);
  head.flags = peer::kDataFlagReadReply;
  buffer.sending =
      link_->SendData(head, std::span<const iovec>(&buffer.iov, 1), a.key | kReadReplyCookie);
  if (!buffer.sending) FreePeerRead(a.key);  // no peer: OnSendDone will not come
}

void ReplicatedDevice::FreePeerRead(uint64_t key) {
  auto it = peer_reads_.find(key);
  if (it != peer_reads_.end()) {
    std::free(it->second.data);
    peer_reads_.erase(it);
  }
  replica_->ReadReplySent(key);  // the core counts it until now
}

}  // namespace repld
