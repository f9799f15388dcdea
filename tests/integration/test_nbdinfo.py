#!/usr/bin/python3
"""nbdinfo against repld: size, capabilities, export list, block sizes, TCP."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, KiB, run  # noqa: E402

# Not a multiple of 4096 nor of 512: the export size must be rounded down
# to the advertised minimum block size.
ODD_SIZE = 48 * MiB + 1536 + 100


class NbdinfoTest(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.inst = harness.Instance(ODD_SIZE, export="web", tcp=True)
        cls.inst.start()

    def nbdinfo(self, *args, check=True):
        return run(["nbdinfo", *args], check=check, timeout=60)

    def json_info(self, uri):
        cp = self.nbdinfo("--json", uri)
        return json.loads(cp.stdout)

    def export_info(self, uri):
        info = self.json_info(uri)
        exports = info["exports"]
        self.assertEqual(len(exports), 1, info)
        return exports[0]

    def test_size_rounded_to_minimum_block(self):
        e = self.export_info(self.inst.uri())
        minimum = e["block_size_minimum"]
        self.assertIn(minimum, (1, 512, 1024, 2048, 4096), e)
        expected = ODD_SIZE - ODD_SIZE % minimum
        cp = self.nbdinfo("--size", self.inst.uri())
        self.assertEqual(int(cp.stdout.strip()), expected,
                         f"backing {ODD_SIZE} bytes, minimum block {minimum}")
        self.assertEqual(e["export-size"], expected)

    def test_block_sizes(self):
        e = self.export_info(self.inst.uri())
        self.assertEqual(e["block_size_preferred"], 4096, e)
        self.assertEqual(e["block_size_maximum"], 32 * MiB, e)
        # spec: minimum is a power of two <= 64 KiB; max a multiple of minimum
        m = e["block_size_minimum"]
        self.assertTrue(m & (m - 1) == 0 and m <= 65536, e)
        self.assertEqual(e["block_size_maximum"] % m, 0)

    def test_capabilities(self):
        for cap in ("flush", "fua", "trim", "zero", "multi-conn", "write", "connect", "read"):
            with self.subTest(cap=cap):
                cp = self.nbdinfo("--can", cap, self.inst.uri(), check=False)
                self.assertEqual(cp.returncode, 0,
                                 f"nbdinfo --can {cap}: exit {cp.returncode}\n{cp.stderr}")

    def test_not_read_only(self):
        cp = self.nbdinfo("--is", "read-only", self.inst.uri(), check=False)
        # nbdinfo: exit 0 = true, 2 = false, anything else = error
        self.assertEqual(cp.returncode, 2, f"--is read-only should be false\n{cp.stderr}")

    def test_list_shows_export(self):
        cp = self.nbdinfo("--list", "--json", self.inst.uri())
        info = json.loads(cp.stdout)
        names = [e["export-name"] for e in info["exports"]]
        self.assertIn("web", names, info)
        cp = self.nbdinfo("--list", self.inst.uri())
        self.assertIn("web", cp.stdout)

    def test_default_and_named_export(self):
        for export in ("", "web"):
            with self.subTest(export=export):
                cp = self.nbdinfo("--size", self.inst.uri(export))
                self.assertGreater(int(cp.stdout), 0)

    def test_unknown_export_refused(self):
        cp = self.nbdinfo("--can", "connect", self.inst.uri("no-such-export"), check=False)
        self.assertNotEqual(cp.returncode, 0, "connecting to an unknown export must fail")
        cp = self.nbdinfo("--size", self.inst.uri("no-such-export"), check=False)
        self.assertNotEqual(cp.returncode, 0)

    def test_tcp_listener(self):
        unix_size = int(self.nbdinfo("--size", self.inst.uri()).stdout)
        for export in ("web", ""):
            with self.subTest(export=export):
                cp = self.nbdinfo("--size", self.inst.tcp_uri(export))
                self.assertEqual(int(cp.stdout), unix_size)
        cp = self.nbdinfo("--can", "multi-conn", self.inst.tcp_uri(), check=False)
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_tcp_data_path(self):
        # a write over TCP is visible over the unix socket and in the file
        nbd = harness.nbd_module()
        h = nbd.NBD()
        h.set_export_name("web")
        h.connect_uri(self.inst.tcp_uri())
        data = os.urandom(64 * KiB)
        h.pwrite(data, 1 * MiB)
        h.flush()
        h.shutdown()
        u = self.inst.nbd_handle()
        self.assertEqual(u.pread(len(data), 1 * MiB), data)
        harness.close_nbd(u)
        self.assertEqual(self.inst.read_backing(1 * MiB, len(data)), data)


class DirectIoOffTest(harness.ReplTestCase):
    """With direct_io = "off" the minimum block size is 1 and the export size
    is exactly the backing size."""

    def test_exact_size_and_min_block_1(self):
        inst = self.new_instance(ODD_SIZE, disk={"direct_io": "off"})
        info = json.loads(run(["nbdinfo", "--json", inst.uri()], check=True).stdout)
        e = info["exports"][0]
        self.assertEqual(e["block_size_minimum"], 1, e)
        self.assertEqual(e["export-size"], ODD_SIZE)
        # and unaligned I/O works
        h = inst.nbd_handle()
        h.pwrite(b"hello, world", 4097)
        self.assertEqual(h.pread(12, 4097), b"hello, world")
        h.pwrite(b"END", ODD_SIZE - 3)
        self.assertEqual(h.pread(3, ODD_SIZE - 3), b"END")
        h.flush()
        harness.close_nbd(h)
        self.assertEqual(inst.read_backing(4097, 12), b"hello, world")
        self.assertEqual(inst.read_backing(ODD_SIZE - 3, 3), b"END")
        self.assertEqual(inst.daemon.stop(), 0)


if __name__ == "__main__":
    harness.run_main()
