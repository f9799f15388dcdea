#!/usr/bin/python3
"""The Secondary's disk fails a flush ([disk] on_io_error = "detach", the default): writes
reach its disk, but the flush that should make them durable fails, so they may be lost. The
Secondary's disk is nbdkit's eval plugin over a plain file (reads and writes with dd; the flush
fails with EIO while a trigger file exists), exposed as a file by nbdfuse (nbdkit's error filter
cannot fail a flush); metadata on files of their own.

With the trigger, 2 MiB written through the Primary and a client FLUSH: the flush completes
(the Primary's own disk has the data; the writes the peer's failed flush covered are marked out
of sync, as DRBD does), the Secondary detaches (Diskless, disk_error says the flush failed), the
Primary keeps serving, and `replctl primary` on the Secondary is refused with the reason.
Without the trigger, `replctl attach` resyncs the Secondary and both data areas are identical
byte for byte."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402
from test_split_brain import write  # noqa: E402

DISK = 32 * MiB


class FlushFailureTest(harness.ReplTestCase):

    def setUp(self):
        why = harness.nbdkit_disk_prerequisites()
        if why:
            self.skipTest(why)

    def test_a_secondary_whose_flush_fails_detaches_and_is_never_promoted_with_it(self):
        pair = Pair(disk_size=DISK)
        plain = pair.disk["beta"] + ".plain"
        os.rename(pair.disk["beta"], plain)
        trigger = os.path.join(pair.tmp, "fail-flush")
        disk = harness.NbdkitFuseDisk(pair.tmp, "beta", harness.nbdkit_dd_disk(
            plain, DISK,
            flush=f"if [ -e {trigger} ]; then echo 'EIO flush failed' >&2; exit 1; fi; "
                  f"sync {plain}"))
        self.addCleanup(disk.close)
        os.symlink(disk.file, pair.disk["beta"])
        pair.external_metadata()
        pair.up_primary("alpha", test=self)
        write(pair, "alpha", 0, os.urandom(MiB))

        open(trigger, "w").close()
        write(pair, "alpha", 4 * MiB, os.urandom(2 * MiB))  # the client's flush succeeds
        st = pair.wait_status("beta", lambda s: s["disk"] == "Diskless", 30, "beta detached")
        self.assertIsNotNone(st.get("disk_error"), st)
        self.assertIn("flushing", st["disk_error"]["what"])
        self.assertEqual(st["disk_error"]["errno"], 5)
        alpha = pair.wait_status("alpha", lambda s: s["connection"] != "Connected", 10,
                                 "beta gone")
        self.assertEqual((alpha["role"], alpha["disk"]), ("Primary", "UpToDate"))
        self.assertGreaterEqual(alpha["out_of_sync_bytes"], 2 * MiB,
                                "the writes the failed flush covered are marked")
        write(pair, "alpha", 8 * MiB, os.urandom(MiB))  # the Primary serves on
        for force in ([], ["--force"]):
            cp = pair.replctl("beta", "primary", *force)
            self.assertEqual(cp.returncode, 1, f"primary {force} on beta: {cp.stdout}")
            self.assertIn("flushing", cp.stderr)

        os.remove(trigger)
        cp = pair.replctl("beta", "attach")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_in_sync()
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))


if __name__ == "__main__":
    harness.run_main()
