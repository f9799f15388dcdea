#!/usr/bin/python3
"""repld under systemd (Type=notify), with a real notification socket standing in for systemd:
READY=1 comes once the peer connects, not before ([startup] wfc_timeout = 0 waits as long as it
takes), or when the wait runs out; a node that ran without its peer waits degr_wfc_timeout
instead; STATUS= lines follow the state; WATCHDOG=1 comes at half of WatchdogSec; STOPPING=1 at
SIGTERM. systemd itself cannot run here (no PID 1 of its own): its side of the protocol is this
socket."""

import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402


class NotifySocket:
    """A datagram socket like systemd's: collects what the daemon started with it sends."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.t0 = time.monotonic()

    def collect(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic() - self.t0, data.decode()))

    def wait_for(self, line: str, timeout: float) -> float:
        """Seconds since the socket was made when a message with `line` came."""
        end = time.monotonic() + timeout
        while True:
            for at, m in self.messages:
                if line in m.split("\n"):
                    return at
            if time.monotonic() >= end:
                raise AssertionError(f"no {line!r} in {timeout}s; got {self.messages}")
            self.collect(0.2)

    def lines(self, prefix: str) -> list[str]:
        return [ln for _, m in self.messages for ln in m.split("\n") if ln.startswith(prefix)]

    def close(self) -> None:
        self.sock.close()


class SystemdNotifyTest(harness.ReplTestCase):

    def start_notified(self, pair: Pair, node: str, watchdog_usec: int | None = None):
        notify = NotifySocket(os.path.join(pair.tmp, f"notify-{node}"))
        self.addCleanup(notify.close)
        env = {"NOTIFY_SOCKET": notify.path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        os.environ.update(env)
        try:
            pair.start(node)
        finally:
            for k in env:
                del os.environ[k]
        return notify

    def test_ready_once_the_peer_connects_with_status_and_watchdog(self):
        pair = Pair(disk_size=64 * MiB)  # [startup] defaults: wfc_timeout 0, wait forever
        pair.create_md()
        notify = self.start_notified(pair, "alpha", watchdog_usec=400_000)
        notify.collect(2.5)
        self.assertEqual(notify.lines("READY=1"), [], "ready before the peer connected")
        status = notify.lines("STATUS=")
        self.assertTrue(status, notify.messages)
        self.assertIn("waiting for peer 'beta'", status[0])
        self.assertIn("Secondary, Inconsistent", status[0])
        # WatchdogSec=0.4s: a ping every 200 ms.
        self.assertGreaterEqual(len(notify.lines("WATCHDOG=1")), 8, notify.messages)
        pair.start("beta")
        notify.wait_for("READY=1", 15)
        ready = [m for _, m in notify.messages if "READY=1" in m.split("\n")][0]
        self.assertIn("STATUS=Secondary, Inconsistent, Connected to beta (Established)", ready)
        # A reader that lags (systemd busy): its queue holds 10 datagrams, the watchdog sends 5
        # a second. The daemon drops what does not fit rather than wait: it keeps answering.
        time.sleep(4)
        t0 = time.monotonic()
        pair.status("alpha")
        self.assertLess(time.monotonic() - t0, 5, "the daemon waited on its notify socket")
        notify.collect(1)
        pair.promote("alpha", force=True)
        pair.wait_in_sync()
        notify.collect(1)
        self.assertIn("STATUS=Primary, UpToDate, Connected to beta (Established)",
                      notify.lines("STATUS="))
        pair.daemon["alpha"].send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 15)
        self.assertEqual(pair.daemon["alpha"].wait(30), 0, pair.log_tails())
        self.assertEqual(pair.daemon["beta"].stop(), 0, pair.log_tails())

    def test_wfc_timeout_then_ready_without_the_peer(self):
        pair = Pair(disk_size=64 * MiB, startup={"wfc_timeout": "2s"})
        pair.create_md()
        notify = self.start_notified(pair, "alpha")
        at = notify.wait_for("READY=1", 15)
        self.assertGreater(at, 1.5, "ready before wfc_timeout ran out")
        self.assertIn("did not connect within 2 s (startup.wfc_timeout): serving without it",
                      harness.read_text(pair.log["alpha"]))
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())

    def test_a_node_that_ran_without_its_peer_waits_degr_wfc_timeout(self):
        pair = Pair(disk_size=64 * MiB, startup={"wfc_timeout": "0s", "degr_wfc_timeout": "2s"})
        pair.up_primary("alpha")
        self.assertFalse(pair.status("alpha")["degraded_at_start"])
        self.assertEqual(pair.daemon["beta"].stop(), 0, pair.log_tails())
        h = harness.open_nbd(pair.socket["alpha"], pair.resource)  # the peer misses this
        try:
            h.pwrite(b"x" * 4096, 0)
            h.flush()
        finally:
            harness.close_nbd(h)
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())
        notify = self.start_notified(pair, "alpha")
        self.assertTrue(pair.status("alpha")["degraded_at_start"])
        at = notify.wait_for("READY=1", 15)
        self.assertGreater(at, 1.5)
        self.assertIn("(startup.degr_wfc_timeout): serving without it",
                      harness.read_text(pair.log["alpha"]))
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())


if __name__ == "__main__":
    harness.run_main()
