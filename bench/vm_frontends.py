#!/usr/bin/env python3
"""Frontends on a real kernel (issue #5 item 6): repld's ublk frontend against its NBD frontend
(through the kernel's nbd driver, attached with replctl nbd-attach) and a kernel loop device with
direct I/O, on the same backing file (RAM) in the test VM (tests/vm: Debian's 6.12 kernel under
qemu TCG), in one run. TCG distorts absolute numbers: only the ratios mean anything.

  bench/vm_frontends.py [--runtime 5] [--rounds 2] [--smp 2] [--out FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repl_bench as rb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ["4k-randread", "4k-randwrite", "1M-read", "1M-write"]
TARGETS = ["ublk", "nbd", "loop"]


def run_guest(args, log):
    bin_dir = os.path.dirname(rb.default_bin("repld"))
    subprocess.run([os.path.join(ROOT, "tests/vm/fetch-kernel.sh")], check=True,
                   stdout=subprocess.PIPE)
    argv = [os.path.join(ROOT, "tests/vm/run-vm.sh"),
            os.path.join(ROOT, "tests/vm/guest/bench_frontends.sh"), "--bin-dir", bin_dir,
            "--smp", str(args.smp), "--mem", "3072", "--timeout", "3000", "--log", log,
            "--file", f"{args.env_file}:/etc/bench.env"]
    subprocess.run(argv, check=True)


def parse(log):
    rows = {}
    with open(log, errors="replace") as f:
        for line in f:
            if not line.startswith("BENCH "):
                continue
            _, _rnd, target, workload, text = line.split(" ", 4)
            job = json.loads(text)["jobs"][0]
            side = job["read"] if "read" in workload else job["write"]
            rows.setdefault((workload, target), []).append(side["iops"])
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runtime", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.env_file = os.path.join(tmp, "bench.env")
        with open(args.env_file, "w") as f:
            f.write(f"BENCH_RUNTIME={args.runtime}\nBENCH_ROUNDS={args.rounds}\n")
        log = os.path.join(tmp, "console.log")
        run_guest(args, log)
        rows = parse(log)
    lines = rb.report_header("Frontends in the VM (ublk, NBD via the kernel's nbd, loop)",
                             "bench/vm_frontends.py", rb.default_bin("repld"))
    lines += [f"Guest: {args.smp} vCPU(s) under TCG, backing file on tmpfs; fio io_uring, direct "
              f"I/O, {args.runtime} s per run after a 1 s ramp, medians of {args.rounds} rounds.",
              "", "| workload | ublk IOPS | NBD IOPS | loop IOPS | ublk ÷ NBD | ublk ÷ loop |",
              "|---|---:|---:|---:|---:|---:|"]
    med = {k: statistics.median(v) for k, v in rows.items()}
    for w in WORKLOADS:
        u, n, l = (med.get((w, t), 0) for t in TARGETS)
        lines.append(f"| {w} | {u:,.0f} | {n:,.0f} | {l:,.0f} | {u / n if n else 0:.2f}x | "
                     f"{u / l if l else 0:.2f}x |")
    lines.append("")
    for w in ("4k-randread", "4k-randwrite"):
        u, n, l = (med.get((w, t), 0) for t in TARGETS)
        ok_n = n and u / n >= 2
        ok_l = l and u / l >= 0.8
        lines.append(f"- {w}: ublk {u / n if n else 0:.2f}x the NBD frontend (target >= 2x) "
                     f"**{'OK' if ok_n else 'MISS'}**; {u / l if l else 0:.2f}x loop "
                     f"(target >= 0.8x) **{'OK' if ok_l else 'MISS'}**")
    rb.write_report(lines, args.out)


if __name__ == "__main__":
    main()
