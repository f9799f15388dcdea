#!/usr/bin/python3
"""resync.rate and pause-sync / resume-sync with two real daemons: a full sync of 56 MiB at
8 MiB/s takes about 7 s, not a fraction of one; paused, it moves no block for seconds (while the
Primary still serves); resumed, it finishes and both data areas are identical. Meanwhile both
nodes' status shows the progress, and the source's its speed and time left."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402


class ResyncRateTest(harness.ReplTestCase):

    def test_rate_limit_pause_and_resume(self):
        pair = Pair(disk_size=64 * MiB, resync={"rate": "8M"})
        pair.create_md()
        pair.start_all()
        pair.wait_connected()
        pair.promote("alpha", force=True)
        t0 = time.monotonic()
        st = pair.wait_status("alpha", lambda s: s["resync"] is not None
                              and s["resync"]["done_bytes"] > 0, 10, "resync started")
        total = st["resync"]["total_bytes"]
        self.assertGreater(total, 40 * MiB)

        # Progress on both sides; speed and finish time once two ticks have passed.
        st = pair.wait_status("alpha", lambda s: s["resync"] is not None
                              and s["resync"]["speed_bytes_per_second"] is not None, 5,
                              "a resync speed")
        speed = st["resync"]["speed_bytes_per_second"]
        self.assertTrue(4 * MiB <= speed <= 12 * MiB, f"speed {speed} at a rate of 8 MiB/s")
        left = st["resync"]["total_bytes"] - st["resync"]["done_bytes"]
        self.assertAlmostEqual(st["resync"]["eta_seconds"], left / speed, delta=1.5)
        target = pair.wait_status("beta", lambda s: s["resync"] is not None
                                  and s["resync"]["done_bytes"] > 0, 5, "progress on the target")
        self.assertEqual(target["resync"]["total_bytes"], total)
        self.assertLessEqual(target["resync"]["done_bytes"], total)
        human = pair.replctl("alpha", "status").stdout
        self.assertIn("sync'ed:", human)
        self.assertRegex(human, r"finish: \d+:\d\d:\d\d speed: [\d,]+ \([\d,]+\) K/sec")

        cp = pair.replctl("beta", "pause-sync")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("pause the resync on the sync source", cp.stderr)
        cp = pair.replctl("alpha", "pause-sync")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        paused_at = time.monotonic()
        time.sleep(1)  # blocks already read go out; then nothing
        done = pair.status("alpha")["resync"]["done_bytes"]
        time.sleep(2)
        st = pair.status("alpha")
        self.assertEqual(st["resync"]["done_bytes"], done, "a paused resync moved on")
        self.assertTrue(st["resync_paused"])
        self.assertIn("resync paused here", pair.replctl("alpha", "status").stdout)
        # The Primary serves meanwhile, and its writes reach the peer.
        h = harness.open_nbd(pair.socket["alpha"], pair.resource)
        try:
            h.pwrite(os.urandom(64 * 1024), 0)
            h.flush()
        finally:
            harness.close_nbd(h)
        cp = pair.replctl("alpha", "resume-sync")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        paused = time.monotonic() - paused_at
        pair.wait_in_sync(timeout=60)
        elapsed = time.monotonic() - t0 - paused
        # 8 MiB per second: at least 5 s for more than 40 MiB (unlimited takes well under 1 s).
        self.assertGreater(elapsed, 5.0, f"{total} bytes in {elapsed:.1f} s: not rate limited")
        self.assertFalse(pair.status("alpha")["resync_paused"])
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))


if __name__ == "__main__":
    harness.run_main()
