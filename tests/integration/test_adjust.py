#!/usr/bin/python3
"""`replctl adjust`: a running pair follows its edited file. A resync crawling at 1 MiB/s finishes
at once when the rate limit goes; a metrics endpoint appears; a key that needs a restart is named
(exit status 4) and left alone; --dry-run changes nothing; a new secret is used from the next
connection (the node that has it cannot connect to the one that does not, until that one is
adjusted too); a broken file changes nothing."""

import json
import re
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402


def metrics_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.status == 200 and b"repld_resource_role" in r.read()
    except (urllib.error.URLError, ConnectionError):
        return False


def edit(path: str, old: str, new: str) -> None:
    with open(path) as f:
        text = f.read()
    assert old in text, f"{old!r} not in {path}"
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


class AdjustTest(harness.ReplTestCase):

    def test_live_keys_apply_and_the_others_wait_for_a_restart(self):
        pair = Pair(disk_size=64 * MiB, resync={"rate": "1M"}, nbd={"inflight_max": 64})
        path = pair.config["alpha"]
        pair.create_md()
        pair.start_all()
        pair.wait_connected()

        cp = pair.replctl("alpha", "adjust")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("already matches " + path, cp.stdout)

        pair.promote("alpha", force=True)
        pair.wait_status("alpha", lambda s: s["replication"] == "SyncSource", 10, "SyncSource")

        metrics_port = harness.free_tcp_port()
        edit(path, 'rate = "1M"', "")
        edit(path, "inflight_max = 64", "inflight_max = 32")
        # alpha's own endpoint (both nodes share the file and, here, the machine)
        edit(path, "[node.alpha]", f'[node.alpha]\nmetrics_listen = "127.0.0.1:{metrics_port}"')

        # --dry-run: listed, nothing done.
        cp = pair.replctl("alpha", "adjust", "--dry-run")
        self.assertEqual(cp.returncode, 4, cp.stdout + cp.stderr)
        out = cp.stdout
        self.assertIn("3 changes in " + path + " (dry run)", out)
        self.assertIn("resync.rate: 1.0 MiB/s -> unlimited: would apply", out)
        self.assertIn("nbd.inflight_max: 64 -> 32: would need a restart", out)
        self.assertIn(f'metrics.listen: (none) -> "127.0.0.1:{metrics_port}": would apply', out)
        self.assertFalse(metrics_up(metrics_port))
        time.sleep(1)
        st = pair.status("alpha")
        remaining = st["out_of_sync_bytes"]
        self.assertGreater(remaining, 40 * MiB, st)  # still crawling at 1 MiB/s

        # adjust: the rate limit goes at once, the endpoint listens; inflight_max waits.
        t0 = time.monotonic()
        cp = pair.replctl("alpha", "adjust")
        self.assertEqual(cp.returncode, 4, cp.stdout + cp.stderr)
        self.assertIn("resync.rate: 1.0 MiB/s -> unlimited: applied", cp.stdout)
        self.assertIn("nbd.inflight_max: 64 -> 32: NOT applied: needs a restart", cp.stdout)
        self.assertIn("systemctl restart repld@r0", cp.stdout)
        self.assertTrue(metrics_up(metrics_port))
        pair.wait_in_sync(timeout=25)  # at 1 MiB/s the rest would take 40 s and more
        harness.log(f"{remaining / MiB:.0f} MiB synced {time.monotonic() - t0:.1f} s after adjust")

        # Only the restart-bound key is still pending; --json says so too.
        cp = pair.replctl("alpha", "adjust", "--json")
        self.assertEqual(cp.returncode, 4, cp.stdout + cp.stderr)
        answer = json.loads(cp.stdout)
        self.assertEqual(answer["changes"], [{"key": "nbd.inflight_max", "old": "64", "new": "32",
                                              "when": "restart", "applied": False}])
        self.assertTrue(answer["restart_needed"])
        self.assertFalse(answer["dry_run"])

        # A broken file: an error with its position; the daemon runs on unchanged.
        with open(path) as f:
            good = f.read()
        with open(path, "a") as f:
            f.write("\n[net]\nping_timeout = 3\n")
        cp = pair.replctl("alpha", "adjust")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn(path + ":", cp.stderr)
        with open(path, "w") as f:
            f.write(good)
        self.assertTrue(metrics_up(metrics_port))

        # A new secret: used from the next connection. Only alpha takes it: the link, dropped
        # and started again, is refused; once beta takes it too, they connect.
        edit(path, 'secret = "it-shared-secret"', 'secret = "a-new-shared-secret"')
        cp = pair.replctl("alpha", "adjust", "--dry-run")
        self.assertIn('net.secret: (hidden) -> (hidden): would apply (used from the next '
                      'connection to the peer)', cp.stdout)
        self.assertNotIn("it-shared-secret", cp.stdout + cp.stderr)
        self.assertNotIn("a-new-shared-secret", cp.stdout + cp.stderr)
        pair.replctl("alpha", "adjust")
        st = pair.status("alpha")
        self.assertEqual(st["connection"], "Connected")  # the connection in place stays
        for args in (("disconnect",), ("connect",)):
            cp = pair.replctl("alpha", *args)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_status("alpha", lambda s: re.search("(?i)secret|authenticat", s.get("connection_error") or ""), 20,
                         "a refused connection")
        self.assertNotEqual(pair.status("alpha")["connection"], "Connected")
        cp = pair.replctl("beta", "adjust")  # beta has the pending inflight_max too
        self.assertEqual(cp.returncode, 4, cp.stdout + cp.stderr)
        self.assertIn("net.secret: (hidden) -> (hidden): applied", cp.stdout)
        pair.wait_connected(timeout=30)
        pair.wait_in_sync(timeout=30)


if __name__ == "__main__":
    harness.run_main()
