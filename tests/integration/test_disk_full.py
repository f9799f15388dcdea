#!/usr/bin/python3
"""A backing disk that runs out of space: the sparse backing file lives on a small ext4 file
system (an image on a loop device), so writes past its free space fail with ENOSPC.

- One node: the writes that do not fit fail with ENOSPC, those acknowledged before read back
  intact, and the daemon serves on and stops cleanly.
- A pair whose Secondary's disk is full during the initial sync: the Primary ends each pass
  over the failed blocks and waits 1, 2, 4 ... s before the next (it used to resend them at
  once, in a loop that sent gigabytes a second and logged every block on both nodes). Status
  says what failed. When the administrator frees space, the resync finishes by itself and both
  disks are identical.

Needs root (losetup, mount) and a free loop device; everything is unwound on failure."""

import errno
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402
from pair import Pair  # noqa: E402

DISK = 64 * MiB
SMALL_FS = 28 * MiB  # room for about 20 MiB of the 64 MiB disk
ROOMY_FS = 128 * MiB  # room for the whole disk, once its ballast is gone


def prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (losetup, mount)"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.path.exists("/dev/loop-control"):
        return "/dev/loop-control missing"
    return None


class SmallFs:
    """An ext4 file system of `size` bytes in an image file, mounted through a loop device."""

    def __init__(self, test, tmp: str, size: int):
        self.image = os.path.join(tmp, "small-fs.img")
        with open(self.image, "wb") as f:
            f.truncate(size)
        run(["mkfs.ext4", "-q", self.image], check=True, timeout=60)
        self.loop = harness.LoopDevice(self.image)
        test.addCleanup(self.loop.close)
        self.mount = harness.Mount(self.loop.dev, os.path.join(tmp, "small-fs"))
        test.addCleanup(self.mount._cleanup)
        self.root = self.mount.mountpoint

    def fill(self, leave_bytes: int) -> None:
        """A ballast file takes all the free space but `leave_bytes`."""
        st = os.statvfs(self.root)
        ballast = st.f_bavail * st.f_frsize - leave_bytes
        assert ballast > 0, f"only {st.f_bavail * st.f_frsize} bytes free"
        self.ballast = os.path.join(self.root, "ballast")
        with open(self.ballast, "wb") as f:
            for _ in range(ballast // MiB):
                f.write(b"\0" * MiB)
            f.write(b"\0" * (ballast % MiB))
            f.flush()
            os.fsync(f.fileno())

    def free(self) -> None:
        """What the administrator does: deletes what filled it."""
        os.remove(self.ballast)


class DiskFullTest(harness.ReplTestCase):

    def setUp(self):
        why = prerequisites()
        if why:
            self.skipTest(why)

    def test_one_node_fails_what_does_not_fit_and_keeps_what_was_acknowledged(self):
        tmp = harness.make_tempdir()
        fs = SmallFs(self, tmp, SMALL_FS)
        disk = harness.make_sparse_file(os.path.join(fs.root, "disk.img"), DISK)
        inst = harness.Instance(disk_path=disk, tmpdir=tmp).start()
        self.addCleanup(lambda: inst.daemon.alive() and inst.daemon.stop())
        h = inst.nbd_handle()
        acknowledged, failed = [], []
        for i in range(DISK // (4 * MiB)):
            try:
                h.pwrite(bytes([i + 1]) * (4 * MiB), i * 4 * MiB)
                acknowledged.append(i)
            except harness.nbd_module().Error as e:
                self.assertEqual(e.errnum, errno.ENOSPC, str(e))
                failed.append(i)
        self.assertGreaterEqual(len(acknowledged), 3, "the file system holds 12 MiB at least")
        self.assertTrue(failed, "64 MiB cannot fit in a 28 MiB file system")
        h.flush()
        for i in acknowledged:
            self.assertEqual(h.pread(4 * MiB, i * 4 * MiB), bytes([i + 1]) * (4 * MiB), i)
        self.assertIn("No space left on device", inst.daemon.log_tail(20))
        harness.close_nbd(h)
        self.assertEqual(inst.daemon.stop(), 0)

    def test_a_full_secondary_gets_its_resync_in_passes_and_heals_when_it_has_room(self):
        pair = Pair(disk_size=DISK)
        fs = SmallFs(self, pair.tmp, ROOMY_FS)
        inside = harness.make_sparse_file(os.path.join(fs.root, "beta.img"), DISK)
        os.remove(pair.disk["beta"])
        os.symlink(inside, pair.disk["beta"])
        pair.create_md()
        fs.fill(leave_bytes=20 * MiB)
        pair.start_all()
        for n in Pair.NODES:
            self.addCleanup(lambda d=pair.daemon[n]: d.alive() and d.stop())
        pair.wait_connected()
        with open(pair.disk["alpha"], "r+b") as f:  # data for the sync to carry
            f.write(os.urandom(DISK // 2))
        pair.promote("alpha", force=True)

        st = pair.wait_status("alpha", lambda s: s["resync"] and s["resync"]["failed_bytes"] > 0,
                              30, "a pass with failed blocks")
        self.assertEqual(st["replication"], "SyncSource")
        self.assertGreater(st["out_of_sync_bytes"], 0)
        time.sleep(5)  # passes at about 0, 1, 3 and 7 s
        st = pair.status("alpha")
        self.assertEqual(st["replication"], "SyncSource")
        self.assertLess(st["counters"]["sent_bytes"], 10 * DISK,
                        "the failed blocks went out a few times, not in a loop")
        log = pair.daemon["alpha"].log_text()
        passes = re.findall(r"the peer failed to write [\d.]+ \w+ of resync blocks in this pass "
                            r"\(error 28: No space left on device\); they stay out of sync, and "
                            r"the next pass starts in (\d+) s", log)
        self.assertGreaterEqual(len(passes), 2, log[-3000:])
        self.assertLessEqual(len(passes), 5, "one line a pass, passes 1, 2, 4 ... s apart")
        self.assertEqual([int(p) for p in passes[:3]], [1, 2, 4][:len(passes[:3])])
        self.assertLessEqual(log.count("the peer failed resync block at"), len(passes) + 1,
                             "one line per pass, not per block")
        text = pair.replctl("alpha", "status").stdout
        self.assertRegex(text, r"the peer failed to write [\d.]+ \w+ of the last pass \(its log "
                               r"says why\)")

        # The Primary serves on meanwhile; its own disk has room.
        h = harness.open_nbd(pair.socket["alpha"])
        payload = os.urandom(MiB)
        h.pwrite(payload, 0)
        h.flush()
        self.assertEqual(h.pread(MiB, 0), payload)
        harness.close_nbd(h)

        fs.free()
        pair.wait_in_sync(timeout=90)  # the next pass, at most 60 s away, finds room
        st = pair.status("alpha")
        self.assertIsNone(st["resync"])
        size = pair.data_bytes("alpha")
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())


if __name__ == "__main__":
    harness.run_main()
