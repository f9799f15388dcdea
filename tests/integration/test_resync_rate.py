#!/usr/bin/python3
"""resync.rate and pause-sync / resume-sync with two real daemons: a full sync of 56 MiB at
8 MiB/s takes about 7 s, not a fraction of one; paused, it moves no block for seconds (while the
Primary still serves); resumed, it finishes and both data areas are identical. Meanwhile both
nodes' status shows the progress, and the source's its speed and time left."""

import os
import sys
import threading
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

    def test_dynamic_controller_yields_to_the_application_then_takes_the_link(self):
        pair = Pair(disk_size=64 * MiB,
                    resync={"c_plan_ahead": "2s", "c_min_rate": "2M", "c_fill_target": "4M"})
        pair.up_primary("alpha")
        pair.wait_in_sync()  # the initial sync, with nobody writing: unlimited
        # The application writes all along, from before the resync starts.
        stop = threading.Event()
        errors = []

        def writer():
            try:
                h = harness.open_nbd(pair.socket["alpha"], pair.resource)
                try:
                    block = os.urandom(64 * 1024)
                    while not stop.is_set():
                        h.pwrite(block, 0)
                        time.sleep(0.01)
                finally:
                    harness.close_nbd(h)
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append(e)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(1.5)  # a tick sees the writes
            cp = pair.replctl("alpha", "invalidate-remote")  # a full sync to beta
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            pair.wait_status("alpha", lambda s: s["resync"] is not None, 10, "resync started")
            time.sleep(2.5)  # past the first tick that saw the writes
            first = pair.status("alpha")["resync"]["done_bytes"]
            time.sleep(3)
            busy = pair.status("alpha")["resync"]["done_bytes"] - first
            # c_min_rate is 2 MiB/s: about 6 MiB in 3 s (a window's worth of slack).
            self.assertLessEqual(busy, 10 * MiB, f"{busy} bytes in 3 s with writes going on")
            self.assertGreater(busy, 2 * MiB, "the resync stopped instead of slowing down")
        finally:
            stop.set()
            thread.join()
        self.assertEqual(errors, [])
        t0 = time.monotonic()
        pair.wait_in_sync(timeout=30)
        # The rest (tens of MiB) goes once the writes stop: doubling, then unlimited after 2 s.
        self.assertLess(time.monotonic() - t0, 10, "the resync did not take the idle link")
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))


if __name__ == "__main__":
    harness.run_main()
