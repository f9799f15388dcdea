#!/usr/bin/python3
"""Split brain and the operator's connect / disconnect, with two real daemons.

Both nodes are Primary while apart and write different blocks: when they meet, both must go
StandAlone with one message naming both nodes and what each changed, no block may move, and
neither may retry on its own. The documented recovery (fresh metadata on the victim, then
'replctl connect' on the survivor) must leave both disks identical with the survivor's data.
'replctl disconnect' on a Primary keeps it serving and StandAlone; 'replctl connect' brings
the peer back and resyncs only what changed."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402


def write(pair: Pair, node: str, offset: int, data: bytes) -> None:
    h = harness.open_nbd(pair.socket[node], pair.resource)
    try:
        h.pwrite(data, offset)
        h.flush()
    finally:
        harness.close_nbd(h)


def read(pair: Pair, node: str, offset: int, length: int) -> bytes:
    h = harness.open_nbd(pair.socket[node], pair.resource)
    try:
        return h.pread(length, offset)
    finally:
        harness.close_nbd(h)


class SplitBrainTest(harness.ReplTestCase):

    def test_split_brain_is_refused_by_both_and_recovered_by_the_operator(self):
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        base = os.urandom(4 * MiB)
        write(pair, "alpha", 0, base)
        pair.wait_in_sync()

        # Apart: alpha keeps writing 1 MiB, then beta, alone, is promoted and writes 2 MiB.
        self.assertEqual(pair.daemon["beta"].stop(), 0, pair.log_tails())
        alpha_data = os.urandom(1 * MiB)
        write(pair, "alpha", 0, alpha_data)
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())
        pair.start("beta")
        pair.promote("beta")  # UpToDate and alone: allowed, and its data moves on too
        beta_data = os.urandom(2 * MiB)
        write(pair, "beta", 8 * MiB, beta_data)
        size = pair.data_bytes("beta")
        before = {n: pair.digest(n, size) for n in Pair.NODES}

        pair.start("alpha")
        for n in Pair.NODES:
            st = pair.wait_status(n, lambda s: s["connection"] == "StandAlone"
                                  and "split brain" in (s["connection_error"] or ""), 30,
                                  "StandAlone after a split brain")
            self.assertEqual(st["out_of_sync_bytes"], (1 if n == "alpha" else 2) * MiB)
        why = pair.status("alpha")["connection_error"]
        self.assertIn("'alpha' and 'beta' both changed the data while they were apart", why)
        self.assertIn("'alpha' changed 1.0 MiB, 'beta' changed 2.0 MiB", why)
        self.assertIn("replctl connect", why)
        self.assertIn("'beta' changed 2.0 MiB, 'alpha' changed 1.0 MiB",
                      pair.status("beta")["connection_error"])
        for n in Pair.NODES:
            self.assertIn("split brain", pair.daemon[n].log_tail(200))
        # Nobody retries on their own, and nothing moved.
        time.sleep(2.5)  # five reconnect_max periods
        for n in Pair.NODES:
            st = pair.status(n)
            self.assertEqual(st["connection"], "StandAlone", st)
            self.assertEqual(pair.digest(n, size), before[n], f"{n}'s data changed")
        human = pair.replctl("alpha", "status").stdout
        self.assertIn("connection:StandAlone", human)
        self.assertIn("last error: split brain", human)
        self.assertEqual(pair.status("beta")["role"], "Primary")
        self.assertEqual(read(pair, "beta", 8 * MiB, len(beta_data)), beta_data)

        # Recovery as the message says: alpha's changes go; beta's stay.
        self.assertEqual(pair.daemon["alpha"].stop(), 0, pair.log_tails())
        cp = pair.replctl("alpha", "create-md", "--force")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.start("alpha")
        time.sleep(1)
        self.assertEqual(pair.status("beta")["connection"], "StandAlone",
                         "the survivor connected before the operator said so")
        cp = pair.replctl("beta", "connect")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("connecting to the peer", cp.stdout)
        pair.wait_in_sync()
        self.assertTrue(pair.status("beta")["sync_decision"].startswith("rule 30: "),
                        pair.status("beta"))
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))
        self.assertEqual(pair.read_disk("alpha", 8 * MiB, len(beta_data)), beta_data)
        self.assertEqual(pair.read_disk("alpha", 0, 1 * MiB), base[:1 * MiB],
                         "alpha's discarded changes survived the full sync")

    def test_disconnect_keeps_serving_and_connect_resyncs_what_changed(self):
        pair = Pair(disk_size=64 * MiB)
        pair.up_primary("alpha")
        cp = pair.replctl("alpha", "disconnect")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        for n in Pair.NODES:
            pair.wait_status(n, lambda s: s["connection"] != "Connected", 15, "disconnected")
        data = os.urandom(3 * MiB)
        write(pair, "alpha", 16 * MiB, data)
        time.sleep(1.5)  # three reconnect_max periods: nobody reconnects on their own
        st = pair.status("alpha")
        self.assertEqual((st["connection"], st["role"]), ("StandAlone", "Primary"), st)
        self.assertEqual(st["out_of_sync_bytes"], 3 * MiB)
        self.assertEqual(pair.replctl("alpha", "disconnect").stdout.strip(), "already StandAlone")
        cp = pair.replctl("alpha", "connect")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.wait_in_sync()
        self.assertTrue(pair.status("alpha")["sync_decision"].startswith("rule 40: "),
                        pair.status("alpha"))
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))
        self.assertEqual(pair.read_disk("beta", 16 * MiB, len(data)), data)


if __name__ == "__main__":
    harness.run_main()
