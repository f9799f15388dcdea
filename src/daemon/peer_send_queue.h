// What the peer link still has to send, in order. Small frames (acks, Flush, State, Ping) are
// stored whole in their entry; a Data frame is its 48 header bytes plus copies of the caller's
// iovecs (the data itself stays in the caller's buffers until OnSendDone); a large control frame
// (OutOfSync) is a buffer the entry shares the ownership of. All live in rings
// that only allocate when they grow past their high-water mark, so a steady stream of frames
// allocates nothing.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <asio/buffer.hpp>
#include <bit>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/check.h"
#include "replication/peer_proto.h"

namespace repld {

// A FIFO in a power-of-two array that doubles when full.
template <typename T>
class FifoRing {
 public:
  explicit FifoRing(size_t capacity) : slots_(std::bit_ceil(std::max<size_t>(capacity, 2))) {}

  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }
  T& front() {
    REPLD_CHECK(count_ > 0);
    return slots_[head_];
  }
  void push_back(const T& value) {
    if (count_ == slots_.size()) Grow();
    slots_[(head_ + count_) & (slots_.size() - 1)] = value;
    ++count_;
  }
  void pop_front() {
    REPLD_CHECK(count_ > 0);
    head_ = (head_ + 1) & (slots_.size() - 1);
    --count_;
  }

 private:
  void Grow() {
    std::vector<T> bigger(slots_.size() * 2);
    for (size_t i = 0; i < count_; ++i) bigger[i] = slots_[(head_ + i) & (slots_.size() - 1)];
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  size_t head_ = 0;
  size_t count_ = 0;
};

class PeerSendQueue {
 public:
  // The largest small frame is a State; a Data frame's header and head are smaller.
  static constexpr size_t kFrameBytesMax = peer::kFrameHeaderBytes + peer::State::kBytes;
  static_assert(peer::kFrameHeaderBytes + peer::Data::kHeadBytes <= kFrameBytesMax);
  static_assert(peer::kFrameHeaderBytes + peer::WriteAck::kBytes <= kFrameBytesMax);

  struct Frame {
    std::array<uint8_t, kFrameBytesMax> bytes{};
    uint16_t bytes_count = 0;
    bool is_data = false;
    uint32_t iov_count = 0;   // data pieces that follow `bytes` (Data only)
    uint64_t cookie = 0;      // the SendData cookie (Data only)
    uint64_t wire_bytes = 0;  // bytes plus data: what the frame puts on the wire
    std::shared_ptr<const std::vector<uint8_t>> owned;  // a large frame, whole (then no bytes)
  };

  PeerSendQueue(size_t frames_reserve, size_t iovs_reserve)
      : frames_(frames_reserve), iovs_(iovs_reserve) {}

  bool empty() const { return frames_.empty(); }
  size_t size() const { return frames_.size(); }

  void PushSmall(std::span<const uint8_t> frame) { frames_.push_back(MakeFrame(frame)); }

  void PushLarge(std::vector<uint8_t> frame) {
    Frame f;
    f.wire_bytes = frame.size();
    f.owned = std::make_shared<const std::vector<uint8_t>>(std::move(frame));
    frames_.push_back(f);
  }

  void PushData(std::span<const uint8_t> header_and_head, std::span<const iovec> data,
                uint64_t cookie) {
    Frame f = MakeFrame(header_and_head);
    f.is_data = true;
    f.cookie = cookie;
    for (const iovec& piece : data) {
      if (piece.iov_len == 0) continue;
      iovs_.push_back(piece);
      ++f.iov_count;
      f.wire_bytes += piece.iov_len;
    }
    frames_.push_back(f);
  }

  // Moves the first frame into `out` (whose address must stay put until the write is done) and
  // appends what goes on the wire for it to `gather`: out.bytes, then its data pieces.
  void PopInto(Frame& out, std::vector<asio::const_buffer>& gather) {
    out = frames_.front();
    frames_.front().owned.reset();  // the ring's slot keeps no large frame alive
    frames_.pop_front();
    if (out.owned) {
      gather.emplace_back(out.owned->data(), out.owned->size());
    } else {
      gather.emplace_back(out.bytes.data(), out.bytes_count);
    }
    for (uint32_t i = 0; i < out.iov_count; ++i) {
      gather.emplace_back(iovs_.front().iov_base, iovs_.front().iov_len);
      iovs_.pop_front();
    }
  }

  // Removes the first frame unsent; a Data frame's cookie is the caller's to report.
  Frame PopUnsent() {
    Frame f = frames_.front();
    frames_.front().owned.reset();
    frames_.pop_front();
    for (uint32_t i = 0; i < f.iov_count; ++i) iovs_.pop_front();
    return f;
  }

 private:
  static Frame MakeFrame(std::span<const uint8_t> bytes) {
    Frame f;
    REPLD_CHECK(bytes.size() <= f.bytes.size());
    std::copy(bytes.begin(), bytes.end(), f.bytes.begin());
    f.bytes_count = static_cast<uint16_t>(bytes.size());
    f.wire_bytes = bytes.size();
    return f;
  }

  FifoRing<Frame> frames_;
  FifoRing<iovec> iovs_;
};

}  // namespace repld
