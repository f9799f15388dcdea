#!/usr/bin/python3
"""A real ext4 file system on repld:
nbdfuse (export as a file) -> loop device (direct I/O) -> mkfs.ext4 -> mount.

Needs root, /dev/fuse and a free loop device.  Everything is unwound on any
failure: umount, losetup -d, fusermount3 -u (nbdfuse exits), repld stopped.
"""

import hashlib
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import KiB, MiB, run  # noqa: E402

DISK = 256 * MiB


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def tree_checksums(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if rel.startswith("lost+found"):
                continue
            out[rel] = sha256(p)
    return out


def prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (losetup, mount)"
    for tool in ("nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    if not os.path.exists("/dev/loop-control"):
        return "/dev/loop-control missing"
    return None


class Stack:
    """repld export -> nbdfuse file -> loop device (-> optional mount)."""

    def __init__(self, inst, tag: str):
        self.fuse = harness.FuseFile(os.path.join(inst.tmp, f"fuse-{tag}"), inst.socket, inst.tmp)
        self.loop = harness.LoopDevice(self.fuse.file, direct_io=True)
        self.mnt_dir = os.path.join(inst.tmp, f"mnt-{tag}")
        self.mount = None

    def mount_fs(self):
        self.mount = harness.Mount(self.loop.dev, self.mnt_dir)
        return self.mnt_dir

    def umount(self):
        if self.mount:
            self.mount.close()
            self.mount = None

    def close(self):
        self.umount()
        self.loop.close()
        self.fuse.close()


class MountTest(harness.ReplTestCase):
    def setUp(self):
        why = prerequisites()
        if why:
            self.skipTest(why)
        harness.sweep_stale()

    def fsck(self, dev: str):
        cp = run(["fsck.ext4", "-n", "-f", dev], timeout=180)
        self.assertEqual(cp.returncode, 0, f"fsck.ext4 -n -f {dev}: exit {cp.returncode}\n"
                                           f"{cp.stdout}\n{cp.stderr}")

    def populate(self, root: str) -> dict[str, str]:
        rnd = random.Random(1234)
        os.makedirs(os.path.join(root, "big"))
        for i, size in enumerate((8 * MiB, 5 * MiB + 12345, 3 * MiB)):
            with open(os.path.join(root, "big", f"f{i}.bin"), "wb") as f:
                left = size
                while left:
                    n = min(left, MiB)
                    f.write(os.urandom(n))
                    left -= n
        for d in range(10):
            sub = os.path.join(root, "small", f"d{d:02}")
            os.makedirs(sub)
            for i in range(40):
                with open(os.path.join(sub, f"s{i:03}.dat"), "wb") as f:
                    f.write(os.urandom(rnd.randint(1, 16 * KiB)))
        # a file rewritten in place and a deleted one (exercise TRIM via ext4)
        p = os.path.join(root, "rewritten.bin")
        with open(p, "wb") as f:
            f.write(os.urandom(2 * MiB))
        with open(p, "r+b") as f:
            f.seek(512 * KiB)
            f.write(b"\x00" * 300 * KiB)
        gone = os.path.join(root, "deleted.bin")
        with open(gone, "wb") as f:
            f.write(os.urandom(4 * MiB))
        os.sync()
        os.unlink(gone)
        os.sync()
        run(["sync"], check=True)
        sums = tree_checksums(root)
        self.assertEqual(len(sums), 3 + 400 + 1)
        return sums

    def test_ext4_roundtrip(self):
        inst = self.new_instance(DISK, export="fs")
        stack = Stack(inst, "a")
        self.addCleanup(stack.close)
        self.assertEqual(os.path.getsize(stack.fuse.file), DISK)

        run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", stack.loop.dev], check=True, timeout=180)
        root = stack.mount_fs()
        sums = self.populate(root)
        run(["fstrim", "-v", root], timeout=120)  # whole-fs TRIM; result not asserted
        stack.umount()
        self.fsck(stack.loop.dev)

        # same stack, mount again: everything is there
        root = stack.mount_fs()
        self.assertEqual(tree_checksums(root), sums)
        stack.umount()
        stack.close()

        # clean daemon shutdown, new daemon, new stack: still there
        self.assertEqual(inst.daemon.stop(), 0)
        inst.restart()
        stack2 = Stack(inst, "b")
        self.addCleanup(stack2.close)
        self.fsck(stack2.loop.dev)
        root = stack2.mount_fs()
        self.assertEqual(tree_checksums(root), sums)
        # write more after the restart, then verify once more
        with open(os.path.join(root, "after-restart.bin"), "wb") as f:
            f.write(os.urandom(MiB))
        sums2 = tree_checksums(root)
        stack2.umount()
        self.fsck(stack2.loop.dev)
        root = stack2.mount_fs()
        self.assertEqual(tree_checksums(root), sums2)
        stack2.close()
        self.assertEqual(inst.daemon.stop(), 0)


if __name__ == "__main__":
    if prerequisites():
        print(f"skipping: {prerequisites()}")
    harness.run_main()
