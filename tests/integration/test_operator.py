#!/usr/bin/python3
"""The operator's view of a running pair: `replctl events` (the states, then each change of a
connect, a resync and a promotion, in order), `events --now`, `wait-connect` and `wait-sync` with
their timeouts and exit codes, and the Prometheus endpoint scraped during a resync."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402


class EventStream:
    """`replctl events --json` in the background, its lines collected."""

    def __init__(self, pair: Pair, node: str, *extra: str):
        argv = [harness.REPLCTL_BIN, "events", *extra, pair.resource, "-c", pair.config[node],
                "-n", node]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.token = harness.register_cleanup(self.stop, f"replctl events pid {self.proc.pid}")
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict]:
        return [json.loads(ln) for ln in list(self.lines)]

    def wait_for(self, pred, timeout: float, what: str) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events():
                if pred(e):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no event: {what}; got {self.lines}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        harness.unregister_cleanup(self.token)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of the first sample of metric `name` whose labels include `labels`."""
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        if base == name and labels in label_text:
            return float(value)
    return None


class OperatorTest(harness.ReplTestCase):

    def test_events_wait_and_metrics_through_connect_resync_and_promote(self):
        metrics_port = harness.free_tcp_port()
        pair = Pair(disk_size=64 * MiB, resync={"rate": "8M"})
        # alpha serves metrics: a node's own metrics_listen (both nodes share the file and,
        # here, the machine)
        with open(pair.config["alpha"]) as f:
            text = f.read()
        with open(pair.config["alpha"], "w") as f:
            f.write(text.replace("[node.alpha]\n", "[node.alpha]\nmetrics_listen = "
                                 f'"127.0.0.1:{metrics_port}"\n'))
        pair.create_md()

        cp = pair.replctl("alpha", "wait-connect", "--timeout", "1s")
        self.assertEqual(cp.returncode, 3, cp.stdout + cp.stderr)
        self.assertIn("is not running", cp.stderr)

        pair.start("alpha")
        stream = EventStream(pair, "alpha", "--json")
        stream.wait_for(lambda e: e["type"] == "exists" and e["object"] == "peer-device", 10,
                        "the initial states")
        first = stream.events()
        self.assertEqual([e["object"] for e in first],
                         ["resource", "device", "connection", "peer-device"])
        self.assertTrue(all(e["type"] == "exists" and e["name"] == "r0" for e in first))
        self.assertEqual(first[0]["role"], "Secondary")
        self.assertEqual(first[2]["peer"], "beta")
        self.assertNotEqual(first[2]["connection"], "Connected")

        t0 = time.monotonic()
        cp = pair.replctl("alpha", "wait-connect", "--timeout", "1s")
        self.assertEqual(cp.returncode, 5, cp.stdout + cp.stderr)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertIn("not connected after 1 s", cp.stderr)

        pair.start("beta")
        cp = pair.replctl("alpha", "wait-connect", "--timeout", "20s")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("connected to the peer", cp.stdout)
        stream.wait_for(lambda e: e["type"] == "change" and e["object"] == "connection"
                        and e.get("connection") == "Connected", 10, "connected")

        # The keepalive (ping_interval 1s here) times the link.
        st = pair.wait_status("alpha", lambda s: s["peer"]["rtt_seconds"] is not None, 10,
                              "a round-trip time")
        self.assertTrue(0 < st["peer"]["rtt_seconds"] < 1, st["peer"])

        pair.promote("alpha", force=True)
        stream.wait_for(lambda e: e["object"] == "peer-device"
                        and e.get("replication") == "SyncSource", 10, "SyncSource")
        # A scrape in mid-resync.
        st = pair.wait_status("alpha", lambda s: s["resync"] is not None
                              and s["resync"]["done_bytes"] > 0, 10, "resync started")
        text = scrape(metrics_port)
        self.assertEqual(sample(text, "repld_resource_role", 'role="Primary"'), 1, text)
        self.assertEqual(sample(text, "repld_resource_role", 'role="Secondary"'), 0, text)
        self.assertEqual(sample(text, "repld_peerdevice_replication_state",
                                'replication="SyncSource"'), 1, text)
        total = sample(text, "repld_peerdevice_resync_total_bytes")
        done = sample(text, "repld_peerdevice_resync_done_bytes")
        self.assertEqual(total, st["resync"]["total_bytes"])
        self.assertTrue(0 < done < total, text)
        self.assertGreater(sample(text, "repld_peerdevice_outofsync_bytes"), 0)
        self.assertIn("# TYPE repld_device_written_bytes_total counter", text)

        # On a terminal, wait-sync draws the resync's progress (as DRBD's status does).
        cp = harness.run_on_terminal([harness.REPLCTL_BIN, "wait-sync", "--timeout", "1s",
                                      "r0", "-c", pair.config["alpha"], "-n", "alpha"])
        self.assertEqual(cp.returncode, 5, cp.stdout + cp.stderr)
        self.assertIn("not in sync after 1 s", cp.stderr)
        self.assertRegex(cp.stdout, r"\r\[[=>.]{20}\] sync'ed: [\d.]+% \(\d+/\d+\)M")
        cp = pair.replctl("alpha", "wait-sync", "--timeout", "60s")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("in sync with the peer", cp.stdout)
        self.assertEqual(pair.status("alpha")["out_of_sync_bytes"], 0)
        stream.wait_for(lambda e: e["object"] == "peer-device"
                        and e.get("replication") == "Established"
                        and e.get("peer-disk", "UpToDate") == "UpToDate", 10, "in sync")
        text = scrape(metrics_port)
        self.assertEqual(sample(text, "repld_peerdevice_outofsync_bytes"), 0)
        # (promote --force reconnected: a new link's first ping came during the resync)
        self.assertGreater(sample(text, "repld_peer_rtt_seconds"), 0, text)

        # The changes came in the order they happened, each naming what changed.
        changes = [(e["object"], {k: v for k, v in e.items()
                                  if k not in ("time", "type", "object", "name", "peer")})
                   for e in stream.events() if e["type"] == "change"]
        order = [c for c in changes if c[1].get("connection") == "Connected"
                 or c[1].get("role") == "Primary" and c[0] == "resource"
                 or c[1].get("replication") in ("SyncSource", "Established")]
        kinds = [(o, f.get("connection") or f.get("role") or f.get("replication"))
                 for o, f in order]
        self.assertEqual(kinds[0], ("connection", "Connected"), changes)
        self.assertLess(kinds.index(("resource", "Primary")),
                        kinds.index(("peer-device", "SyncSource")), changes)
        self.assertEqual(kinds[-1], ("peer-device", "Established"), changes)

        # The human form, and --now.
        cp = pair.replctl("alpha", "events", "--now")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        lines = cp.stdout.splitlines()
        self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z exists resource "
                                   r"name:r0 role:Primary$")
        self.assertRegex(lines[2], r" exists connection name:r0 peer:beta "
                                   r"connection:Connected role:Secondary$")
        self.assertRegex(lines[3], r" exists peer-device name:r0 peer:beta peer-disk:UpToDate "
                                   r"replication:Established resync-suspended:no$")
        self.assertEqual(lines[-1], "exists -")

        # A stopping daemon ends the stream with a clear error.
        stream_end = pair.daemon["beta"].stop()
        self.assertEqual(stream_end, 0, pair.log_tails())
        stream.wait_for(lambda e: e["object"] == "connection"
                        and e.get("connection") in ("Connecting", "StandAlone"), 10, "lost peer")
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())
        self.assertEqual(stream.proc.wait(10), 1)
        self.assertIn("the daemon closed the connection (it stopped?)", stream.proc.stderr.read())
        stream.stop()

    def test_up_down_and_all_over_the_configuration_directory(self):
        conf = harness.make_tempdir()
        for name in ("r1", "r2"):
            disk = harness.make_sparse_file(os.path.join(conf, f"{name}.img"), 16 * MiB)
            with open(os.path.join(conf, f"{name}.toml"), "w") as f:
                f.write(harness.config_text(
                    resource=name, nbd={"socket": os.path.join(conf, f"{name}.sock")},
                    nodes={"a": {"disk": disk,
                                 "control_socket": os.path.join(conf, f"{name}.ctl")}}))
        with open(os.path.join(conf, "common.toml"), "w") as f:
            f.write('[disk]\ndirect_io = "off"\n')
        env = dict(os.environ, REPLD_CONFIG_DIR=conf)
        log = os.path.join(conf, "up.log")

        def replctl(*args):
            return subprocess.run([harness.REPLCTL_BIN, *args], env=env, capture_output=True,
                                  text=True, timeout=180, stdin=subprocess.DEVNULL)

        self.addCleanup(lambda: replctl("down", "all", "-n", "a"))
        cp = replctl("status", "all", "-n", "a")
        self.assertEqual(cp.returncode, 3, cp.stdout + cp.stderr)
        self.assertEqual(cp.stderr.count("is not running"), 2, cp.stderr)

        cp = replctl("up", "all", "-n", "a", "--log", log)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr + harness.read_text(log))
        self.assertRegex(cp.stdout, r"resource r1: repld started \(pid \d+, node a\)")
        self.assertRegex(cp.stdout, r"resource r2: repld started \(pid \d+, node a\)")
        cp = replctl("status", "all", "-n", "a")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("r1 role:Primary", cp.stdout)
        self.assertIn("r2 role:Primary", cp.stdout)
        cp = replctl("up", "r1", "-n", "a")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("repld already runs", cp.stdout)
        cp = replctl("status", "all", "-n", "a", "-c", os.path.join(conf, "r1.toml"))
        self.assertEqual(cp.returncode, 2, cp.stdout + cp.stderr)
        self.assertIn("it takes no --config", cp.stderr)

        cp = replctl("down", "all", "-n", "a")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("resource r1: repld stopped", cp.stdout)
        self.assertIn("resource r2: repld stopped", cp.stdout)
        self.assertFalse(os.path.exists(os.path.join(conf, "r1.ctl")))
        cp = replctl("down", "r1", "-n", "a")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("repld is not running", cp.stdout)
        self.assertIn("signal 15: draining", harness.read_text(log))

    def test_metrics_port_taken_is_a_clear_error(self):
        import socket
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        port = blocker.getsockname()[1]
        inst = harness.Instance()
        with open(inst.config_path, "a") as f:
            f.write(f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        inst.start(wait=False)
        self.assertEqual(inst.daemon.wait(15), 1)
        self.assertIn(f"key 'metrics.listen': metrics: cannot listen on 127.0.0.1:{port}: "
                      "Address already in use", inst.daemon.log_text())


if __name__ == "__main__":
    harness.run_main()
