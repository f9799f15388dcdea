#!/usr/bin/python3
"""Fast failback with two real daemons: beta falls behind (alpha writes while beta is down),
alpha steps down while the resync to beta is paused, and beta is promoted as the sync target.
An NBD client on beta must then read exactly alpha's data (the blocks beta lacks come from
alpha, the others from beta's own disk), and its writes, unaligned ones across blocks not yet
synced included, must read back and end on both disks. If alpha dies meanwhile, beta's reads of
blocks it lacks and its writes fail with EIO (no stale data, no write that only beta has), its
reads of synced blocks still work, and when alpha is back the resync finishes and both disks are
identical, byte for byte, to what the client was acknowledged."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402

# What alpha writes while beta is down: beta lacks exactly these.
BEHIND = [(2 * MiB, 1 * MiB), (9 * MiB + 4096, 20 * 1024), (30 * MiB, 3 * MiB)]
# What the client writes on the promoted beta: across a block it lacks, unaligned (512-byte),
# and in a region it has.
FAILBACK_WRITES = [(2 * MiB + 1536, 10 * 1024), (9 * MiB + 512, 8192), (40 * MiB, 64 * 1024)]


def write_regions(pair: Pair, node: str, regions, expected: bytearray) -> None:
    """Random data at each (offset, length) through `node`'s NBD export, flushed; `expected`
    follows."""
    h = harness.open_nbd(pair.socket[node], pair.resource)
    try:
        for offset, length in regions:
            data = os.urandom(length)
            expected[offset:offset + length] = data
            h.pwrite(data, offset)
        h.flush()
    finally:
        harness.close_nbd(h)


class FastFailbackTest(harness.ReplTestCase):

    def behind_pair(self) -> tuple[Pair, bytearray]:
        """alpha Secondary and UpToDate, beta Secondary and SyncTarget of a paused resync that
        lacks BEHIND; returns the data both must end with."""
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        size = pair.data_bytes("alpha")
        expected = bytearray(size)
        write_regions(pair, "alpha", [(o, min(4 * MiB, size - o)) for o in range(0, size, 4 * MiB)],
                      expected)
        pair.wait_in_sync()
        self.assertEqual(pair.daemon["beta"].stop(), 0, pair.log_tails())
        write_regions(pair, "alpha", BEHIND, expected)
        cp = pair.replctl("alpha", "pause-sync")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        cp = pair.replctl("alpha", "secondary")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.start("beta")
        pair.wait_status("beta", lambda s: s["replication"] == "SyncTarget"
                         and s["peer"]["role"] == "Secondary", 30, "SyncTarget of a Secondary")
        return pair, expected

    def read_all(self, pair: Pair, node: str, size: int) -> bytes:
        h = harness.open_nbd(pair.socket[node], pair.resource)
        try:
            return b"".join(h.pread(min(4 * MiB, size - o), o) for o in range(0, size, 4 * MiB))
        finally:
            harness.close_nbd(h)

    def test_the_promoted_target_serves_the_peers_data_and_writes_to_both(self):
        pair, expected = self.behind_pair()
        size = len(expected)
        cp = pair.replctl("beta", "primary", "--force")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("Without --force it becomes Primary at once", cp.stderr)
        cp = pair.replctl("beta", "primary")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        st = pair.status("beta")
        self.assertEqual((st["role"], st["disk"], st["replication"]),
                         ("Primary", "Inconsistent", "SyncTarget"))
        lacking = st["out_of_sync_bytes"]
        self.assertGreaterEqual(lacking, sum(length for _, length in BEHIND))
        self.assertLess(lacking, 8 * MiB)

        self.assertEqual(self.read_all(pair, "beta", size), bytes(expected),
                         "the promoted sync target did not read the peer's data")
        # A read touching a block beta lacks goes to alpha whole; the others stay local: of the
        # 4 MiB reads, those at 0, 8, 28 and 32 MiB.
        counters = pair.status("beta")["counters"]
        self.assertEqual(counters["peer_read_bytes"], 4 * 4 * MiB,
                         "reads of blocks in sync here went to the peer, or the reverse")

        write_regions(pair, "beta", FAILBACK_WRITES, expected)
        h = harness.open_nbd(pair.socket["beta"], pair.resource)
        try:
            for offset, length in FAILBACK_WRITES:
                self.assertEqual(h.pread(length + 8192, offset - 4096),
                                 bytes(expected[offset - 4096:offset + length + 4096]))
        finally:
            harness.close_nbd(h)

        cp = pair.replctl("alpha", "resume-sync")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_in_sync(timeout=60)
        self.assertEqual(pair.status("beta")["role"], "Primary")
        self.assertEqual(self.read_all(pair, "beta", size), bytes(expected))
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        for n in Pair.NODES:
            self.assertEqual(pair.read_disk(n, 0, size), bytes(expected), f"{n}'s disk")

    def test_without_its_peer_the_promoted_target_fails_what_it_cannot_serve(self):
        pair, expected = self.behind_pair()
        size = len(expected)
        cp = pair.replctl("beta", "primary")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        h = harness.open_nbd(pair.socket["beta"], pair.resource)
        try:
            pair.daemon["alpha"].kill9()
            pair.wait_status("beta", lambda s: s["connection"] != "Connected", 15, "peer lost")
            nbd = harness.nbd_module()
            offset, length = BEHIND[0]
            with self.assertRaises(nbd.Error) as lacking:
                h.pread(4096, offset)
            self.assertIn("Input/output error", str(lacking.exception))
            with self.assertRaises(nbd.Error):
                h.pwrite(os.urandom(4096), 48 * MiB)
            self.assertEqual(h.pread(4096, 48 * MiB), bytes(expected[48 * MiB:48 * MiB + 4096]),
                             "a block in sync here must still read")
        finally:
            harness.close_nbd(h)
        self.assertEqual(pair.status("beta")["role"], "Primary")

        pair.start("alpha")  # its pause-sync is not kept: the resync runs
        pair.wait_in_sync(timeout=60)
        self.assertEqual(self.read_all(pair, "beta", size), bytes(expected))
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        for n in Pair.NODES:
            self.assertEqual(pair.read_disk(n, 0, size), bytes(expected), f"{n}'s disk")


if __name__ == "__main__":
    harness.run_main()
