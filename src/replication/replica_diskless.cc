// A Primary whose disk fails under [disk] on_io_error = "detach" (docs/replication.md, "When the
// disk fails"): the disk is Failed, recorded in its metadata where it still takes a write, and
// the Primary goes on Diskless, serving through its connected UpToDate peer as a fast-failback
// Primary does: reads are ReadRequests, writes go to the peer only and complete when the peer
// has written them, flushes when the peer's flush does. Without such a peer it cannot serve:
// the request that failed gets the error, and so does every later one (no silent loss).
#include "common/status.h"
#include "replication/replica.h"

namespace repld {

bool Replica::PrimaryDiskFailed(const std::string& what, int error) {
  if (!HasDisk()) return PeerCanServe();  // failed already: the I/O in flight may fail too
  const std::string failed = "the disk failed " + what + ": error " + std::to_string(error) + " (" +
                             ErrnoText(error) + ")";
  if (!disk_failure_ || disk_failure_->error == 0) disk_failure_ = DiskFailure{what, error};
  md_.io_error = true;
  Emit(PersistBitmap{});        // where the disk still takes a write
  SetDisk(DiskState::kFailed);  // and the superblock, with the io_error flag
  Emit(DiskFailed{*disk_failure_, true, true});
  // Marks of an in-sync Primary are writes the peer lacks (it failed them): only our disk had
  // them, so serving from the peer would return or flush over stale data. A fast-failback
  // Primary's marks are the opposite (blocks only the peer has).
  const bool serves =
      PeerCanServe() && (repl_ == ReplState::kSyncTarget || bitmap_.CountSet() == 0);
  Emit(Log{2, failed + "; on_io_error = detach: detaching it. " +
                  (serves ? std::string("This Primary is Diskless and serves through its peer "
                                        "until 'replctl attach'")
                          : std::string("No UpToDate peer is connected: this Primary is "
                                        "Diskless and cannot serve until 'replctl attach'"))});
  Info("disk Failed -> Diskless");
  md_.disk = DiskState::kDiskless;
  // A fast-failback Primary was the resync's target: that disk is gone, and with it the resync
  // (the peer stops when our State says Diskless). Its bitmap is no use without a disk.
  if (repl_ == ReplState::kSyncTarget) repl_ = ReplState::kEstablished;
  bitmap_complete_ = false;
  if (Connected() && !serves) {
    // The peer has no good copy of everything either: the writes it holds for us must not
    // complete as if they were safe. They fail with EIO as the link goes.
    Emit(DropPeer{"node '" + options_.node_name + "': " + failed +
                      "; its Primary has no disk and the peer is not UpToDate",
                  false});
  } else if (Connected()) {
    Emit(SendState{LocalState()});
  }
  // Writes waiting for the activity log start now without it: there is no log to write.
  PumpWrites();
  return serves;
}

void Replica::MetadataWriteFailed(const std::string& what, int error) {
  if (!HasDisk()) return;
  if (role_ != Role::kPrimary) return LocalDiskFailed(what, error, /*metadata=*/true);
  // A Primary under pass_on keeps its disk; the caller refuses further metadata changes.
  if (PrimaryDetaches()) PrimaryDiskFailed(what, error);
}

}  // namespace repld
