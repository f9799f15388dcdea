#!/usr/bin/python3
"""`replctl import-drbd`: the seed's drbd.conf (tests/data/seed-drbd.conf) turned
into repld resource files that `replctl check-config` accepts, --output-dir
and its refusal to overwrite, --resource, and a drbd.conf whose disks are
files here, down to `replctl create-md` on the generated file."""

import os
import re
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB, run  # noqa: E402

SEED = str(harness.REPO / "tests/data/seed-drbd.conf")


class ImportDrbdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_binary(harness.REPLCTL_BIN, "replctl")

    def setUp(self):
        self.tmp = harness.make_tempdir()

    def replctl(self, *args: str):
        return run([harness.REPLCTL_BIN, *args])

    def test_seed_to_files_that_check(self):
        out = os.path.join(self.tmp, "etc")
        os.mkdir(out)
        cp = self.replctl("import-drbd", SEED, "--output-dir", out)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["mysql.toml", "www.toml"])
        # Every warning names the drbd.conf's line: the generated secrets (on-io-error detach
        # is [disk] on_io_error, no warning).
        warnings = [l for l in cp.stderr.splitlines() if l.startswith("replctl: warning: ")]
        self.assertEqual(len(warnings), 2, cp.stderr)
        for line in warnings:
            self.assertRegex(line, r"^replctl: warning: .*seed-drbd\.conf:\d+: ")
        secrets = set()
        for name, minor in (("www", 0), ("mysql", 1)):
            path = os.path.join(out, name + ".toml")
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)  # it holds the secret
            text = harness.read_text(path)
            self.assertTrue(text.startswith(f"# /etc/repld/{name}.toml"), text)
            self.assertIn(f"ublk_device_id = {minor}", text)
            secrets.update(re.findall(r'^secret = "([0-9a-f]{64})"$', text, re.M))
            cp = self.replctl("check-config", path)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertIn(f"resource '{name}', 2 node(s), protocol C", cp.stdout)
        self.assertEqual(len(secrets), 2)  # one random secret per resource

        again = self.replctl("import-drbd", SEED, "--output-dir", out)
        self.assertEqual(again.returncode, 1)
        self.assertIn("exists; pass --force to overwrite it", again.stderr)
        forced = self.replctl("import-drbd", SEED, "-o", out, "--resource", "www", "--force")
        self.assertEqual(forced.returncode, 0, forced.stderr)

    def test_stdout_holds_both_resources(self):
        cp = self.replctl("import-drbd", SEED)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(re.findall(r"^# (/etc/repld/\w+\.toml): ", cp.stdout, re.M),
                         ["/etc/repld/www.toml", "/etc/repld/mysql.toml"])
        cp = self.replctl("import-drbd", SEED, "--resource", "mysql")
        self.assertEqual(re.findall(r"^name = .*$", cp.stdout, re.M), ['name = "mysql"'])
        missing = self.replctl("import-drbd", SEED, "--resource", "pgsql")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no resource pgsql; resources here: www, mysql", missing.stderr)

    def test_errors(self):
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("resource r0 {\n  protocol C\n}\n")
        cp = self.replctl("import-drbd", bad)
        self.assertEqual(cp.returncode, 1)
        self.assertIn(f"replctl: error: {bad}:2:13: expected ';' or '{{' after 'protocol C'",
                      cp.stderr)
        self.assertEqual(self.replctl("import-drbd").returncode, 2)  # usage
        cp = self.replctl("import-drbd", SEED, "-o", os.path.join(self.tmp, "nope"))
        self.assertEqual(cp.returncode, 1)
        self.assertIn("not a directory", cp.stderr)

    def test_generated_file_takes_metadata(self):
        disks = {n: harness.make_sparse_file(os.path.join(self.tmp, n + ".img"), 64 * MiB)
                 for n in ("alpha", "beta")}
        conf = os.path.join(self.tmp, "drbd.conf")
        with open(conf, "w") as f:
            f.write(f"""resource r9 {{
  protocol A;
  net {{ shared-secret "it-secret"; ping-int 2; ping-timeout 3; }}
  syncer {{ rate 33M; al-extents 31; }}
  on alpha {{ device /dev/drbd9; disk {disks['alpha']}; address 127.0.0.1:7790;
             meta-disk internal; }}
  on beta {{ device /dev/drbd9; disk {disks['beta']}; address 127.0.0.1:7791;
            meta-disk internal; }}
}}
""")
        cp = self.replctl("import-drbd", conf, "-o", self.tmp)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stderr, "")  # everything maps
        path = os.path.join(self.tmp, "r9.toml")
        for node in ("alpha", "beta"):
            cp = self.replctl("check-config", path, "--node", node)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            cp = self.replctl("create-md", "r9", "-c", path, "-n", node)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            cp = self.replctl("dump-md", "r9", "-c", path, "-n", node, "--json")
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertIn('"al_extents": 31', cp.stdout)


if __name__ == "__main__":
    harness.run_main()
