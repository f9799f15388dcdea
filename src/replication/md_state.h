// The replication core's view of the metadata (MdState) and the superblock's fields, both ways.
// The superblock keeps more than the core needs (layout, names, creation time): those are kept
// as read, and only the generation identifiers and the state flags follow the core.
#pragma once

#include "replication/md_format.h"
#include "replication/replica.h"

namespace repld {

// Disk state from the flags: FullSync or not Consistent -> Inconsistent; Consistent and
// WasUpToDate -> UpToDate; Consistent only -> Outdated; IoError (the disk failed an I/O) ->
// Inconsistent, whatever the other flags say. A node that was Primary (WasPrimary or
// CrashedPrimary still set at start) did not stop cleanly.
MdState MdStateFromSuperblock(const Superblock& sb);

// `sb` with the core's state written into it: the generation identifiers, Consistent /
// WasUpToDate from the disk state, WasPrimary and CrashedPrimary while Primary (a crash leaves
// them set), AlClean when not, PeerOutdated. FullSync is cleared once the disk is Consistent.
Superblock WithMdState(Superblock sb, const MdState& md);

}  // namespace repld
