#!/usr/bin/python3
"""The Primary's backing disk fails ([disk] on_io_error = "detach", the default): issue #17.

The Primary's disk here is nbdkit's memory plugin behind its error filter (writes, zeroes, trims
and reads fail with EIO while a trigger file exists), exposed as a file by nbdfuse; the
metadata of both nodes is on files of their own, so that the Primary's record of the failure
can be written (harness.FailingDisk, Pair.use_failing_disk: shared with test_disk_failure).

- fio (ioengine=nbd) writes at random with crc32c verify headers through the Primary's NBD
  socket; mid-run the trigger makes the Primary's disk fail. fio completes with no error and its
  verify pass (every block read back through the Primary, now from the peer) finds what it
  wrote. The Primary is Diskless with disk_error (what, errno 5, on_io_error detach), still
  Primary and Connected; a second fio pass (verify_only) reads it all again through it.
- Attach needs the peer: with the peer disconnected, `replctl attach` on the diskless Primary is
  refused with the reason, and nothing changes.
- The way back, without stopping the clients: the failed disk is replaced by a fresh one
  (create-md), and `replctl attach` runs on the Primary while a second fio job writes and
  verifies through it. The client's requests wait during the attach and go on: fio completes
  with no error and its verify pass finds every block. The node stays Primary, with a disk
  again (a full resync from the peer, the blocks not yet synced read from the peer); after the
  resync both data areas are identical byte for byte, and fio's verify_only pass holds.
- The failed disk itself comes back (the trigger removed, no create-md): `replctl attach` on the
  Primary takes it as a disk that failed (its status keeps the failure until the resync),
  resyncs it whole, and every byte written while it was away (4 MiB by nbdcopy) is on it.

Needs root (FUSE), nbdkit with its error filter, nbdfuse, fio. Every nbdkit and nbdfuse process
it starts is stopped, by PID, and every mount undone, also when it fails."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402
from pair import Pair  # noqa: E402

DISK = 64 * MiB
FIO_JOB = ["--name=failing", "--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=24M",
           "--randrepeat=1", "--rate=6m"]


class PrimaryDiskFailureTest(harness.ReplTestCase):

    def setUp(self):
        why = harness.nbdkit_disk_prerequisites("fio")
        if why:
            self.skipTest(why)

    def fio_argv(self, pair: Pair, out: str, *extra: str) -> list[str]:
        return ["fio", "--ioengine=nbd", f"--uri={pair.uri('alpha')}", *FIO_JOB,
                "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0",
                "--output-format=json", f"--output={out}", *extra]

    def check_fio(self, cp, out: str, read_bytes: int) -> None:
        text = harness.read_text(out)
        self.assertEqual(cp.returncode, 0, f"fio exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n"
                         f"{text}")
        self.assertNotRegex(cp.stderr, r"(?i)verify|bad magic|crc32c", cp.stderr)
        job = json.loads(text[text.index("{"):])["jobs"][0]
        self.assertEqual(job["error"], 0, text)
        self.assertEqual(job["read"]["io_bytes"], read_bytes, "every block written read back")

    def verify_only(self, pair: Pair, name: str) -> None:
        out = os.path.join(pair.tmp, f"{name}.json")
        cp = run(self.fio_argv(pair, out, "--verify_only=1", "--verify_state_load=0"),
                 timeout=200, cwd=pair.tmp)
        self.check_fio(cp, out, 24 * MiB)

    def test_a_failing_primary_serves_through_its_peer_and_attach_resyncs_it(self):
        pair = Pair(disk_size=DISK)
        disk = pair.use_failing_disk(self, "alpha",
                                     ops=("pwrite", "zero", "trim", "pread"))
        pair.up_primary("alpha", test=self)

        # fio through the Primary; its disk starts failing a second into the write phase.
        out = os.path.join(pair.tmp, "fio.json")
        fio = subprocess.Popen(self.fio_argv(pair, out, "--do_verify=1"), cwd=pair.tmp,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: fio.poll() is None and fio.kill())
        pair.wait_status("alpha", lambda s: s["counters"]["written_bytes"] >= 2 * MiB, 60,
                         "fio writing")
        disk.fail_writes(True)
        stdout, stderr = fio.communicate(timeout=240)
        self.check_fio(subprocess.CompletedProcess(fio.args, fio.returncode, stdout, stderr),
                       out, 24 * MiB)

        st = pair.status("alpha")
        self.assertEqual((st["role"], st["disk"], st["connection"]),
                         ("Primary", "Diskless", "Connected"), st)
        err = st["disk_error"]
        self.assertIsNotNone(err, st)
        self.assertEqual((err["errno"], err["on_io_error"]), (5, "detach"), err)
        self.assertIn("serves through its peer", pair.daemon["alpha"].log_text())
        # The failed disk and its metadata are let go of, so that they can be replaced.
        self.assertTrue(harness.wait_until(
            lambda: "released the failed disk" in pair.daemon["alpha"].log_text(), 30),
            "alpha released its failed disk")
        self.assertGreater(st["counters"]["peer_read_bytes"], 0, "fio's verify read the peer")
        b = pair.status("beta")
        self.assertEqual((b["disk"], b["peer"]["disk"]), ("UpToDate", "Diskless"), b)
        # Everything fio wrote is on the peer: read all of it again through the Primary.
        self.verify_only(pair, "verify-diskless")

        # Without the peer there is nothing to resync a new disk from: refused, nothing changes.
        cp = pair.replctl("beta", "disconnect")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_status("alpha", lambda s: s["connection"] != "Connected", 30, "alpha alone")
        cp = pair.replctl("alpha", "attach")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("no UpToDate peer connected", cp.stderr)
        st = pair.status("alpha")
        self.assertEqual((st["role"], st["disk"]), ("Primary", "Diskless"), st)
        cp = pair.replctl("beta", "connect")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_status("alpha", lambda s: s["connection"] == "Connected", 60, "reconnected")

        # A fresh disk in place of the failed one, attached while a client writes through the
        # Primary.
        os.remove(pair.disk["alpha"])
        harness.make_sparse_file(pair.disk["alpha"], DISK)
        cp = pair.replctl("alpha", "create-md", "--force")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        out = os.path.join(pair.tmp, "fio-attach.json")
        fio = subprocess.Popen(self.fio_argv(pair, out, "--do_verify=1"), cwd=pair.tmp,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: fio.poll() is None and fio.kill())
        sent = pair.status("alpha")["counters"]["sent_bytes"]  # its writes go to the peer only
        pair.wait_status("alpha", lambda s: s["counters"]["sent_bytes"] >= sent + 2 * MiB,
                         60, "fio writing through the diskless Primary")
        cp = pair.replctl("alpha", "attach")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("full resync from the peer", cp.stdout)
        if fio.poll() is not None:
            stdout, stderr = fio.communicate()
            self.fail(f"fio ended before the attach was done (exit {fio.returncode}): the "
                      f"attach must happen under its writes\n{stdout}\n{stderr}\n"
                      f"{harness.read_text(out)}")
        st = pair.status("alpha")
        self.assertEqual(st["role"], "Primary", st)
        self.assertIn(st["disk"], ("Inconsistent", "UpToDate"), st)
        self.assertIsNone(st["disk_error"], "a new disk, no failure")
        stdout, stderr = fio.communicate(timeout=240)
        self.check_fio(subprocess.CompletedProcess(fio.args, fio.returncode, stdout, stderr),
                       out, 24 * MiB)
        self.assertIn("attached", pair.daemon["alpha"].log_text())
        pair.wait_in_sync(timeout=180)
        st = pair.status("alpha")
        self.assertEqual((st["role"], st["disk"]), ("Primary", "UpToDate"), st)
        size = pair.data_bytes("alpha")
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size),
                         "both data areas are identical after the resync")
        self.verify_only(pair, "verify-repaired")

    def test_the_failed_disk_back_is_attached_to_the_primary_and_resynced_whole(self):
        pair = Pair(disk_size=DISK)
        disk = pair.use_failing_disk(self, "alpha")
        pair.up_primary("alpha", test=self)
        disk.fail_writes(True)
        data = os.urandom(4 * MiB)
        src = os.path.join(pair.tmp, "payload.bin")
        with open(src, "wb") as f:
            f.write(data)
        cp = run(["nbdcopy", "--flush", src, pair.uri("alpha")], timeout=120)
        self.assertEqual(cp.returncode, 0, f"nbdcopy through the Primary: {cp.stdout}{cp.stderr}")
        st = pair.status("alpha")
        self.assertEqual((st["role"], st["disk"]), ("Primary", "Diskless"), st)
        self.assertTrue(harness.wait_until(
            lambda: "released the failed disk" in pair.daemon["alpha"].log_text(), 30),
            "alpha released its failed disk")

        disk.fail_writes(False)  # repaired, and the same disk: no create-md
        cp = pair.replctl("alpha", "attach")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        st = pair.status("alpha")
        self.assertEqual(st["role"], "Primary", st)
        if st["disk"] != "UpToDate":
            self.assertIsNotNone(st["disk_error"], "the failure is shown until the resync")
        pair.wait_in_sync(timeout=180)
        st = pair.status("alpha")
        self.assertEqual((st["role"], st["disk"], st["disk_error"]), ("Primary", "UpToDate", None),
                         st)
        self.assertEqual(pair.read_disk("alpha", 0, len(data)), data,
                         "what was written while the disk was away is on it")
        size = pair.data_bytes("alpha")
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))


if __name__ == "__main__":
    harness.run_main()
