#include "replication/md_state.h"

namespace repld {

MdState MdStateFromSuperblock(const Superblock& sb) {
  MdState md;
  md.ids.current = sb.current_uuid;
  md.ids.bitmap = sb.bitmap_uuid;
  md.ids.history[0] = sb.history_uuid[0];
  md.ids.history[1] = sb.history_uuid[1];
  md.io_error = (sb.flags & kMdIoError) != 0;
  const bool consistent =
      (sb.flags & kMdConsistent) != 0 && (sb.flags & kMdFullSync) == 0 && !md.io_error;
  if (!consistent) {
    md.disk = DiskState::kInconsistent;
  } else if ((sb.flags & kMdWasUpToDate) != 0) {
    md.disk = DiskState::kUpToDate;
  } else {
    md.disk = DiskState::kOutdated;
  }
  md.primary = (sb.flags & (kMdWasPrimary | kMdCrashedPrimary)) != 0;
  md.peer_outdated = (sb.flags & kMdPeerOutdated) != 0;
  md.primary_at_split = (sb.flags & kMdPrimaryAtSplit) != 0;
  return md;
}

Superblock WithMdState(Superblock sb, const MdState& md) {
  sb.current_uuid = md.ids.current;
  sb.bitmap_uuid = md.ids.bitmap;
  sb.history_uuid = {md.ids.history[0], md.ids.history[1]};
  uint32_t flags = sb.flags & ~(kMdConsistent | kMdWasUpToDate | kMdWasPrimary | kMdCrashedPrimary |
                                kMdPeerOutdated | kMdAlClean | kMdPrimaryAtSplit | kMdIoError);
  if (md.disk == DiskState::kUpToDate || md.disk == DiskState::kOutdated) {
    flags |= kMdConsistent;
    flags &= ~kMdFullSync;
  }
  if (md.disk == DiskState::kUpToDate) flags |= kMdWasUpToDate;
  flags |= md.primary ? (kMdWasPrimary | kMdCrashedPrimary) : kMdAlClean;
  if (md.peer_outdated) flags |= kMdPeerOutdated;
  // A Failed disk is neither Consistent nor WasUpToDate (above): read back, it is Inconsistent.
  if (md.io_error) flags |= kMdIoError;
  if (md.primary_at_split && md.ids.bitmap != 0) flags |= kMdPrimaryAtSplit;
  sb.flags = flags;
  return sb;
}

}  // namespace repld
