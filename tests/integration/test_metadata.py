#!/usr/bin/python3
"""On-disk metadata: `replctl create-md` and `replctl dump-md` on real files
(internal and external metadata), their refusals (existing metadata, a file
system that internal metadata would overwrite, a disk in use by a running
repld) and how damage is reported (docs/metadata.md)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import KiB, MiB, GiB, run  # noqa: E402

BLOCK = 4096
AL_SLOTS = 32


def align_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def md_bytes_for(backing: int, al_extents: int) -> int:
    """The formula of docs/metadata.md."""
    bitmap = align_up((backing // BLOCK + (backing % BLOCK != 0) + 7) // 8, BLOCK)
    slot = align_up(64 + 4 * al_extents, BLOCK)
    return BLOCK + AL_SLOTS * slot + bitmap


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MetadataTest(harness.ReplTestCase):

    def setUp(self):
        harness.require_binary(harness.REPLCTL_BIN, "replctl")
        self.tmp = harness.make_tempdir()

    def config(self, disk: str, name: str = "md.toml", **disk_table) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(harness.config_text(resource="r0", disk=disk_table or None,
                                        nodes={"a": {"disk": disk}}))
        return path

    def replctl(self, *args, config: str) -> subprocess.CompletedProcess:
        return run([harness.REPLCTL_BIN, *args, "r0", "-c", config, "-n", "a"], timeout=60)

    def ok(self, cp: subprocess.CompletedProcess) -> str:
        self.assertEqual(cp.returncode, 0, f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
        return cp.stdout

    def refused(self, cp: subprocess.CompletedProcess, *parts: str) -> str:
        self.assertNotEqual(cp.returncode, 0, f"expected a refusal:\n{cp.stdout}")
        self.assertIn("replctl: error: ", cp.stderr)
        for p in parts:
            self.assertIn(p, cp.stderr)
        return cp.stderr

    def dump_json(self, config: str) -> dict:
        return json.loads(self.ok(self.replctl("dump-md", "--json", config=config)))

    # ---- the cases -------------------------------------------------------
    def test_create_and_dump_internal(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 64 * MiB)
        cfg = self.config(disk)
        out = self.ok(self.replctl("create-md", config=cfg))
        md = md_bytes_for(64 * MiB, 1237)
        self.assertEqual(md, 4096 + 32 * 8192 + 4096)
        data = 64 * MiB - md
        self.assertIn(f"{data} bytes", out)

        human = self.ok(self.replctl("dump-md", config=cfg))
        for part in ("internal metadata", "format version 1, checksum ok", "disk Inconsistent",
                     "current UUID     0000000000000000 (just created)",
                     f"data             {data} bytes", f"metadata         {md} bytes (",
                     f") at byte {data}",
                     f"superblock       4096 bytes at byte {64 * MiB - 4096}",
                     "activity log     32 slots x 8192 bytes", "bitmap: 0 of",
                     "activity log: transaction seq 0, 0 hot extent(s)"):
            self.assertIn(part, human)

        j = self.dump_json(cfg)
        self.assertEqual(j["layout"]["data_bytes"], data)
        self.assertEqual(j["layout"]["md_bytes"], md)
        self.assertEqual(j["layout"]["md_offset"], data)
        self.assertEqual(j["layout"]["superblock_offset"], 64 * MiB - 4096)
        self.assertTrue(j["layout"]["internal"])
        self.assertEqual(j["bitmap"]["bits"], data // BLOCK)
        self.assertEqual(j["bitmap"]["set_bits"], 0)
        self.assertEqual(j["bitmap"]["out_of_sync_bytes"], 0)
        self.assertEqual(j["activity_log"]["seq"], 0)
        self.assertEqual(j["activity_log"]["hot_extents"], [])
        sb = j["superblock"]
        self.assertEqual(sb["format_version"], 1)
        self.assertEqual(sb["al_extents"], 1237)
        self.assertEqual(sb["current_uuid"], "0" * 16)
        self.assertEqual(sb["disk_state"], "Inconsistent")
        self.assertEqual((sb["resource_name"], sb["node_name"]), ("r0", "a"))
        # the data area was not touched, only the end of the file
        with open(disk, "rb") as f:
            self.assertEqual(f.read(data), b"\0" * data)

    def test_create_md_shows_progress_on_a_terminal_only(self):
        # 1 TiB (sparse): a 32 MiB bitmap to zero
        disk = harness.make_sparse_file(os.path.join(self.tmp, "big.img"), 1 << 40)
        cfg = self.config(disk)
        cp = harness.run_on_terminal([harness.REPLCTL_BIN, "create-md", "r0", "-c", cfg, "-n", "a"])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        lines = cp.stdout.replace("\r\n", "\n").split("\r")
        self.assertTrue(lines[1].startswith("create-md: zeroing the activity log and bitmap ["),
                        cp.stdout)
        self.assertIn("] 100.0% (32.2 MiB of 32.2 MiB)", lines[-1])
        self.assertIn("\ncreated internal metadata for resource r0 on node a", lines[-1])
        # Not on a pipe: scripts and logs get the result lines only.
        out = self.ok(self.replctl("create-md", "--force", config=cfg))
        self.assertNotIn("\r", out)
        self.assertNotIn("zeroing", out)
        self.assertTrue(out.startswith("created internal metadata"), out)

    def test_existing_metadata_needs_force(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 32 * MiB)
        cfg = self.config(disk)
        self.ok(self.replctl("create-md", config=cfg))
        uuid = self.dump_json(cfg)["superblock"]["device_uuid"]
        before = sha256(disk)
        self.refused(self.replctl("create-md", config=cfg), "already has metadata", uuid,
                     "--force forgets the bitmap and generation identifiers")
        self.assertEqual(sha256(disk), before, "a refused create-md changed the disk")
        self.ok(self.replctl("create-md", "--force", config=cfg))
        self.assertNotEqual(self.dump_json(cfg)["superblock"]["device_uuid"], uuid)

    def test_al_extents_from_config(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 1 * GiB)
        cfg = self.config(disk, al_extents=7)
        self.ok(self.replctl("create-md", config=cfg))
        j = self.dump_json(cfg)
        self.assertEqual(j["superblock"]["al_extents"], 7)
        self.assertEqual(j["layout"]["al_slot_bytes"], 4096)
        self.assertEqual(j["layout"]["md_bytes"], md_bytes_for(1 * GiB, 7))

    def test_too_small_disk(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 1 * MiB)
        self.refused(self.replctl("create-md", config=self.config(disk)),
                     "too small for internal metadata")

    def test_file_system_refuses_internal_but_external_works(self):
        if shutil.which("mkfs.ext4") is None:
            self.skipTest("mkfs.ext4 is not installed")
        disk = harness.make_sparse_file(os.path.join(self.tmp, "fs.img"), 64 * MiB)
        run(["mkfs.ext4", "-q", "-F", disk], check=True)
        before = sha256(disk)
        err = self.refused(self.replctl("create-md", config=self.config(disk)),
                           "ext2/3/4 file system", "external metadata", "meta_disk",
                           "resize2fs", "--force")
        self.assertIn(f"{64 * MiB - md_bytes_for(64 * MiB, 1237)} bytes", err)
        self.assertEqual(sha256(disk), before, "a refused create-md changed the disk")

        meta = harness.make_sparse_file(os.path.join(self.tmp, "meta.img"), 1 * MiB)
        cfg = self.config(disk, name="ext.toml", meta_disk=meta)
        out = self.ok(self.replctl("create-md", config=cfg))
        self.assertIn("external metadata", out)
        self.assertEqual(sha256(disk), before, "external create-md changed the data disk")
        j = self.dump_json(cfg)
        self.assertFalse(j["layout"]["internal"])
        self.assertEqual(j["layout"]["data_bytes"], 64 * MiB)
        self.assertEqual(j["layout"]["md_offset"], 0)
        self.assertEqual(j["meta_disk"], meta)
        run(["e2fsck", "-n", "-f", disk], check=True)

    def test_external_metadata_file_too_small(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 64 * MiB)
        meta = harness.make_sparse_file(os.path.join(self.tmp, "meta.img"), 64 * KiB)
        self.refused(self.replctl("create-md", config=self.config(disk, meta_disk=meta)),
                     "too small", f"needs {md_bytes_for(64 * MiB, 1237)} bytes")

    def test_damaged_superblock_is_reported_never_rewritten(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 32 * MiB)
        cfg = self.config(disk)
        self.ok(self.replctl("create-md", config=cfg))
        sb_offset = 32 * MiB - 4096
        run(["dd", "if=/dev/urandom", f"of={disk}", "bs=1", "count=1",
             f"seek={sb_offset + 200}", "conv=notrunc", "status=none"], check=True)
        before = sha256(disk)
        for args in (["dump-md"], ["dump-md", "--json"]):
            err = self.refused(self.replctl(*args, config=cfg), "checksum mismatch",
                               f"at byte {sb_offset}", "expected 0x", "found 0x")
            self.assertNotIn("Traceback", err)
        self.refused(self.replctl("create-md", config=cfg), "damaged repld metadata",
                     "checksum mismatch", "--force")
        self.assertEqual(sha256(disk), before, "damaged metadata was rewritten")

    def test_no_metadata(self):
        disk = harness.make_sparse_file(os.path.join(self.tmp, "disk.img"), 32 * MiB)
        self.refused(self.replctl("dump-md", config=self.config(disk)), "no repld metadata",
                     "replctl create-md r0")

    def test_disk_in_use_by_a_running_repld(self):
        inst = harness.Instance(32 * MiB, tmpdir=self.tmp)
        self.ok(run([harness.REPLCTL_BIN, "create-md", "it", "-c", inst.config_path, "-n", "a"]))
        inst.start()
        before = sha256(inst.disk_path)
        cp = run([harness.REPLCTL_BIN, "create-md", "it", "--force", "-c", inst.config_path,
                  "-n", "a"], timeout=60)
        self.refused(cp, "in use by a running repld")
        self.assertEqual(sha256(inst.disk_path), before)
        # reading does not need the lock
        self.ok(run([harness.REPLCTL_BIN, "dump-md", "it", "-c", inst.config_path, "-n", "a"]))
        self.assertEqual(inst.daemon.stop(), 0)


if __name__ == "__main__":
    harness.run_main()
