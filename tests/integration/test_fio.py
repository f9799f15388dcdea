#!/usr/bin/python3
"""fio (ioengine=nbd, i.e. libnbd) random writes with crc32c verification."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402


class FioTest(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.inst = harness.Instance(64 * MiB, export="fio")
        cls.inst.start()

    def fio(self, *args, inst=None):
        inst = inst or self.inst
        out = os.path.join(inst.tmp, "fio.json")
        argv = ["fio", "--ioengine=nbd", f"--uri={inst.uri('')}",
                "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
                "--verify_state_save=0",
                "--output-format=json", f"--output={out}", *args]
        cp = run(argv, timeout=280, cwd=inst.tmp)  # fio drops state files in its cwd
        text = harness.read_text(out)
        self.assertEqual(cp.returncode, 0, f"fio exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n{text}")
        self.assertNotRegex(cp.stderr, r"(?i)verify|bad magic|crc32c",
                            f"fio reported verification problems:\n{cp.stderr}")
        # fio may print a non-JSON banner line before the JSON object
        report = json.loads(text[text.index("{"):])
        return report

    def check_jobs(self, report, expect_jobs, bytes_per_job):
        jobs = report["jobs"]
        self.assertEqual(len(jobs), expect_jobs)
        for j in jobs:
            self.assertEqual(j["error"], 0, j)
            self.assertEqual(j["write"]["io_bytes"], bytes_per_job, f"job {j['jobname']} write")
            # the verify pass read everything back (so verification happened)
            self.assertEqual(j["read"]["io_bytes"], bytes_per_job, f"job {j['jobname']} verify read")

    def test_randwrite_4k_qd32(self):
        report = self.fio("--name=rw4k", "--rw=randwrite", "--bs=4k", "--iodepth=32",
                          "--size=64M")
        self.check_jobs(report, 1, 64 * MiB)

    def test_mixed_bs_two_jobs(self):
        # two jobs = two NBD connections, each on its own half of the export
        report = self.fio("--name=mixed", "--rw=randwrite", "--bsrange=4k-256k",
                          "--bs_unaligned=0", "--iodepth=8", "--numjobs=2", "--size=32M",
                          "--offset_increment=32M", "--randrepeat=0")
        self.check_jobs(report, 2, 32 * MiB)

    def test_after_restart_data_verifies(self):
        # write with verify headers, restart the daemon, verify-only pass
        inst = self.new_instance(64 * MiB, export="fio")
        self.fio("--name=persist", "--rw=write", "--bs=64k", "--iodepth=16", "--size=16M",
                 "--offset=48M", inst=inst)
        self.assertEqual(inst.daemon.stop(), 0)
        inst.restart()
        out = os.path.join(inst.tmp, "fio-verify.json")
        cp = run(["fio", "--ioengine=nbd", f"--uri={inst.uri('')}", "--name=persist",
                  "--rw=write", "--bs=64k", "--iodepth=16", "--size=16M", "--offset=48M",
                  "--verify=crc32c", "--verify_fatal=1", "--verify_only=1",
                  "--verify_state_save=0", "--verify_state_load=0",
                  "--output-format=json", f"--output={out}"], timeout=200, cwd=inst.tmp)
        text = harness.read_text(out)
        self.assertEqual(cp.returncode, 0, f"{cp.stdout}\n{cp.stderr}\n{text}")
        job = json.loads(text[text.index("{"):])["jobs"][0]
        self.assertEqual(job["error"], 0)
        self.assertEqual(job["read"]["io_bytes"], 16 * MiB)
        self.assertEqual(inst.daemon.stop(), 0)


if __name__ == "__main__":
    harness.run_main()
