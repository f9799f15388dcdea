#!/usr/bin/python3
"""Split brain and the operator's connect / disconnect, with two real daemons.

Both nodes are Primary while apart and write different blocks: when they meet, both must go
StandAlone with one message naming both nodes and what each changed, no block may move, and
neither may retry on its own. The documented recovery (fresh metadata on the victim, then
'replctl connect' on the survivor) must leave both disks identical with the survivor's data;
so must 'replctl connect --discard-my-data' on the victim, copying only the blocks either
node changed, and the after_sb_* policies, which resolve it without an operator.
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


def split(pair: Pair) -> tuple[bytes, bytes, int]:
    """alpha (Primary) and beta write 4 MiB together; apart, alpha writes 1 MiB at 0, then beta,
    promoted alone, writes 2 MiB at 8 MiB. Both daemons end stopped but beta (Primary).
    Returns (the common data, beta's data, the data size)."""
    pair.up_primary("alpha")
    base = os.urandom(4 * MiB)
    write(pair, "alpha", 0, base)
    pair.wait_in_sync()
    assert pair.daemon["beta"].stop() == 0, pair.log_tails()
    write(pair, "alpha", 0, os.urandom(1 * MiB))
    assert pair.daemon["alpha"].stop() == 0, pair.log_tails()
    pair.start("beta")
    pair.promote("beta")
    beta_data = os.urandom(2 * MiB)
    write(pair, "beta", 8 * MiB, beta_data)
    return base, beta_data, pair.data_bytes("beta")


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

    def assert_alpha_discarded(self, pair: Pair, base: bytes, beta_data: bytes, size: int,
                               rule: str) -> None:
        """beta's data won, and only the 3 MiB either node changed travelled."""
        pair.wait_in_sync()
        st = pair.status("beta")
        self.assertTrue(st["sync_decision"].startswith(rule), st)
        self.assertEqual(st["counters"]["resync_bytes"], 3 * MiB,
                         "the resync copied more (or less) than the blocks either node changed")
        self.assertEqual(pair.status("alpha")["disk"], "UpToDate")
        self.assertIn("changes are discarded", pair.daemon["alpha"].log_tail(200))
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size))
        self.assertEqual(pair.read_disk("alpha", 0, 1 * MiB), base[:1 * MiB],
                         "alpha's discarded changes survived")
        self.assertEqual(pair.read_disk("alpha", 8 * MiB, len(beta_data)), beta_data)

    def test_discard_my_data_copies_only_what_either_node_changed(self):
        pair = Pair(disk_size=64 * MiB)
        base, beta_data, size = split(pair)
        pair.start("alpha")
        for n in Pair.NODES:
            pair.wait_status(n, lambda s: s["connection"] == "StandAlone"
                             and "split brain" in (s["connection_error"] or ""), 30,
                             "StandAlone after a split brain")
        # On a Primary, or on a node that is not StandAlone, the flag is refused.
        cp = pair.replctl("beta", "connect", "--discard-my-data")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("--discard-my-data on a Primary", cp.stderr)
        cp = pair.replctl("alpha", "connect", "--discard-my-data")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("discards this node's changes", cp.stdout)
        time.sleep(1)
        self.assertEqual(pair.status("alpha")["disk"], "UpToDate",
                         "alpha's data changed before the survivor connected")
        cp = pair.replctl("beta", "connect")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assert_alpha_discarded(pair, base, beta_data, size, "rule 61: ")

    def test_after_sb_1pri_discard_secondary_resolves_without_an_operator(self):
        pair = Pair(disk_size=64 * MiB, net={"after_sb_1pri": "discard-secondary"})
        base, beta_data, size = split(pair)
        pair.start("alpha")  # starts Secondary: beta is the one Primary
        self.assert_alpha_discarded(pair, base, beta_data, size, "rule 63: ")

    def test_after_sb_0pri_discard_least_changes_between_two_secondaries(self):
        pair = Pair(disk_size=64 * MiB, net={"after_sb_0pri": "discard-least-changes"})
        base, beta_data, size = split(pair)
        # beta changed 2 MiB, alpha 1 MiB: with neither Primary, alpha's changes go. (beta was
        # Primary: demoting it first makes this the zero-Primary case.)
        cp = pair.replctl("beta", "secondary")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        pair.start("alpha")
        self.assert_alpha_discarded(pair, base, beta_data, size, "rule 63: ")


if __name__ == "__main__":
    harness.run_main()
