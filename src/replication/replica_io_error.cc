// What a node does when its backing disk fails a write or a flush: [disk] on_io_error
// (docs/replication.md, "When the disk fails"). A Secondary never stays UpToDate over a disk that
// lost the Primary's writes: "detach" marks it Failed and has the caller detach it (Diskless
// until 'replctl attach'); "pass_on" has already sent the error to the Primary, marks the disk
// Inconsistent and reconnects, so that the handshake resyncs it from the Primary.
#include "common/status.h"
#include "replication/replica.h"

namespace repld {

void Replica::LocalDiskFailed(const std::string& what, int error, bool metadata) {
  // A Primary's failed writes go back to its clients, and their blocks are marked (LocalWriteDone).
  if (role_ == Role::kPrimary) return;
  // Detaching already: the I/O still in flight may fail too.
  if (md_.disk == DiskState::kFailed || md_.disk == DiskState::kDiskless) return;
  const std::string failed = "the disk failed " + what + ": error " + std::to_string(error) + " (" +
                             ErrnoText(error) + ")";
  if (!disk_failure_ || disk_failure_->error == 0) disk_failure_ = DiskFailure{what, error};
  md_.io_error = true;
  Emit(PersistBitmap{});  // the marked blocks, where the disk still takes a write
  if (options_.on_io_error == OnIoError::kDetach || metadata) {
    Emit(Log{2, failed +
                    (metadata ? std::string("; a metadata failure detaches under either on_io_error")
                              : std::string("; on_io_error = detach")) +
                    ": detaching it. This node is Diskless until 'replctl attach' and is not "
                    "promoted with this disk"});
    SetDisk(DiskState::kFailed);
    Emit(DiskFailed{*disk_failure_, true});
    return;
  }
  if (md_.disk != DiskState::kInconsistent) {
    SetDisk(DiskState::kInconsistent);
  } else {
    PersistMdNow();  // the io_error flag
  }
  Emit(DiskFailed{DiskFailure{what, error}, false});
  if (!Connected() || pass_on_drop_epoch_ == epoch_) return;  // one reconnect per connection
  pass_on_drop_epoch_ = epoch_;
  Emit(Log{2, failed + "; on_io_error = pass_on: the Primary gets the error; this disk is "
                       "Inconsistent until a resync from the peer repairs it: reconnecting"});
  // At the next Tick, not now: a connection dropped at once loses the error acks still queued
  // on it, and the Primary would not hear of the error (only of writes left unconfirmed).
  pass_on_drop_reason_ = "node '" + options_.node_name + "': " + failed +
                         " (on_io_error = pass_on): reconnecting to resync it";
}

void Replica::DiskSyncFailed(const std::string& what, int error) {
  if (!HasDisk()) return;
  const std::string failed = "the disk failed " + what + ": error " + std::to_string(error) +
                             " (" + ErrnoText(error) + ")";
  if (role_ != Role::kPrimary) {
    LocalDiskFailed(what, error);
  } else if (PrimaryDetaches()) {
    PrimaryDiskFailed(what, error);
  } else {
    Warn(failed + "; on_io_error = pass_on: this Primary keeps its disk");
  }
  // A source whose disk may not hold what it sends must not let the target's confirmations
  // clear its marks: the resync stops now (its blocks in flight with it), and the next
  // connection decides again from the disk's state, flushing first once more.
  if (Connected() && repl_ == ReplState::kSyncSource) {
    Emit(DropPeer{"node '" + options_.node_name + "': " + failed +
                      " before a resync from it: the resync stops; connecting again",
                  true});
  }
}

void Replica::PassOnReconnect() {
  if (!pass_on_drop_reason_) return;
  std::string reason = std::move(*pass_on_drop_reason_);
  pass_on_drop_reason_.reset();
  // Only the connection the failure happened on: a later one started after it.
  if (Connected() && pass_on_drop_epoch_ == epoch_) Emit(DropPeer{std::move(reason), true});
}

}  // namespace repld
