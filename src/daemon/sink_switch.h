// The frontends' sink of a replicated resource: the ReplicatedDevice, or none while the node's
// disk is detached (replctl detach). Then a request fails with EIO; none should come, since a
// detached node is Secondary and a Secondary admits no client and has no /dev/ublkbN.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <cerrno>

#include "blockdev/backing_store.h"
#include "blockdev/block_sink.h"

namespace repld {

class SinkSwitch final : public BlockSink {
 public:
  explicit SinkSwitch(asio::io_context& io) : io_(io) {}
  void set(BlockSink* target) { target_ = target; }
  void Submit(DiskIo* io) override {
    if (target_ != nullptr) return target_->Submit(io);
    asio::post(io_, [io] { io->done(io, EIO); });  // never from inside Submit
  }

 private:
  asio::io_context& io_;
  BlockSink* target_ = nullptr;
};

}  // namespace repld
