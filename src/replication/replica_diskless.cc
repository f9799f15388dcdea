// A Primary whose disk fails under [disk] on_io_error = "detach" (docs/replication.md, "When the
// disk fails"): the disk is Failed, recorded in its metadata where it still takes a write, and
// the Primary goes on Diskless, serving through its connected UpToDate peer as a fast-failback
// Primary does: reads are ReadRequests, writes go to the peer only and complete when the peer
// has written them, flushes when the peer's flush does. Without such a peer it cannot serve:
// the request that failed gets the error, and so does every later one (no silent loss).
//
// Its peer then holds the only good copy, and the failed disk may come back later (a restart,
// an attach of the same disk) still claiming UpToDate on the old generation, if the disk failed
// the superblock write that recorded its failure too. So the peer starts a new data generation
// before it writes anything for the diskless Primary, and marks every block it writes for it:
// the old disk then meets a peer whose bitmap id is its current id (rule 40), becomes the sync
// target of those blocks (and of its own activity log's), and is never taken for current.
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
    Emit(DropPeer{"node '" + options_.node_name + "': " + failed + "; its Primary has no disk " +
                      (PeerCanServe() ? std::string("and blocks differ between the two disks (writes "
                                                    "that failed on one side): the peer cannot "
                                                    "serve them")
                                      : std::string("and the peer is not UpToDate")),
                  false});
    standalone_ = true;  // StandAlone: 'replctl connect' connects it again
  } else if (Connected()) {
    // With the ids its old disk has: the peer moves its own on if they are the same.
    Emit(SendState{LocalState()});
    FollowPeerGeneration(*peer_);  // its data is the peer's from now on
  }
  // Writes waiting for the activity log start now without it: there is no log to write.
  PumpWrites();
  return serves;
}

// --- The peer of a diskless Primary ---

bool Replica::PeerIsDisklessPrimary() const {
  return Connected() && peer_ && peer_->role == Role::kPrimary &&
         (peer_->disk == DiskState::kDiskless || peer_->disk == DiskState::kFailed);
}

bool Replica::NewGenerationForDisklessPeer() {
  if (!PeerIsDisklessPrimary()) {
    if (Connected() && peer_ && peer_->disk != DiskState::kDiskless &&
        peer_->disk != DiskState::kFailed) {
      diskless_peer_current_ = 0;  // a disk that may take our id, and fail in turn
    }
    return false;
  }
  // Only an UpToDate Secondary serves a diskless Primary (PeerCanServe there).
  if (role_ != Role::kSecondary || md_.disk != DiskState::kUpToDate || md_.ids.current == 0) {
    return false;
  }
  // The old disk may claim the id the Primary had when it failed. If that is not ours, our data
  // has moved on from it already (a fast-failback Primary, still on the generation it was being
  // synced from: our bitmap id or history names it); and an id we drew for a diskless Primary
  // is one its old disk never had.
  if (md_.ids.current == diskless_peer_current_) return false;
  if (peer_->ids.current != md_.ids.current) {
    diskless_peer_current_ = md_.ids.current;  // when it follows ours, no new one is needed
    return false;
  }
  // As a Primary that loses its peer: the bitmap records what changes from here, and names the
  // generation it changes from. An older bitmap id stays: the bitmap then covers more.
  if (md_.ids.bitmap == 0) {
    md_.ids.bitmap = md_.ids.current;
    md_.primary_at_split = false;  // this node is not Primary
  }
  NewCurrentId();
  diskless_peer_current_ = md_.ids.current;
  // Durable before the first of the Primary's writes is applied (and so acknowledged): the
  // caller carries out PersistMd synchronously, before any later action.
  Emit(PersistBitmap{});
  PersistMdNow();
  Warn(
      "the Primary's disk failed and it writes through this node, whose disk holds the only "
      "copy: a new data generation starts here, and the blocks it writes are marked for its "
      "next disk");
  return true;
}

void Replica::MarkForDisklessPeer(uint64_t offset, uint64_t length) {
  if (NewGenerationForDisklessPeer()) Emit(SendState{LocalState()});
  const uint64_t set_before = bitmap_.CountSet();
  bitmap_.SetRange(offset, length);
  // On disk before the write lands: a crash of this node must not lose the record that the
  // Primary's old disk lacks the block.
  if (bitmap_.CountSet() != set_before) Emit(PersistBitmap{});
}

void Replica::FollowPeerGeneration(const PeerState& peer) {
  if (peer.disk != DiskState::kUpToDate || peer.ids == md_.ids) return;
  md_.ids = peer.ids;  // in memory only: there is no metadata to write
  md_.primary_at_split = false;
  Info("this node serves its peer's data: it takes the peer's generation identifiers");
}

void Replica::MetadataWriteFailed(const std::string& what, int error) {
  if (!HasDisk()) return;
  if (role_ != Role::kPrimary) return LocalDiskFailed(what, error, /*metadata=*/true);
  // A Primary under pass_on keeps its disk; the caller refuses further metadata changes. (DRBD
  // detaches it. Here a pass_on Primary whose own failed writes marked blocks could not serve
  // through its peer, and dropping the peer would lose the acknowledged writes still in flight
  // to it under protocols A and B: docs/replication.md, "When the disk fails".)
  if (PrimaryDetaches()) PrimaryDiskFailed(what, error);
}

}  // namespace repld
