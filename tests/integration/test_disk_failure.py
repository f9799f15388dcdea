#!/usr/bin/python3
"""The Secondary's backing disk fails its writes ([disk] on_io_error = "detach", the default).

Issue #17: with the Secondary's disk returning EIO on writes, a 4 MiB `nbdcopy --flush` through
the Primary under protocol C succeeded; after the Primary was killed, `replctl primary` on the
Secondary succeeded and served data without those acknowledged writes.

The Secondary's disk here is nbdkit's memory plugin behind its error filter (every write and
zero fails with EIO while a trigger file exists), exposed as a file by nbdfuse; its metadata is
on a file of its own (the Primary's too: the same data size), so that what the node records
about the failure can be read after a restart.

- With the trigger, 4 MiB more through the Primary with `nbdcopy --flush` succeed; the
  Secondary detaches (Diskless, StandAlone, status `disk_error` says what failed and when),
  the Primary records what it misses, `replctl primary` on the Secondary is refused with the
  reason. Without the trigger, `replctl attach` resyncs it and both data areas are identical.
- A replacement (new metadata, create-md) attached after the detach does not show the failed
  disk's error: status `disk_error` is empty at once, and the full resync makes both data areas
  identical.
- The issue's sequence: the Primary is killed after the failure, the Secondary restarted on the
  same failed disk: its metadata says the disk failed, and `replctl primary` is refused. The
  old Primary back, the resync repairs the disk, and only then is it promoted, with every
  acknowledged write.
- on_io_error = "pass_on": the Secondary stays attached but Inconsistent (not promoted), the
  Primary serves on; once the disk takes writes again, the reconnect's resync repairs it and
  both data areas are identical.

Needs root (FUSE), nbdkit with its error filter, nbdfuse, nbdcopy. Every nbdkit and nbdfuse
process it starts is stopped, by PID, and every mount undone, also when it fails."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402
from pair import Pair  # noqa: E402
from test_split_brain import write  # noqa: E402

DISK = 64 * MiB


class DiskFailureTest(harness.ReplTestCase):

    def setUp(self):
        why = harness.nbdkit_disk_prerequisites("nbdcopy")
        if why:
            self.skipTest(why)

    def pair_with_failing_beta(self, disk_table: dict | None = None
                               ) -> tuple[Pair, harness.FailingDisk]:
        pair = Pair(disk_size=DISK, disk=disk_table)
        disk = pair.use_failing_disk(self, "beta")
        pair.up_primary("alpha", test=self)
        return pair, disk

    def nbdcopy_to_alpha(self, pair: Pair, data: bytes) -> None:
        """nbdcopy --flush of `data` to the start of the device, as in the issue."""
        src = os.path.join(pair.tmp, "payload.bin")
        with open(src, "wb") as f:
            f.write(data)
        cp = run(["nbdcopy", "--flush", src, pair.uri("alpha")], timeout=120)
        self.assertEqual(cp.returncode, 0, f"nbdcopy through the Primary: {cp.stdout}{cp.stderr}")

    def fail_and_detach(self, pair: Pair, disk: harness.FailingDisk) -> dict:
        """With the trigger, 4 MiB through the Primary: they succeed, beta detaches."""
        disk.fail_writes(True)
        self.nbdcopy_to_alpha(pair, os.urandom(4 * MiB))
        st = pair.wait_status("beta", lambda s: s["disk"] == "Diskless", 60, "beta detached")
        self.assertEqual((st["role"], st["connection"]), ("Secondary", "StandAlone"))
        err = st["disk_error"]
        self.assertIsNotNone(err, st)
        self.assertEqual(err["errno"], 5, err)
        self.assertEqual(err["error"], "Input/output error")
        self.assertEqual(err["on_io_error"], "detach")
        self.assertRegex(err["what"], r"write")
        self.assertRegex(err["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        text = pair.replctl("beta", "status").stdout
        self.assertIn("failed: " + err["what"] + ": Input/output error (errno 5)", text)
        self.assertIn("on_io_error = detach", pair.daemon["beta"].log_text())
        a = pair.wait_status("alpha", lambda s: s["connection"] != "Connected", 30, "beta gone")
        self.assertEqual((a["role"], a["disk"]), ("Primary", "UpToDate"))
        self.assertGreater(a["out_of_sync_bytes"], 0, "the Primary records what beta misses")
        # The Primary hears of it by the error acks, or, when beta's detach closes the link
        # before they leave (seen under ASan), by losing the peer, which marks every write beta
        # did not confirm: either way the blocks are marked (above).
        log = pair.daemon["alpha"].log_text()
        self.assertTrue("peer failed frame" in log or "lost the peer" in log, log)
        return err

    def refused_promotion(self, pair: Pair, *args: str, why: str) -> None:
        cp = pair.replctl("beta", "primary", *args)
        self.assertEqual(cp.returncode, 1, f"primary {args} on beta: {cp.stdout}{cp.stderr}")
        self.assertIn(why, cp.stderr)
        self.assertEqual(pair.status("beta")["role"], "Secondary")

    def test_a_failing_secondary_detaches_is_not_promoted_and_attach_resyncs_it(self):
        pair, disk = self.pair_with_failing_beta()
        write(pair, "alpha", 8 * MiB, os.urandom(4 * MiB))
        pair.wait_in_sync()

        err = self.fail_and_detach(pair, disk)
        # The Primary keeps serving, with beta gone.
        write(pair, "alpha", 20 * MiB, os.urandom(MiB))
        for args in ((), ("--force",)):
            self.refused_promotion(pair, *args, why="the disk failed " + err["what"])
        self.refused_promotion(pair, why="replace it and run 'replctl attach r0'")

        disk.fail_writes(False)
        cp = pair.replctl("beta", "attach")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_in_sync(timeout=120)
        self.assertIsNone(pair.status("beta")["disk_error"], "a new disk record after attach")
        size = pair.data_bytes("alpha")
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size),
                         "both data areas are identical after the resync")

    def test_a_replacement_disk_does_not_carry_the_failed_disks_error(self):
        pair, disk = self.pair_with_failing_beta()
        write(pair, "alpha", 8 * MiB, os.urandom(4 * MiB))
        pair.wait_in_sync()
        self.fail_and_detach(pair, disk)
        # A replacement: new metadata on a working disk (here the same device, repaired, with
        # create-md: another metadata UUID, as a new disk has).
        disk.fail_writes(False)
        cp = pair.replctl("beta", "create-md", "--force")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        cp = pair.replctl("beta", "attach")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        st = pair.status("beta")
        self.assertIsNone(st["disk_error"], "the new disk has not failed: " + str(st))
        self.assertIn(st["disk"], ("Inconsistent", "UpToDate"), st)  # new: resynced whole
        pair.wait_in_sync(timeout=120)
        size = pair.data_bytes("alpha")
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size),
                         "both data areas are identical after the resync")

    def test_the_issue_a_restarted_secondary_on_its_failed_disk_is_not_promoted(self):
        pair, disk = self.pair_with_failing_beta()
        self.fail_and_detach(pair, disk)
        size = pair.data_bytes("alpha")
        acknowledged = pair.digest("alpha", size)
        pair.daemon["alpha"].kill9()

        # beta restarts on the same disk, still failing: its metadata says so.
        self.assertEqual(pair.daemon["beta"].stop(), 0, pair.log_tails())
        pair.start("beta")
        st = pair.status("beta")
        self.assertEqual(st["disk"], "Inconsistent", st)
        self.assertIsNotNone(st["disk_error"], st)
        self.assertIsNone(st["disk_error"]["errno"], "known from the metadata only")
        self.refused_promotion(pair, why="has not been repaired by a resync")

        # The disk repaired, the old Primary back: the resync brings every acknowledged write,
        # and then beta may serve.
        disk.fail_writes(False)
        pair.start("alpha")
        pair.wait_in_sync(timeout=120)
        self.assertEqual(pair.digest("beta", size), acknowledged)
        self.assertIsNone(pair.status("beta")["disk_error"], "repaired by the resync")
        cp = pair.replctl("beta", "primary")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_pass_on_keeps_the_secondary_attached_but_inconsistent_until_a_resync(self):
        pair, disk = self.pair_with_failing_beta({"on_io_error": "pass_on"})
        disk.fail_writes(True)
        self.nbdcopy_to_alpha(pair, os.urandom(4 * MiB))
        st = pair.wait_status("beta", lambda s: s["disk_error"] is not None, 30, "a disk error")
        self.assertNotIn(st["disk"], ("UpToDate", "Diskless", "Failed"), st)
        self.assertEqual(st["disk_error"]["on_io_error"], "pass_on")
        self.assertEqual(st["disk_error"]["errno"], 5)
        self.assertIn("on_io_error = pass_on", pair.daemon["beta"].log_text())
        self.assertIn("peer failed frame", pair.daemon["alpha"].log_text(),
                      "the Primary got the error")
        self.refused_promotion(pair, why="has not been repaired by a resync")
        write(pair, "alpha", 16 * MiB, os.urandom(MiB))  # the Primary serves on

        disk.fail_writes(False)
        pair.wait_in_sync(timeout=150)  # the reconnect's resync, once the disk takes writes
        self.assertIsNone(pair.status("beta")["disk_error"], "repaired by the resync")
        size = pair.data_bytes("alpha")
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))


if __name__ == "__main__":
    harness.run_main()
