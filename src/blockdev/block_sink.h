// Where a frontend's block requests go: the local disk (BackingStore) for a resource served
// alone, or the ReplicatedDevice, which runs each request through the replication core.
// Frontends (NBD today, ublk later) see one interface whatever is behind it.
#pragma once

namespace repld {

struct DiskIo;

class BlockSink {
 public:
  virtual ~BlockSink() = default;
  // Starts the request (see DiskIo in backing_store.h); io->done runs on the loop thread when
  // it finished or failed, never from inside Submit. The request is validated by the caller.
  virtual void Submit(DiskIo* io) = 0;
};

}  // namespace repld
