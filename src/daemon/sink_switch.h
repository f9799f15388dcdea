// The frontends' sink of a replicated resource: the ReplicatedDevice, or none while the node's
// disk is detached (replctl detach). Then a request fails with EIO; none should come, since a
// detached node is Secondary and a Secondary admits no client and has no /dev/ublkbN.
//
// While a diskless Primary takes a disk again (resource_attach_primary.cc) the switch holds
// every request until Release: at most `max` of them, the frontends' bound on requests in
// flight (ReplicatedDevice::Options::requests_max), so holding needs no backpressure of its own.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <cerrno>
#include <cstddef>
#include <deque>
#include <utility>

#include "common/check.h"

#include "blockdev/backing_store.h"
#include "blockdev/block_sink.h"

namespace repld {

class SinkSwitch final : public BlockSink {
 public:
  explicit SinkSwitch(asio::io_context& io) : io_(io) {}
  void set(BlockSink* target) { target_ = target; }
  void Submit(DiskIo* io) override {
    if (holding_) {
      REPLD_CHECK(held_.size() < held_max_);
      held_.push_back(io);
      return;
    }
    if (target_ != nullptr) return target_->Submit(io);
    asio::post(io_, [io] { io->done(io, EIO); });  // never from inside Submit
  }
  // Holds every request from now on, until Release.
  void Hold(size_t max) {
    holding_ = true;
    held_max_ = max;
  }
  bool holding() const { return holding_; }
  size_t held() const { return held_.size(); }
  // Ends the hold: `target` serves from now on, and the held requests go to it in the order
  // they came (with none, they fail with EIO), after this call returns.
  void Release(BlockSink* target) {
    holding_ = false;
    target_ = target;
    std::deque<DiskIo*> held;
    held.swap(held_);
    asio::post(io_, [this, held = std::move(held)] {
      for (DiskIo* io : held) Submit(io);
    });
  }

 private:
  asio::io_context& io_;
  BlockSink* target_ = nullptr;
  bool holding_ = false;
  size_t held_max_ = 0;
  std::deque<DiskIo*> held_;
};

}  // namespace repld
