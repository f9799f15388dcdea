#!/usr/bin/python3
"""`replctl detach` and `attach` with two real daemons. A Secondary lets go of its disk: it is
Diskless and StandAlone, refuses what needs a disk, and its disk is free (create-md can take
it); the Primary keeps serving and records what the detached node misses. Attaching the same
disk resyncs only that; attaching a replacement with fresh metadata gets a full sync. Both end
with the two data areas identical byte for byte. A Primary cannot detach; a disk that cannot
be opened leaves the node Diskless, saying why."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402
from test_invalidate import fill  # noqa: E402


def write(pair: Pair, offset: int, length: int) -> None:
    h = harness.open_nbd(pair.socket["alpha"], pair.resource)
    try:
        h.pwrite(os.urandom(length), offset)
        h.flush()
    finally:
        harness.close_nbd(h)


class AttachTest(harness.ReplTestCase):

    def ok(self, pair: Pair, node: str, *args: str) -> str:
        cp = pair.replctl(node, *args)
        self.assertEqual(cp.returncode, 0, f"{args} on {node}: {cp.stdout}{cp.stderr}")
        return cp.stdout

    def refused(self, pair: Pair, node: str, *args: str, why: str) -> None:
        cp = pair.replctl(node, *args)
        self.assertEqual(cp.returncode, 1, f"{args} on {node}: {cp.stdout}{cp.stderr}")
        self.assertIn(why, cp.stderr)

    def detach_beta(self, pair: Pair) -> None:
        out = self.ok(pair, "beta", "detach")
        self.assertIn("Diskless and StandAlone", out)
        st = pair.status("beta")
        self.assertEqual((st["role"], st["disk"], st["connection"]),
                         ("Secondary", "Diskless", "StandAlone"))
        pair.wait_status("alpha", lambda s: s["connection"] != "Connected", 10, "beta gone")

    def test_detach_then_attach_the_same_disk_and_a_new_one(self):
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        size = pair.data_bytes("alpha")
        fill(pair, "alpha", size)
        pair.wait_in_sync()

        self.refused(pair, "alpha", "detach", why="no diskless Primary")
        self.assertIn("already attached", self.ok(pair, "beta", "attach"))

        self.detach_beta(pair)
        self.assertIn("detaches its disk", pair.daemon["alpha"].log_text())
        self.assertIn("already Diskless", self.ok(pair, "beta", "detach"))
        self.refused(pair, "beta", "primary", why="'replctl attach r0' first")
        self.refused(pair, "beta", "verify", why="'replctl attach r0' first")
        self.refused(pair, "beta", "connect", why="'replctl attach r0' first")
        self.assertIn("Diskless", self.ok(pair, "beta", "secondary"))
        self.assertIn("disk:Diskless", self.ok(pair, "beta", "events", "--now"))
        # The Primary serves on, and records what beta misses.
        write(pair, 8 * MiB, 3 * MiB)
        missed = pair.status("alpha")["out_of_sync_bytes"]
        self.assertEqual(missed, 3 * MiB)

        # The same disk again: only what it missed travels.
        sent = pair.status("alpha")["counters"]["resync_bytes"]
        out = self.ok(pair, "beta", "attach")
        self.assertIn("attached " + pair.disk["beta"], out)
        pair.wait_in_sync()
        self.assertTrue(pair.status("alpha")["sync_decision"].startswith("rule 40: "))
        self.assertEqual(pair.status("alpha")["counters"]["resync_bytes"] - sent, missed)

        # A disk that cannot be opened: the node stays Diskless and says why.
        self.detach_beta(pair)
        moved = pair.disk["beta"] + ".away"
        os.rename(pair.disk["beta"], moved)
        self.refused(pair, "beta", "attach", why="cannot attach " + pair.disk["beta"])
        self.assertEqual(pair.status("beta")["disk"], "Diskless")
        os.rename(moved, pair.disk["beta"])

        # A replacement: the disk is free (create-md takes its lock), fresh metadata gets a
        # full sync.
        write(pair, 30 * MiB, 1 * MiB)
        self.ok(pair, "beta", "create-md", "--force")
        with open(pair.disk["beta"], "r+b") as f:  # the new disk's data is not the old one's
            f.write(os.urandom(1 * MiB))
        sent = pair.status("alpha")["counters"]["resync_bytes"]
        self.ok(pair, "beta", "attach")
        pair.wait_status("beta", lambda s: (s["sync_decision"] or "").startswith("rule 30"), 20,
                         "a full sync decided")
        pair.wait_in_sync()
        self.assertEqual(pair.status("alpha")["counters"]["resync_bytes"] - sent, size)
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))

    def test_a_running_daemon_still_holds_its_disk(self):
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        cp = pair.replctl("beta", "create-md", "--force")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("in use by a running repld", cp.stderr)


if __name__ == "__main__":
    harness.run_main()
