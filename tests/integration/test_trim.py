#!/usr/bin/python3
"""A TRIM reads back the same on both nodes, whatever their disks. alpha's backing file sits
where holes can be punched; beta's is a disk that cannot punch holes: nbdkit's eval plugin over
a plain file (reads and writes with dd, no trim), exposed as a file by nbdfuse, where
fallocate(PUNCH_HOLE) fails with EOPNOTSUPP. Data written through alpha and then trimmed must read as zeroes on both disks:
'replctl verify' compares every block of the pair and finds no difference, and the two data
areas are identical byte for byte. (Before, beta took the TRIM as a no-op and kept the old
data while alpha read zeroes: verify reported the trimmed range as differing.)"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402


class TrimTest(harness.ReplTestCase):

    def setUp(self):
        why = harness.nbdkit_disk_prerequisites()
        if why:
            self.skipTest(why)

    def test_a_trim_reads_as_zeroes_on_both_nodes(self):
        size = 32 * MiB
        pair = Pair(disk_size=size)
        plain = pair.disk["beta"] + ".plain"
        os.rename(pair.disk["beta"], plain)
        disk = harness.NbdkitFuseDisk(pair.tmp, "beta", harness.nbdkit_dd_disk(plain, size))
        self.addCleanup(disk.close)
        os.symlink(disk.file, pair.disk["beta"])
        pair.up_primary("alpha", test=self)

        data = os.urandom(8 * MiB)
        h = harness.open_nbd(pair.socket["alpha"], pair.resource)
        try:
            h.pwrite(data, 0)
            h.flush()
            h.trim(4 * MiB, 2 * MiB)
            h.flush()
            self.assertEqual(h.pread(4 * MiB, 2 * MiB), bytes(4 * MiB),
                             "the trimmed range reads as zeroes through the Primary")
        finally:
            harness.close_nbd(h)
        pair.wait_in_sync()

        cp = pair.replctl("alpha", "verify", "--wait", timeout=120)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("no difference", cp.stdout)
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.read_disk("beta", 2 * MiB, 4 * MiB), bytes(4 * MiB))
        self.assertEqual(pair.read_disk("beta", 0, 2 * MiB), data[:2 * MiB])
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))
        self.assertIn("TRIM requests write zeroes instead", pair.daemon["beta"].log_text())


if __name__ == "__main__":
    harness.run_main()
