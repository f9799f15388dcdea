// What a diskless Primary's device holds in place of the failed disk and metadata it let go of
// (ReplicatedDevice::ReleaseDisk): the disk's geometry, for messages, and an EIO for any use. The
// replica of a diskless Primary submits no disk I/O and writes no metadata, so none should come.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <cerrno>
#include <string>

#include "blockdev/backing_store.h"
#include "blockdev/md_device.h"

namespace repld {

class ReleasedDisk final : public DiskSink, public MetadataStore {
 public:
  ReleasedDisk(asio::io_context& io, const BackingInfo& info, std::string md_path)
      : io_(io), info_(info), md_path_(std::move(md_path)) {}

  const BackingInfo& info() const override { return info_; }
  void Submit(DiskIo* io) override {
    asio::post(io_, [io] { io->done(io, EIO); });  // never from inside Submit
  }
  Status SyncNow() override { return Released(); }

  const std::string& md_path() const override { return md_path_; }
  Result<MdProbe> Probe() const override { return Released(); }
  Result<MdContents> Read() override { return Released(); }
  Status WriteSuperblock(const Superblock&) override { return Released(); }
  Status WriteAlTransaction(const AlTransaction&) override { return Released(); }
  Status WriteBitmapPages(const Bitmap&, std::span<const uint64_t>) override {
    return Released();
  }

 private:
  static Status Released() {
    return Status::Error(EIO, "the failed disk was released (replctl attach takes a disk again)");
  }
  asio::io_context& io_;
  BackingInfo info_;
  std::string md_path_;
};

}  // namespace repld
