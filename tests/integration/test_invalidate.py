#!/usr/bin/python3
"""replctl invalidate and invalidate-remote with two real daemons.

One node's disk is damaged behind the daemon's back (its bitmap knows nothing of it, so only a
full sync can repair it); invalidating that node's data must end with both data areas identical
byte for byte, while the Primary keeps serving. Refusals name what is wrong and what to do."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402

DAMAGE = [(1 * MiB, 64 * 1024), (20 * MiB + 4096, 4096), (40 * MiB, 1 * MiB)]


def fill(pair: Pair, node: str, size: int) -> None:
    h = harness.open_nbd(pair.socket[node], pair.resource)
    try:
        for offset in range(0, size, 4 * MiB):
            h.pwrite(os.urandom(min(4 * MiB, size - offset)), offset)
        h.flush()
    finally:
        harness.close_nbd(h)


def damage(path: str) -> None:
    """Garbage written to the backing file directly: the daemon cannot know."""
    with open(path, "r+b") as f:
        for offset, length in DAMAGE:
            f.seek(offset)
            f.write(os.urandom(length))
        f.flush()
        os.fsync(f.fileno())


def damaged_pair(**kwargs) -> Pair:
    """A pair in sync on random data, then beta's disk damaged behind its daemon's back."""
    pair = Pair(disk_size=64 * MiB, **kwargs)
    pair.up_primary("alpha")
    fill(pair, "alpha", pair.data_bytes("alpha"))
    pair.wait_in_sync()
    damage(pair.disk["beta"])
    return pair


class InvalidateTest(harness.ReplTestCase):

    def check_repaired(self, pair: Pair, target: str, rule: str) -> None:
        size = pair.data_bytes("alpha")
        # First the reconnect that decided the full sync (until then the old state still shows
        # in sync), then its end.
        pair.wait_status(target, lambda s: s["connection"] == "Connected"
                         and (s["sync_decision"] or "").startswith(rule), 30, f"{rule}decision")
        pair.wait_in_sync(timeout=120)
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size),
                         f"{target}'s damage survived the full sync")

    def test_invalidate_repairs_a_damaged_secondary(self):
        pair = damaged_pair()

        cp = pair.replctl("alpha", "invalidate")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("this node is Primary", cp.stderr)
        self.assertIn("invalidate-remote", cp.stderr)

        cp = pair.replctl("beta", "invalidate")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("full sync from the peer", cp.stdout)
        # The Primary keeps serving while beta is rebuilt.
        h = harness.open_nbd(pair.socket["alpha"], pair.resource)
        try:
            data = os.urandom(1 * MiB)
            h.pwrite(data, 30 * MiB)
            h.flush()
            self.assertEqual(h.pread(len(data), 30 * MiB), data)
        finally:
            harness.close_nbd(h)
        self.check_repaired(pair, "beta", "rule 30: ")

    def test_invalidate_remote_repairs_the_peer_from_the_primary(self):
        pair = damaged_pair()

        cp = pair.replctl("beta", "invalidate-remote")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("the peer is Primary", cp.stderr)

        cp = pair.replctl("alpha", "invalidate-remote")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("full sync to it", cp.stdout)
        self.check_repaired(pair, "alpha", "rule 50: ")

    def test_invalidate_needs_a_connected_peer(self):
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())
        pair.wait_status("beta", lambda s: s["connection"] != "Connected", 15, "peer lost")
        cp = pair.replctl("beta", "invalidate")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("not connected", cp.stderr)
        self.assertEqual(pair.status("beta")["disk"], "UpToDate", "a refused invalidate changed "
                         "the disk state")


if __name__ == "__main__":
    harness.run_main()
