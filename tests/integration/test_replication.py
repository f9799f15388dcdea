#!/usr/bin/python3
"""Two repld daemons replicating one resource on this machine (one config file,
--node alpha / --node beta, the peer link on 127.0.0.1), driven by real
clients: fio with verification and nbdcopy through the Primary, then the two
backing disks' data areas compared byte for byte; the Secondary killed with
SIGKILL mid-stream; a wrong secret; the Secondary refusing NBD clients; and a
failover that reads back every acknowledged write (protocol C)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402
from pair import Pair  # noqa: E402


def fio(pair: Pair, node: str, *args: str, verify: bool = True, timeout: float = 280):
    out = os.path.join(pair.tmp, f"fio-{time.monotonic_ns()}.json")
    argv = ["fio", "--ioengine=nbd", f"--uri={pair.uri(node)}", "--output-format=json",
            f"--output={out}", "--verify_state_save=0", *args]
    if verify:
        argv += ["--verify=crc32c", "--verify_fatal=1", "--do_verify=1"]
    cp = run(argv, timeout=timeout, cwd=pair.tmp)
    text = harness.read_text(out)
    assert cp.returncode == 0, f"fio exit {cp.returncode}\n{cp.stderr}\n{text}\n{pair.log_tails()}"
    return json.loads(text[text.index("{"):])


class ReplicationTest(harness.ReplTestCase):

    def stop_both_and_compare(self, pair: Pair) -> None:
        """Clean stops make everything durable; then the data areas must be identical."""
        size = pair.data_bytes("alpha")
        self.assertGreater(size, 0)
        for n in ("alpha", "beta"):
            self.assertEqual(pair.daemon[n].stop(), 0, pair.daemon[n].log_tail())
        a, b = pair.digest("alpha", size), pair.digest("beta", size)
        self.assertEqual(a, b, "the two nodes' data areas differ")

    def write_and_compare(self, protocol: str) -> None:
        pair = Pair(protocol=protocol, disk_size=96 * MiB)
        pair.up_primary("alpha")
        st = pair.status("alpha")
        self.assertEqual((st["role"], st["protocol"], st["peer"]["role"]),
                         ("Primary", protocol, "Secondary"))
        report = fio(pair, "alpha", "--name=rw", "--rw=randwrite", "--bsrange=4k-256k",
                     "--bs_unaligned=0", "--iodepth=16", "--size=48M", "--randrepeat=0")
        self.assertEqual(report["jobs"][0]["error"], 0)
        self.assertEqual(report["jobs"][0]["read"]["io_bytes"], 48 * MiB)  # verified
        # nbdcopy a random image over the other half, and back out again
        src = os.path.join(pair.tmp, "random.img")
        with open(src, "wb") as f:
            f.write(os.urandom(32 * MiB))
        cp = run(["nbdcopy", "--flush", src, pair.uri("alpha")], timeout=120)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        back = os.path.join(pair.tmp, "back.img")
        cp = run(["nbdcopy", pair.uri("alpha"), back], timeout=120)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with open(src, "rb") as f1, open(back, "rb") as f2:
            self.assertEqual(f1.read(), f2.read(32 * MiB))
        st = pair.wait_status("alpha", lambda s: s["counters"]["unacked"] == 0, 30, "all acked")
        self.assertGreaterEqual(st["counters"]["sent_bytes"], 80 * MiB)
        self.assertEqual(st["out_of_sync_bytes"], 0)
        beta = pair.status("beta")
        self.assertGreaterEqual(beta["counters"]["received_bytes"], 80 * MiB)
        self.stop_both_and_compare(pair)

    def test_protocol_a_fio_nbdcopy_identical(self):
        self.write_and_compare("A")

    def test_protocol_b_fio_nbdcopy_identical(self):
        self.write_and_compare("B")

    def test_protocol_c_fio_nbdcopy_identical(self):
        self.write_and_compare("C")

    def test_secondary_refuses_nbd_clients(self):
        pair = Pair()
        pair.up_primary("alpha")
        # libnbd prints the server's message in its debug output; the daemon logs it too
        cp = run(["nbdinfo", pair.uri("beta")], timeout=30,
                 env=dict(os.environ, LIBNBD_DEBUG="1"))
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("server replied with error to opt_go", cp.stderr)
        self.assertIn("resource r0 is Secondary on node beta", cp.stderr)
        self.assertIn("replctl primary r0", cp.stderr)
        self.assertIn("refused a client: resource r0 is Secondary", pair.daemon["beta"].log_text())
        # nothing the client could have sent reached beta's disk
        self.assertEqual(pair.status("beta")["counters"]["read_bytes"], 0)
        # the Primary's clients are not affected
        cp = run(["nbdinfo", "--size", pair.uri("alpha")], timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(int(cp.stdout), pair.data_bytes("alpha"))
        # demote refused while a client holds the device open
        h = harness.open_nbd(pair.socket["alpha"], "r0")
        try:
            cp = pair.replctl("alpha", "secondary")
            self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
            self.assertIn("client", cp.stderr)
        finally:
            harness.close_nbd(h)
        pair.wait_status("alpha", lambda s: s["clients"] == 0, 10, "client gone")
        cp = pair.replctl("alpha", "secondary")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        cp = run(["nbdinfo", pair.uri("alpha")], timeout=30,
                 env=dict(os.environ, LIBNBD_DEBUG="1"))
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("Secondary on node alpha", cp.stderr)

    def test_kill9_secondary_primary_keeps_serving(self):
        pair = Pair(protocol="C", disk_size=96 * MiB)
        pair.up_primary("alpha")
        errors = []

        def writer():
            try:
                # sequential at 8 MiB/s: every second marks new blocks out of sync
                fio(pair, "alpha", "--name=bg", "--rw=write", "--bs=64k", "--iodepth=4",
                    "--size=80M", "--rate=8m", "--time_based=1", "--runtime=6", verify=False)
            except AssertionError as e:  # noqa: PERF203
                errors.append(str(e))

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(1.5)
        pair.daemon["beta"].kill9()
        st1 = pair.wait_status("alpha", lambda s: s["connection"] != "Connected"
                               and s["out_of_sync_bytes"] > 0, 10, "peer lost, writes marked")
        time.sleep(1.5)
        st2 = pair.status("alpha")
        t.join(timeout=60)
        self.assertFalse(errors, errors)  # every write kept succeeding on the Primary
        self.assertGreater(st2["out_of_sync_bytes"], st1["out_of_sync_bytes"],
                           "out-of-sync bytes did not grow while the peer was away")
        self.assertEqual(st2["role"], "Primary")
        # back again: the bitmap resync brings beta up to date, and the disks agree
        pair.start("beta")
        pair.wait_in_sync(120)
        self.stop_both_and_compare(pair)

    def test_wrong_secret_refused_on_both(self):
        pair = Pair(secrets={"alpha": "the-right-secret", "beta": "a-wrong-secret"})
        pair.create_md()
        pair.start_all()
        pair.promote("alpha", force=True)
        h = harness.open_nbd(pair.socket["alpha"], "r0")
        try:
            h.pwrite(b"\xAB" * 65536, 0)
            h.flush()
        finally:
            harness.close_nbd(h)
        time.sleep(3)  # several connection attempts
        for n in ("alpha", "beta"):
            st = pair.status(n)
            self.assertNotEqual(st["connection"], "Connected")
            self.assertEqual(st["counters"]["received_bytes"], 0)
            self.assertRegex(st["connection_error"] or "", "(?i)secret|authenticat")
            self.assertRegex(pair.daemon[n].log_text(), "(?i)secret|authenticat")
        self.assertEqual(pair.read_disk("beta", 0, 65536), b"\0" * 65536)

    def test_unaligned_requests_refused_without_direct_io(self):
        # Without O_DIRECT the local disk takes any byte, but the peer protocol moves sectors:
        # the export asks for 512-byte blocks and refuses the rest (the daemon must not abort).
        pair = Pair(disk={"direct_io": "off"})
        pair.up_primary("alpha")
        h = harness.open_nbd(pair.socket["alpha"], "r0", strict=0)
        try:
            self.assertEqual(h.get_block_size(0), 512)  # minimum block size
            with self.assertRaises(Exception) as cm:
                h.pwrite(b"x" * 100, 3)
            self.assertIn("Invalid argument", str(cm.exception))
            h.pwrite(b"y" * 512, 512)
            self.assertEqual(h.pread(512, 512), b"y" * 512)
        finally:
            harness.close_nbd(h)
        self.assertTrue(pair.daemon["alpha"].alive())
        self.stop_both_and_compare(pair)

    def test_device_wide_zeroing_with_a_small_activity_log(self):
        # 7 activity-log extents (28 MiB) and a 64 MiB write-zeroes over the whole device: it
        # goes in parts the log can hold, and both disks end up zero.
        pair = Pair(disk={"al_extents": 7}, nbd={"request_bytes_max": "1MiB"})
        pair.up_primary("alpha")
        size = pair.data_bytes("alpha")
        h = harness.open_nbd(pair.socket["alpha"], "r0")
        try:
            for off in range(0, size - MiB, 8 * MiB):
                h.pwrite(os.urandom(MiB), off)
            h.zero(size, 0)
            h.trim(size // 2, 0)
            h.flush()
            self.assertEqual(h.pread(MiB, 8 * MiB), b"\0" * MiB)
        finally:
            harness.close_nbd(h)
        st = pair.wait_status("alpha", lambda s: s["counters"]["unacked"] == 0, 30, "all acked")
        self.assertGreater(st["counters"]["al_writes"], 2)
        self.stop_both_and_compare(pair)
        self.assertEqual(pair.read_disk("beta", 40 * MiB, MiB), b"\0" * MiB)

    def test_crashed_primary_activity_log_on_disk_and_replayed(self):
        # The activity log's transactions are written through the disk ring: after a kill -9 the
        # extents written to are in the log on disk, and the restarted node marks them.
        pair = Pair()
        pair.up_primary("alpha")
        h = harness.open_nbd(pair.socket["alpha"], "r0")
        try:
            for extent in (1, 5, 9):
                h.pwrite(os.urandom(4096), extent * 4 * MiB + 8192)
        finally:
            pair.daemon["alpha"].kill9()
            try:
                harness.close_nbd(h)
            except Exception:  # noqa: BLE001 - the server is gone
                pass
        cp = pair.replctl("alpha", "dump-md", "--json")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        md = json.loads(cp.stdout)
        self.assertTrue({1, 5, 9} <= set(md["activity_log"]["hot_extents"]), md["activity_log"])
        self.assertIn("WasPrimary", md["superblock"]["flag_names"])
        pair.start("alpha")
        self.assertRegex(pair.daemon["alpha"].log_text(),
                         r"stopped without demoting \(a crash\): [1-9]\d* activity log extent")
        pair.wait_in_sync(60)
        self.stop_both_and_compare(pair)

    def test_failover_reads_back_every_acknowledged_write(self):
        pair = Pair(protocol="C")
        pair.up_primary("alpha")
        h = harness.open_nbd(pair.socket["alpha"], "r0")
        written = {}
        try:
            for i in range(200):  # each pwrite returns only when acknowledged
                offset = (i * 7919 % 4000) * 4096
                data = os.urandom(4096 * (1 + i % 4))
                h.pwrite(data, offset)
                for k in range(len(data) // 4096):
                    written[offset + k * 4096] = data[k * 4096:(k + 1) * 4096]
        finally:
            pair.daemon["alpha"].kill9()  # no flush, no clean stop
            try:
                harness.close_nbd(h)
            except Exception:  # noqa: BLE001 - the server is gone
                pass
        pair.wait_status("beta", lambda s: s["connection"] != "Connected", 15, "peer lost")
        pair.promote("beta")  # UpToDate and alone: no --force needed
        h = harness.open_nbd(pair.socket["beta"], "r0")
        try:
            for offset, data in written.items():
                self.assertEqual(h.pread(4096, offset), data, f"block at {offset} lost")
        finally:
            harness.close_nbd(h)


if __name__ == "__main__":
    harness.run_main()
