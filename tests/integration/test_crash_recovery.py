#!/usr/bin/python3
"""Crash recovery with two real daemons: kill -9 the Primary, the Secondary, or both, while fio
writes; after the restart and reconnect only the activity log's extents and the survivor's
bitmap are resynced (the source's log names the amount, far below the disk), and both data
areas end identical byte for byte.

The disk is 256 MiB, the activity log 7 extents (28 MiB), and fio writes inside the first
16 MiB, so every write lands in a hot extent and a full sync would show as 200+ MiB."""

import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402

AL_BYTES = 7 * 4 * MiB
RESYNC_LINE = re.compile(r"(bitmap|full) resync to the peer: (\d+) bytes")


class Load:
    """fio writing random blocks into the first 16 MiB until stopped or its server dies."""

    def __init__(self, pair: Pair, node: str):
        # --thread: the job runs in fio's own process, so killing that PID stops the writes
        # (a forked job process would go on writing after the kill).
        argv = ["fio", "--name=load", "--thread", "--ioengine=nbd", f"--uri={pair.uri(node)}",
                "--rw=randwrite", "--bsrange=4k-64k", "--bs_unaligned=0", "--iodepth=8",
                "--size=16M", "--time_based=1", "--runtime=30", "--randrepeat=0",
                f"--output={os.path.join(pair.tmp, 'load.txt')}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=pair.tmp)
        harness.register_cleanup(self.stop, "fio load")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


class CrashRecoveryTest(harness.ReplTestCase):

    def loaded_pair(self) -> tuple[Pair, Load]:
        pair = Pair(disk_size=256 * MiB, disk={"al_extents": 7},
                    nbd={"request_bytes_max": "1MiB"})
        pair.up_primary("alpha")
        load = Load(pair, "alpha")
        time.sleep(2)
        self.assertIsNone(load.proc.poll(), "fio stopped early")
        return pair, load

    def resynced_bytes(self, pair: Pair, node: str, before: int) -> list[tuple[str, int]]:
        """The resyncs `node` sent after the first `before` characters of its log."""
        text = pair.daemon[node].log_text()[before:]
        return [(m.group(1), int(m.group(2))) for m in RESYNC_LINE.finditer(text)]

    def finish(self, pair: Pair, source: str, log_from: int, most: int) -> None:
        pair.wait_in_sync(120)
        syncs = self.resynced_bytes(pair, source, log_from)
        self.assertTrue(syncs, f"{source} sent no resync\n{pair.log_tails()}")
        self.assertNotIn("full", [kind for kind, _ in syncs], syncs)
        total = sum(n for _, n in syncs)
        self.assertGreater(total, 0)
        self.assertLessEqual(total, most, f"resynced {total} bytes; the bound is {most}")
        harness.log(f"{source} resynced {total} bytes (bound {most})")
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size),
                         "the data areas differ after the recovery")

    def test_kill9_primary_resyncs_only_its_activity_log(self):
        pair, load = self.loaded_pair()
        log_from = len(pair.daemon["alpha"].log_text())
        pair.daemon["alpha"].kill9()
        load.stop()
        pair.wait_status("beta", lambda s: s["connection"] != "Connected", 15, "peer lost")
        pair.start("alpha")
        self.assertRegex(pair.daemon["alpha"].log_text()[log_from:],
                         r"stopped without demoting \(a crash\): [1-7] activity log extent")
        self.finish(pair, "alpha", log_from, AL_BYTES)

    def test_kill9_secondary_resyncs_only_what_it_missed(self):
        pair, load = self.loaded_pair()
        log_from = len(pair.daemon["alpha"].log_text())
        pair.daemon["beta"].kill9()
        time.sleep(1.5)  # the Primary keeps writing, and marks it
        load.stop()
        pair.start("beta")
        self.finish(pair, "alpha", log_from, 16 * MiB)

    def test_kill9_both_resyncs_the_activity_log_and_the_bitmap(self):
        pair, load = self.loaded_pair()
        log_from = len(pair.daemon["alpha"].log_text())
        pair.daemon["beta"].kill9()
        time.sleep(1)
        pair.daemon["alpha"].kill9()
        load.stop()
        pair.start("beta")
        pair.start("alpha")
        self.finish(pair, "alpha", log_from, AL_BYTES)


if __name__ == "__main__":
    harness.run_main()
