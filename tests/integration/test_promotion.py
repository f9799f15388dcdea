#!/usr/bin/python3
"""Promotion of a connected pair is agreed with the peer: `replctl primary` run on both nodes at
the same moment, 20 times, makes exactly one of them Primary every time, and the other says why
it was refused. While they race, a sampler reads both nodes' status again and again: never are
both Primary. Each round writes 1 MiB (with a flush) through the winner, the same offset as the
round before; the loser, Secondary, refuses NBD clients. At the end both data areas are
identical byte for byte: no acknowledged write was lost to a second Primary."""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402
from pair import Pair  # noqa: E402
from test_split_brain import write  # noqa: E402

ROUNDS = 20


class RoleSampler(threading.Thread):
    """Reads both nodes' roles until stopped; records any sample where both are Primary and
    connected."""

    def __init__(self, pair: Pair):
        super().__init__(daemon=True)
        self.pair = pair
        self.stop_event = threading.Event()
        self.samples = 0
        self.both_primary: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                st = {n: self.pair.status(n) for n in Pair.NODES}
            except AssertionError:
                continue  # a status that timed out under load proves nothing either way
            self.samples += 1
            if all(s["role"] == "Primary" and s["connection"] == "Connected"
                   for s in st.values()):
                self.both_primary.append(str({n: (s["role"], s["connection"])
                                              for n, s in st.items()}))


class PromotionTest(harness.ReplTestCase):

    def start_primary(self, pair: Pair, node: str) -> subprocess.Popen:
        return subprocess.Popen(
            [harness.REPLCTL_BIN, "primary", pair.resource, "-c", pair.config[node], "-n", node],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_simultaneous_promotion_makes_one_primary_every_time(self):
        pair = Pair(disk_size=32 * MiB)
        pair.up_primary("alpha")
        cp = pair.replctl("alpha", "secondary")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        pair.wait_status("beta", lambda s: s["peer"]["role"] == "Secondary", 10, "alpha Secondary")

        sampler = RoleSampler(pair)
        sampler.start()
        winners = {n: 0 for n in Pair.NODES}
        reasons = set()
        try:
            for rnd in range(ROUNDS):
                procs = {n: self.start_primary(pair, n) for n in Pair.NODES}
                results = {}
                for n, p in procs.items():
                    out, err = p.communicate(timeout=60)
                    results[n] = (p.returncode, out, err)
                ok = [n for n, r in results.items() if r[0] == 0]
                self.assertEqual(len(ok), 1, f"round {rnd}: {results}\n{pair.log_tails()}")
                winner, loser = ok[0], [n for n in Pair.NODES if n != ok[0]][0]
                winners[winner] += 1
                code, _, err = results[loser]
                self.assertEqual(code, 1, f"round {rnd}: the loser's exit code: {results}")
                self.assertIn("Primary", err, f"round {rnd}: the refusal says why: {err}")
                reasons.add(err.strip())

                st = {n: pair.status(n) for n in Pair.NODES}
                self.assertEqual(st[winner]["role"], "Primary")
                self.assertEqual(st[loser]["role"], "Secondary")
                self.assertEqual(st[winner]["connection"], "Connected")

                # The winner serves; the loser refuses clients.
                write(pair, winner, 0, os.urandom(MiB))
                with self.assertRaises(Exception):
                    write(pair, loser, 0, os.urandom(MiB))

                cp = pair.replctl(winner, "secondary")
                self.assertEqual(cp.returncode, 0, cp.stderr)
                pair.wait_status(loser, lambda s: s["peer"]["role"] == "Secondary", 10,
                                 f"{winner} Secondary again")
        finally:
            sampler.stop_event.set()
            sampler.join(timeout=30)
        harness.log(f"winners {winners}; {sampler.samples} role samples; refusals: {reasons}")
        self.assertEqual(sampler.both_primary, [], "both nodes were Primary while connected")
        self.assertGreater(sampler.samples, ROUNDS, "the sampler ran")

        pair.wait_in_sync()
        size = pair.data_bytes("alpha")
        for n in Pair.NODES:
            self.assertEqual(pair.daemon[n].stop(), 0, pair.log_tails())
        self.assertEqual(pair.digest("alpha", size), pair.digest("beta", size),
                         "the two data areas differ after the promotions")


if __name__ == "__main__":
    harness.run_main()
