#!/usr/bin/python3
"""Every replctl verb, once: its --help, its exit status when the daemon is not running, and a
run against two running daemons started and stopped with `replctl up` / `down`, with the human
and the JSON output where a verb has both. The list of verbs here is checked against
`replctl --help`, and each verb against the man page and docs/control.md: a new verb fails this
test until it is documented and exercised here."""

import grp
import json
import os
import re
import shutil
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402

# The verbs that talk to a running daemon over its control socket.
ONLINE = ["status", "events", "primary", "secondary", "connect", "disconnect", "invalidate",
          "invalidate-remote", "pause-sync", "resume-sync", "verify", "detach", "attach",
          "adjust", "wait-connect", "wait-sync"]
# The others: files, metadata, the daemon's process, kernel devices.
OFFLINE = ["check-config", "import-drbd", "create-md", "dump-md", "up", "down", "nbd-attach",
           "nbd-detach"]


def replctl(*args: str, timeout: float = 120):
    return harness.run([harness.REPLCTL_BIN, *args], timeout=timeout)


class VerbsTest(harness.ReplTestCase):

    def ok(self, pair: Pair, node: str, *args: str) -> str:
        cp = pair.replctl(node, *args, timeout=120)
        self.assertEqual(cp.returncode, 0, f"{args} on {node}: {cp.stdout}{cp.stderr}")
        return cp.stdout

    def test_every_verb_is_listed_documented_and_has_help(self):
        cp = replctl("--help")
        self.assertEqual(cp.returncode, 0)
        listed = re.findall(r"^  ([a-z][a-z-]+) ", cp.stdout.split("Subcommands:")[1], re.M)
        self.assertEqual(sorted(listed), sorted(ONLINE + OFFLINE))
        self.assertIn("Exit status: 0 done, 1 refused or failed, 2 usage, 3 the daemon is not "
                      "running, 4 adjust needs a restart, 5 a wait timed out", cp.stdout)
        man = harness.read_text(str(harness.REPO / "man/replctl.8")).replace("\\-", "-")
        control = harness.read_text(str(harness.REPO / "docs/control.md"))
        for verb in listed:
            with self.subTest(verb=verb):
                cp = replctl(verb, "--help")
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertIn("Usage:", cp.stdout)
                self.assertRegex(man, rf"(\\fB|\.BI? ){re.escape(verb)}\b")
                self.assertRegex(control, rf"replctl {re.escape(verb)}\b")

    def test_every_online_verb_says_the_daemon_is_not_running(self):
        pair = Pair(disk_size=64 * MiB)
        for verb in ONLINE:
            with self.subTest(verb=verb):
                cp = pair.replctl("alpha", verb, timeout=30)
                self.assertEqual(cp.returncode, 3, f"{verb}: {cp.stdout}{cp.stderr}")
                self.assertIn("the repld daemon for resource 'r0' (node alpha) is not running",
                              cp.stderr)
                self.assertIn("start it with", cp.stderr)
        cp = pair.replctl("alpha", "down")
        self.assertEqual(cp.returncode, 0, "down: nothing to stop is no error")

    def test_every_verb_against_running_daemons(self):
        pair = Pair(disk_size=64 * MiB)
        path = pair.config["alpha"]
        self.assertIn("configuration is valid", replctl("check-config", path).stdout)
        cp = replctl("import-drbd", str(harness.REPO / "tests/data/seed-drbd.conf"))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn('name = "www"', cp.stdout)

        for n in Pair.NODES:
            self.assertIn("created internal metadata", self.ok(pair, n, "create-md"))
        self.assertIn("internal metadata", self.ok(pair, "alpha", "dump-md"))
        md = json.loads(self.ok(pair, "alpha", "dump-md", "--json"))
        self.assertEqual(md["superblock"]["node_name"], "alpha")

        for n in Pair.NODES:
            self.addCleanup(pair.replctl, n, "down")
            out = self.ok(pair, n, "up", "--log", pair.log[n])
            self.assertRegex(out, rf"resource r0: repld started \(pid \d+, node {n}\)")
        self.assertIn("already", self.ok(pair, "alpha", "up", "--log", pair.log["alpha"]))
        self.assertIn("connected to the peer", self.ok(pair, "alpha", "wait-connect"))
        self.ok(pair, "alpha", "primary", "--force")
        self.assertIn("in sync with the peer", self.ok(pair, "beta", "wait-sync"))

        human = self.ok(pair, "alpha", "status")
        self.assertRegex(human, r"r0 role:Primary")
        self.assertIn("beta role:Secondary\n    replication:Established peer-disk:UpToDate", human)
        st = json.loads(self.ok(pair, "alpha", "status", "--json"))
        self.assertEqual((st["role"], st["disk"], st["peer"]["disk"]),
                         ("Primary", "UpToDate", "UpToDate"))
        lines = self.ok(pair, "alpha", "events", "--now").splitlines()
        self.assertEqual(lines[-1], "exists -")
        self.assertRegex(lines[0], r"^\S+Z exists resource name:r0 role:Primary$")
        objects = [json.loads(ln)["object"]
                   for ln in self.ok(pair, "alpha", "events", "--now", "--json").splitlines()]
        self.assertEqual(objects, ["resource", "device", "connection", "peer-device"])

        self.assertIn("resync paused", self.ok(pair, "alpha", "pause-sync"))
        self.assertIn("resync resumed", self.ok(pair, "alpha", "resume-sync"))
        self.assertIn("no difference", self.ok(pair, "alpha", "verify", "--wait"))
        self.assertIn("online verify started", self.ok(pair, "beta", "verify"))
        pair.wait_status("beta", lambda s: not s["verify"]["running"], 60, "verify done")

        self.assertIn("StandAlone until 'replctl connect'", self.ok(pair, "beta", "disconnect"))
        self.assertIn("connecting to the peer", self.ok(pair, "beta", "connect"))
        self.ok(pair, "beta", "wait-sync")
        self.assertIn("full sync from the peer", self.ok(pair, "beta", "invalidate"))
        self.ok(pair, "beta", "wait-sync")
        self.assertIn("full sync to it", self.ok(pair, "alpha", "invalidate-remote"))
        self.ok(pair, "alpha", "wait-sync")
        self.assertIn("Diskless", self.ok(pair, "beta", "detach"))
        self.assertIn("attached", self.ok(pair, "beta", "attach"))
        self.ok(pair, "beta", "wait-sync")
        self.assertIn("already matches", self.ok(pair, "alpha", "adjust"))
        answer = json.loads(self.ok(pair, "alpha", "adjust", "--dry-run", "--json"))
        self.assertEqual((answer["changes"], answer["dry_run"]), ([], True))
        # On the Primary. No kernel nbd driver here (docs/ublk.md: the VM tests run them): a clear refusal.
        cp = pair.replctl("alpha", "nbd-attach")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("nbd driver", cp.stderr)
        cp = replctl("nbd-detach", "/dev/nbd0")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("nbd driver", cp.stderr)

        self.ok(pair, "alpha", "secondary")
        self.assertEqual(pair.status("alpha")["role"], "Secondary")

        for n in Pair.NODES:
            self.assertIn("stopped", self.ok(pair, n, "down"))
            cp = pair.replctl(n, "status")
            self.assertEqual(cp.returncode, 3, cp.stdout + cp.stderr)

    def test_a_control_group_lets_its_members_in(self):
        """[control] group: the socket is mode 0660 and the group's; its members may use
        replctl without root, others may not."""
        pair = Pair(disk_size=64 * MiB)
        with open(pair.config["alpha"], "a") as f:
            f.write('\n[control]\ngroup = "users"\n')
        os.chmod(pair.tmp, 0o755)  # nobody reads the file, as an operator would
        os.chmod(pair.config["alpha"], 0o644)
        # ... and runs a replctl it can reach (the build tree may be in a directory of root's)
        replctl_copy = os.path.join(pair.tmp, "replctl")
        shutil.copy(harness.REPLCTL_BIN, replctl_copy)
        os.chmod(replctl_copy, 0o755)
        pair.create_md()
        pair.start("alpha")
        st = os.stat(pair.control["alpha"])
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, grp.getgrnam("users").gr_gid)

        def as_nobody(*groups: str):
            return harness.run(["setpriv", "--reuid=nobody", "--regid=nogroup",
                                *(["--groups=" + ",".join(groups)] if groups else
                                  ["--clear-groups"]),
                                replctl_copy, "status", "r0", "-c", pair.config["alpha"],
                                "-n", "alpha"], timeout=30)
        cp = as_nobody("users")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("r0 role:Secondary", cp.stdout)
        cp = as_nobody()
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("for root and the members of group 'users'", cp.stderr)

        # A group this machine does not have: the daemon does not start, and says why.
        with open(pair.config["beta"]) as f:
            text = f.read()
        with open(pair.config["beta"], "w") as f:
            f.write(text.replace('group = "users"', 'group = "no-such-group-here"'))
        d = harness.Repld(pair.config["beta"], "beta", pair.socket["beta"], pair.log["beta"])
        d.start(wait=False)
        self.assertEqual(d.wait(30), 1)
        self.assertIn("control.group: there is no group 'no-such-group-here' on this machine",
                      d.log_text())


if __name__ == "__main__":
    harness.run_main()
