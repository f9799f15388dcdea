#!/usr/bin/python3
"""Online verify and checksum resync with two real daemons.

A disk damaged behind its daemon's back: 'replctl verify' must find exactly the damaged 4 KiB
blocks (while the Primary serves), mark them out of sync on both nodes, and a disconnect and
connect must then copy exactly those from the Primary, leaving the data areas identical.
With [resync] checksums = true, a full sync of two nearly identical disks sends digests for
everything and data only for the blocks that differ."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402
from test_invalidate import DAMAGE, damage, damaged_pair  # noqa: E402

DAMAGED_BYTES = sum(length for _, length in DAMAGE)  # whole 4 KiB blocks, 4 KiB aligned


class VerifyTest(harness.ReplTestCase):

    def test_verify_finds_the_damage_and_a_reconnect_repairs_it(self):
        pair = damaged_pair()
        # Paused, the verify cannot finish before the second one is asked for (64 MiB take
        # less than one replctl call on a fast disk: the check raced).
        self.assertEqual(pair.replctl("beta", "pause-sync").returncode, 0)
        cp = pair.replctl("beta", "verify")  # either node may run it
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("online verify started", cp.stdout)
        cp = pair.replctl("beta", "verify")
        self.assertEqual(cp.returncode, 1, "a second verify while one runs")
        self.assertIn("VerifyS", cp.stderr)
        self.assertEqual(pair.replctl("beta", "resume-sync").returncode, 0)
        st = pair.wait_status("beta", lambda s: s["verify"] and not s["verify"]["running"], 60,
                              "verify finished")
        size = pair.data_bytes("alpha")
        self.assertEqual(st["verify"]["done_bytes"], size)
        self.assertEqual(st["verify"]["differing_bytes"], DAMAGED_BYTES)
        for n in Pair.NODES:
            self.assertEqual(pair.status(n)["out_of_sync_bytes"], DAMAGED_BYTES, n)
        self.assertIn("differ and are marked out of sync", pair.daemon["beta"].log_tail(50))
        self.assertRegex(pair.replctl("beta", "status").stdout,
                         r"last verify: ([\d.]+ MiB) of \1 compared, 1.1 MiB differ")

        # As the log says: disconnect and connect on the Primary, whose blocks win (rule 40: it
        # moved on while apart; beta's marks travel with its bitmap).
        sent_before = pair.status("alpha")["counters"]["resync_bytes"]
        for args in (("disconnect",), ("connect",)):
            cp = pair.replctl("alpha", *args)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_in_sync()
        st = pair.status("alpha")
        self.assertTrue(st["sync_decision"].startswith("rule 40: "), st)
        self.assertEqual(st["counters"]["resync_bytes"] - sent_before, DAMAGED_BYTES)

        # verify --wait follows it to its end: on a terminal with a progress line ...
        cp = harness.run_on_terminal([harness.REPLCTL_BIN, "verify", "--wait", pair.resource,
                                      "-c", pair.config["alpha"], "-n", "alpha"])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertRegex(cp.stdout, r"\rverify: \[[=>.]{20}\] [\d.]+% \(")
        self.assertRegex(cp.stdout, r"\nverify r0: [\d.]+ MiB compared, no difference")
        # ... and in a script, the result line only, the way out included.
        damage(pair.disk["beta"])
        cp = pair.replctl("alpha", "verify", "--wait")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertNotIn("\r", cp.stdout)
        self.assertRegex(cp.stdout, r"^verify r0: [\d.]+ MiB compared, 1.1 MiB differ and are "
                         r"marked out of sync on both nodes; to resync them: replctl disconnect "
                         r"r0, then replctl connect r0")
        for args in (("disconnect",), ("connect",)):
            cp = pair.replctl("alpha", *args)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_in_sync()
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))

    def test_verify_is_refused_without_a_peer(self):
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        pair.wait_in_sync()
        self.assertEqual(pair.daemon["beta"].stop(), 0, pair.log_tails())
        pair.wait_status("alpha", lambda s: s["connection"] != "Connected", 15, "peer gone")
        cp = pair.replctl("alpha", "verify")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("not connected", cp.stderr)

    def test_checksum_resync_sends_only_the_differing_blocks(self):
        pair = damaged_pair(resync={"checksums": True})
        # The initial full sync found two zeroed disks equal: no data went.
        before = pair.status("alpha")["counters"]
        size = pair.data_bytes("alpha")
        self.assertEqual((before["resync_bytes"], before["resync_equal_bytes"]), (0, size))
        cp = pair.replctl("beta", "invalidate")  # a full sync, but the disks are nearly equal
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_status("beta", lambda s: s["connection"] == "Connected"
                         and (s["sync_decision"] or "").startswith("rule 30"), 30, "full sync")
        pair.wait_in_sync()
        counters = pair.status("alpha")["counters"]
        self.assertEqual(counters["resync_bytes"], DAMAGED_BYTES)
        self.assertEqual(counters["resync_equal_bytes"] - before["resync_equal_bytes"],
                         size - DAMAGED_BYTES)
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))


if __name__ == "__main__":
    harness.run_main()
