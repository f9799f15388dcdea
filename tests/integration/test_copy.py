#!/usr/bin/python3
"""nbdcopy a random 64 MiB image into repld and back out; the bytes must be
identical on the way out, in the backing file, and after a daemon restart."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402

SIZE = 64 * MiB


def sha256_file(path: str, length: int | None = None) -> str:
    h = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left is None or left > 0:
            n = 4 * MiB if left is None else min(4 * MiB, left)
            b = f.read(n)
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h.hexdigest()


def write_random_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))


class CopyTest(harness.ReplTestCase):
    def cmp(self, a: str, b: str, n: int | None = None):
        cmd = ["cmp"] + (["-n", str(n)] if n else []) + [a, b]
        cp = run(cmd, timeout=120)
        self.assertEqual(cp.returncode, 0, f"{' '.join(cmd)}: {cp.stdout}{cp.stderr}")

    def test_copy_in_and_out(self):
        inst = self.new_instance(SIZE, export="copy")
        src = os.path.join(inst.tmp, "src.img")
        out = os.path.join(inst.tmp, "out.img")
        write_random_file(src, SIZE)

        run(["nbdcopy", "--flush", src, inst.uri()], check=True, timeout=240)
        run(["nbdcopy", inst.uri(), out], check=True, timeout=240)
        self.assertEqual(os.path.getsize(out), SIZE)
        self.cmp(src, out)
        # the daemon really stored it in its backing file
        self.cmp(src, inst.disk_path)
        # A one-node resource counts what its disk did, as a replicated one does.
        st = json.loads(run([harness.REPLCTL_BIN, "status", "--json", "it", "-c", inst.config_path,
                             "-n", inst.node], check=True).stdout)
        self.assertEqual(st["counters"]["written_bytes"], SIZE, st)
        self.assertEqual(st["counters"]["read_bytes"], SIZE, st)

        # clean shutdown and restart: still the same bytes
        self.assertEqual(inst.daemon.stop(), 0)
        self.cmp(src, inst.disk_path)
        inst.restart()
        out2 = os.path.join(inst.tmp, "out2.img")
        run(["nbdcopy", inst.uri(""), out2], check=True, timeout=240)
        self.cmp(src, out2)
        self.assertEqual(inst.daemon.stop(), 0)

    def test_copy_single_connection_small_requests(self):
        # one connection, 64 KiB requests, many in flight: a different request
        # pattern than the default multi-conn 256 KiB copy
        size = 16 * MiB
        inst = self.new_instance(32 * MiB, export="copy")
        src = os.path.join(inst.tmp, "src.img")
        out = os.path.join(inst.tmp, "out.img")
        write_random_file(src, size)
        run(["nbdcopy", "--connections=1", "--request-size=65536", "--requests=64",
             "--flush", src, inst.uri()], check=True, timeout=240)
        # read it back over TCP-less unix path, different export alias
        run(["nbdcopy", "--connections=1", inst.uri(""), out], check=True, timeout=240)
        self.cmp(src, out, size)
        # the rest of the export is still zero (sparse backing untouched)
        with open(out, "rb") as f:
            f.seek(size)
            rest = f.read()
        self.assertEqual(len(rest), 16 * MiB)
        self.assertEqual(rest.count(0), len(rest), "bytes beyond the copied range are not zero")
        self.assertEqual(sha256_file(inst.disk_path, size), sha256_file(src))
        self.assertEqual(inst.daemon.stop(), 0)


if __name__ == "__main__":
    harness.run_main()
