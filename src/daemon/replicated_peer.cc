// ReplicatedDevice, the peer's side: the link's events become core events, and the resync
// frames this node sends. (The client side and the core's actions: replicated_device.cc.)
#include <spdlog/spdlog.h>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdlib>

#include "common/check.h"
#include "daemon/replicated_device.h"
#include "replication/block_digest.h"

namespace repld {

void ReplicatedDevice::OnConnecting() {
  replica_->PeerConnecting();
  Drain();
}

void ReplicatedDevice::OnUp(const PeerState& peer, uint64_t features, const PeerState& sent) {
  digest_kind_ = (features & peer::kFeatureCrc64Digests) != 0 ? BlockDigestKind::kCrc64
                                                              : BlockDigestKind::kSha256;
  const bool promote_requests = (features & peer::kFeaturePromoteRequests) != 0;
  if (!promote_requests) {
    spdlog::warn(
        "resource {}: the peer's repld is older and does not agree promotions: both nodes could "
        "be promoted at the same moment; upgrade it",
        config_.name);
  }
  replica_->PeerUp(Replica::Handshake{peer, sent, promote_requests});
  Drain();
}

asio::awaitable<Status> ReplicatedDevice::Promote(bool force) {
  if (Status s = BeginPromote(force); !s.ok() || !promotion_pending()) co_return s;
  asio::steady_timer wait(io_);
  wait.expires_after(kPromotionAnswerTimeout);
  promotion_wait_ = &wait;
  std::error_code ec;
  co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  promotion_wait_ = nullptr;
  co_return FinishPromote();
}

Status ReplicatedDevice::BeginPromote(bool force) {
  promotion_done_.reset();
  // A failed disk is refused for what it is, before any other reason (a metadata write that
  // failed on it, too).
  if (replica_->disk() == DiskState::kFailed || (replica_->md().io_error && !force)) {
    return replica_->Promote(force);
  }
  Status s = ChangeMd([&] { return replica_->Promote(force); },
                      "promoted, but writing the metadata failed (see the log)");
  if (!s.ok() && replica_->promotion_pending()) {
    // Reported as failed (a metadata write failed meanwhile): a late grant must not promote.
    replica_->AbandonPromotion(s.message());
    Drain();
  }
  return s;
}

Status ReplicatedDevice::FinishPromote() {
  if (!promotion_done_) {
    replica_->AbandonPromotion("the peer did not answer within " +
                               std::to_string(kPromotionAnswerTimeout.count()) + " s");
    Drain();
  }
  if (!promotion_done_) return Status::Invalid("the promotion ended without an answer");
  const PromotionDone done = *promotion_done_;
  promotion_done_.reset();
  if (done.error != 0) return Status::Invalid("not promoted: " + done.message);
  if (md_failed_) return Status::Invalid("promoted, but writing the metadata failed (see the log)");
  return Status::Ok();
}

void ReplicatedDevice::OnPromoteRequest(uint64_t token) {
  replica_->PeerPromoteRequest(token);
  Drain();
}

void ReplicatedDevice::OnPromoteReply(const peer::PromoteReply& message) {
  replica_->PeerPromoteReply(message.token, message.granted, message.reason);
  Drain();
}

void ReplicatedDevice::OnDown(const std::string& reason) {
  replica_->PeerDown(reason);
  Drain();
}

void ReplicatedDevice::OnData(const peer::Data& head, std::span<uint8_t* const> chunks) {
  if ((head.flags & peer::kDataFlagReadReply) != 0) return DeliverReadReply(head, chunks);
  // The core bounds the frames in flight (max_buffers, this connection's only: PeerData drops
  // the peer beyond it); chunks bound the memory of plain writes.
  const uint64_t key = next_key_++;
  WriteKind kind = WriteKind::kData;
  if ((head.flags & peer::kDataFlagZeroes) != 0) kind = WriteKind::kZeroes;
  if ((head.flags & peer::kDataFlagTrim) != 0) kind = WriteKind::kTrim;
  received_.emplace(key, Received{head, std::vector<uint8_t*>(chunks.begin(), chunks.end())});
  const bool kept = replica_->PeerData(key, head.seq, head.offset_bytes, head.length_bytes, kind,
                                       (head.flags & peer::kDataFlagResync) != 0);
  if (!kept) {
    auto it = received_.find(key);
    // Refused at once, or applied and finished already: either way not ours to keep.
    if (it != received_.end()) {
      receive_pool_->Release(it->second.chunks);
      received_.erase(it);
    }
  }
  Drain();
}

void ReplicatedDevice::OnRecvAck(uint64_t seq) {
  replica_->PeerAck(AckKind::kReceived, seq, 0);
  Drain();
}

void ReplicatedDevice::OnWriteAck(uint64_t seq, int error) {
  replica_->PeerAck(AckKind::kWritten, seq, error);
  Drain();
}

void ReplicatedDevice::OnFlush(uint64_t seq) {
  replica_->PeerFlush(seq);
  Drain();
}

void ReplicatedDevice::OnFlushAck(uint64_t seq, int error) {
  replica_->PeerAck(AckKind::kFlushed, seq, error);
  Drain();
}

void ReplicatedDevice::OnState(const PeerState& peer) {
  replica_->PeerStateChanged(peer);
  Drain();
}

void ReplicatedDevice::OnOutOfSync(const peer::OutOfSync& message) {
  out_of_sync_runs_.clear();
  for (const auto& r : message.runs) out_of_sync_runs_.push_back({r.offset_bytes, r.length_bytes});
  replica_->PeerOutOfSync(out_of_sync_runs_, (message.flags & peer::kOutOfSyncFlagLast) != 0);
  Drain();
}

void ReplicatedDevice::OnSendDone(uint64_t cookie, bool sent) {
  if ((cookie & kReadReplyCookie) != 0) {
    FreePeerRead(cookie & ~kReadReplyCookie);
    Drain();  // the peer's next read may start
    return;
  }
  if ((cookie & kResyncCookie) != 0) {
    ResyncBuffer* b = FindResyncBuffer(cookie & ~kResyncCookie);
    REPLD_CHECK(b != nullptr && b->sending);
    b->sending = false;
    b->in_use = false;
    return;  // a resync frame completes on the peer's ack, not on the send
  }
  ClientSlot& slot = SlotOf(cookie);
  REPLD_CHECK(slot.sending);
  slot.sending = false;
  if (sent) replica_->PeerSent(slot.seq);
  if (slot.completed) finished_.push_back(slot.index);
  Drain();
}

// --- Resync, source side ---

ReplicatedDevice::ResyncBuffer& ReplicatedDevice::TakeResyncBuffer(uint64_t token,
                                                                   uint64_t offset_bytes,
                                                                   uint64_t length_bytes) {
  REPLD_CHECK(length_bytes <= resync_block_bytes_);
  ResyncBuffer* buffer = nullptr;
  for (ResyncBuffer& b : resync_buffers_) {
    if (!b.in_use) {
      buffer = &b;
      break;
    }
  }
  if (buffer == nullptr) {
    // Grows to the core's resync window plus the frames the link still holds, a huge page of
    // blocks at a time (two of 1 MiB), so that each block is one segment for the disk.
    const IoMemory& slab = resync_memory_.emplace_back(resync_block_bytes_);
    for (size_t at = 0; at + resync_block_bytes_ <= slab.size(); at += resync_block_bytes_) {
      resync_buffers_.emplace_back().data = slab.data() + at;
    }
    buffer = &resync_buffers_.back();
  }
  buffer->in_use = true;
  buffer->sending = false;
  buffer->token = token;
  buffer->offset_bytes = offset_bytes;
  buffer->iov = iovec{buffer->data, static_cast<size_t>(length_bytes)};
  return *buffer;
}

ReplicatedDevice::ResyncBuffer* ReplicatedDevice::FindResyncBuffer(uint64_t token) {
  for (ResyncBuffer& b : resync_buffers_) {
    if (b.in_use && b.token == token) return &b;
  }
  return nullptr;
}

void ReplicatedDevice::ExecuteResyncRead(const ResyncRead& a) {
  ResyncBuffer& buffer = TakeResyncBuffer(a.token, a.offset_bytes, a.length_bytes);
  buffer.want_digests = a.digests;
  SubmitAuxRead(AuxIo::Kind::kResyncRead, a.token, buffer.iov, a.offset_bytes, a.length_bytes);
}

void ReplicatedDevice::ExecuteSendCsums(const SendCsums& a) {
  ResyncBuffer* buffer = FindResyncBuffer(a.token);
  REPLD_CHECK(buffer != nullptr && buffer->want_digests);
  peer::Csums m;
  m.seq = a.seq;
  m.offset_bytes = buffer->offset_bytes;
  m.length_bytes = static_cast<uint32_t>(buffer->iov.iov_len);
  m.flags = a.verify ? peer::kCsumsFlagVerify : 0;
  m.digests = std::move(buffer->digests);
  link_->SendCsums(m);  // the frame owns its bytes: the buffer is free at once
  buffer->in_use = false;
}

// --- Digests from the peer: compare them with the local data ---

void ReplicatedDevice::OnCsums(const peer::Csums& message) {
  if (csum_work_.size() >= kCsumWorkMax) {
    link_->Drop("the peer has more than " + std::to_string(kCsumWorkMax) +
                    " digest frames waiting on this node",
                true);
    return;
  }
  const uint64_t key = next_key_++;
  csum_work_.emplace(
      key, CsumWork{message.offset_bytes, message.length_bytes, message.digests, nullptr});
  if (!replica_->PeerCsums(key, message.seq, message.offset_bytes, message.length_bytes,
                           (message.flags & peer::kCsumsFlagVerify) != 0)) {
    csum_work_.erase(key);
  }
  Drain();
}

void ReplicatedDevice::ExecuteCompareCsums(const CompareCsums& a) {
  CsumWork& work = csum_work_.at(a.key);
  // At most kCsumWorkMax of these at once; sized to the range (resync blocks: 1 MiB).
  const size_t bytes =
      (work.length_bytes + kDigestGrainBytes - 1) / kDigestGrainBytes * kDigestGrainBytes;
  work.buffer = static_cast<uint8_t*>(std::aligned_alloc(BufferPool::kAlignBytes, bytes));
  REPLD_CHECK(work.buffer != nullptr);
  SubmitAuxRead(AuxIo::Kind::kCsumRead, a.key, iovec{work.buffer, work.length_bytes},
                work.offset_bytes, work.length_bytes);
}

// The 4 KiB blocks whose digests differ, as runs; the core answers the peer.
void ReplicatedDevice::FinishCompareCsums(uint64_t key, int error) {
  auto it = csum_work_.find(key);
  REPLD_CHECK(it != csum_work_.end());
  CsumWork& work = it->second;
  std::vector<OutOfSyncRun> differing;
  if (error == 0) {
    std::vector<uint64_t> mine;
    AppendBlockDigests(std::span<const uint8_t>(work.buffer, work.length_bytes), digest_kind_,
                       mine);
    REPLD_CHECK(mine.size() == work.digests.size());  // checked by Csums::Decode
    for (size_t i = 0; i < mine.size(); ++i) {
      if (mine[i] == work.digests[i]) continue;
      const uint64_t offset = work.offset_bytes + i * kDigestGrainBytes;
      const uint64_t length =
          std::min<uint64_t>(kDigestGrainBytes, work.offset_bytes + work.length_bytes - offset);
      if (!differing.empty() &&
          differing.back().offset_bytes + differing.back().length_bytes == offset) {
        differing.back().length_bytes += length;
      } else {
        differing.push_back({offset, length});
      }
    }
  }
  std::free(work.buffer);
  csum_work_.erase(it);
  replica_->CsumsCompared(key, differing, error);
}

void ReplicatedDevice::OnCsumReply(const peer::CsumReply& message) {
  std::vector<OutOfSyncRun> differing;
  for (const auto& r : message.differing) differing.push_back({r.offset_bytes, r.length_bytes});
  replica_->PeerCsumReply(message.seq, differing, message.error);
  Drain();
}

void ReplicatedDevice::ExecuteSendResync(const SendResync& a) {
  ResyncBuffer* buffer = FindResyncBuffer(a.token);
  REPLD_CHECK(buffer != nullptr);
  peer::Data head;
  head.seq = a.seq;
  head.offset_bytes = buffer->offset_bytes;
  head.length_bytes = static_cast<uint32_t>(buffer->iov.iov_len);
  head.flags = peer::kDataFlagResync;
  buffer->sending =
      link_->SendData(head, std::span<const iovec>(&buffer->iov, 1), a.token | kResyncCookie);
}

}  // namespace repld
