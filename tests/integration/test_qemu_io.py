#!/usr/bin/python3
"""qemu-io (QEMU's NBD client) against repld."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402


class QemuIoTest(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.inst = harness.Instance(16 * MiB, export="qio")
        cls.inst.start()

    def qemu_io(self, *cmds, uri=None, expect_ok=True):
        argv = ["qemu-io", "-f", "raw"]
        for c in cmds:
            argv += ["-c", c]
        argv.append(uri or self.inst.uri(""))
        cp = run(argv, timeout=120)
        out = cp.stdout + cp.stderr
        if expect_ok:
            # qemu-io can exit 0 even when a command failed; look at the text
            bad = re.findall(r"(?im)^.*(pattern verification failed|failed:|error|"
                             r"Input/output|Invalid argument|No space).*$", out)
            self.assertEqual(cp.returncode, 0, f"qemu-io exit {cp.returncode}\n{out}")
            self.assertEqual(bad, [], f"qemu-io reported problems:\n{out}")
        return cp, out

    def test_write_then_read_pattern(self):
        _, out = self.qemu_io("write -P 0xab 0 1M", "write -P 0xcd 1M 4k", "flush")
        self.assertIn("wrote 1048576/1048576 bytes at offset 0", out)
        self.assertIn("wrote 4096/4096 bytes at offset 1048576", out)
        # second connection (new qemu-io process), by export name this time
        _, out = self.qemu_io("read -P 0xab 0 1M", "read -P 0xcd 1M 4k",
                              "read -P 0 1052672 4k", uri=self.inst.uri("qio"))
        self.assertIn("read 1048576/1048576 bytes at offset 0", out)
        self.assertIn("read 4096/4096 bytes at offset 1048576", out)
        # and in the backing file
        self.assertEqual(self.inst.read_backing(0, MiB), b"\xab" * MiB)
        self.assertEqual(self.inst.read_backing(MiB, 4096), b"\xcd" * 4096)

    def test_pattern_mismatch_is_detected(self):
        # guard against a vacuous test: a wrong pattern must be reported
        self.qemu_io("write -P 0x11 2M 64k")
        _, out = self.qemu_io("read -P 0x22 2M 64k", expect_ok=False)
        self.assertIn("Pattern verification failed", out)

    def test_zero_discard_and_aio(self):
        self.qemu_io("write -P 0x5a 4M 256k",
                     "write -z 4M 64k",            # WRITE_ZEROES
                     "discard 4352k 64k",          # TRIM
                     "aio_write -P 0x66 5M 64k", "aio_write -P 0x67 5184k 64k", "aio_flush",
                     "flush")
        self.qemu_io("read -P 0 4M 64k", "read -P 0x5a 4160k 128k",
                     "read -P 0x66 5M 64k", "read -P 0x67 5184k 64k")

    def test_fua_write(self):
        self.qemu_io("write -f -P 0x3c 6M 128k")   # -f = FUA
        self.assertEqual(self.inst.read_backing(6 * MiB, 128 * 1024), b"\x3c" * 128 * 1024)
        self.qemu_io("read -P 0x3c 6M 128k")

    def test_out_of_range_reported(self):
        _, out = self.qemu_io("read 16M 4k", expect_ok=False)
        self.assertRegex(out, r"(?i)(Input/output error|Invalid argument|out of range|"
                              r"beyond|error)")


if __name__ == "__main__":
    harness.run_main()
