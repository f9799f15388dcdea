#!/usr/bin/python3
"""Two repld binaries side by side: a before/after check of one change, in one run.

Each round runs, for each binary in turn, a standalone daemon and a protocol C pair (the
Secondary's disk in /dev/shm, as repl_bench's `own` layout) on fresh preallocated files, with
fio writing 1 MiB blocks sequentially at --qd for --runtime seconds through the NBD socket. It
prints each run's MB/s and the daemons' CPU time per MiB written (user + system, all threads,
measured after a 2 s warm-up). Standard library only.

    /usr/bin/python3 bench/repl_ab.py --before /path/to/old/repld --after build/release/bin/repld
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repl_bench as rb  # noqa: E402

MiB = 1 << 20


def one_run(kind, repld, replctl, args):
    """MB/s and CPU ms per MiB for each daemon of one standalone or pair run."""
    tmp = tempfile.mkdtemp(dir=args.dir, prefix="repl-ab-")
    peer = tempfile.mkdtemp(dir="/dev/shm", prefix="repl-ab-")
    target = None
    try:
        if kind == "pair":
            target = rb.Pair(tmp, "ab", "C", args.size, repld, replctl, peer_dir=peer)
            sock = target.sock_primary
        else:
            disk = os.path.join(tmp, "solo.img")
            rb.preallocate(disk, args.size)
            target = rb.Standalone(tmp, "solo", disk, repld)
            sock = target.sock
        target.start()
        out = os.path.join(tmp, "fio.json")
        fio = subprocess.Popen(
            ["fio", "--name=w", "--rw=write", "--bs=1M", f"--iodepth={args.qd}", "--time_based",
             f"--runtime={args.runtime}", f"--size={args.size - 16 * MiB}", "--ioengine=nbd",
             f"--uri=nbd+unix:///?socket={sock}", "--output-format=json", f"--output={out}"])
        time.sleep(2)
        before, t0 = rb.cpu_seconds(target.pids()), time.monotonic()
        if fio.wait() != 0:
            raise RuntimeError("fio failed")
        after, seconds = rb.cpu_seconds(target.pids()), time.monotonic() - t0
        with open(out) as f:
            bw = json.load(f)["jobs"][0]["write"]["bw_bytes"]
        mib_written = bw * seconds / MiB
        return bw / 1e6, [(a - b) * 1000 / mib_written for a, b in zip(after, before)]
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(peer, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the repld binary without the change")
    ap.add_argument("--after", default=rb.default_bin("repld"), help="the repld binary with it")
    ap.add_argument("--replctl", default=rb.default_bin("replctl"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=8)
    ap.add_argument("--qd", type=int, default=8)
    ap.add_argument("--size", type=int, default=1 << 30, help="bytes per disk")
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    print("| round | binary | target | MB/s | CPU ms per MiB (daemon, or Primary / Secondary) |")
    print("|---|---|---|---:|---|")
    for r in range(1, args.rounds + 1):
        for name, repld in (("before", args.before), ("after", args.after)):
            for kind in ("standalone", "pair"):
                mbs, cpu = one_run(kind, repld, args.replctl, args)
                print(f"| {r} | {name} | {kind} | {mbs:,.0f} | "
                      f"{' / '.join(f'{c:.2f}' for c in cpu)} |", flush=True)


if __name__ == "__main__":
    main()
