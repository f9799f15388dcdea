#!/usr/bin/python3
"""Replication benchmark: repld standalone vs a replicated pair on loopback under
protocols A, B and C, and the activity log's cost, in one run.

Part 1 (protocols): one standalone repld and three pairs (nodes alpha and beta on
127.0.0.1, one per protocol), each on its own preallocated backing files of --size
in the same directory. fio (ioengine=nbd) writes through the standalone daemon and
through each pair's Primary, targets interleaved inside each round; the report gives
the median of --runs rounds and the ratio to the standalone daemon.

Part 2 (activity log): one protocol C pair on --al-size disks (default 16 GiB).
4 KiB random writes at QD32 spread over the whole device (most land on extents the
activity log does not hold, so AL transactions are written) vs the same writes inside
one 4 MiB extent (always hot). The same two workloads on a standalone daemon over the
same file give the file system's own share of the difference.

Both nodes run on this machine and share its two cores and one disk: a pair does
twice the disk writes of the standalone daemon. Standard library only.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_bench as nb  # noqa: E402

MiB, GiB = nb.MiB, nb.GiB

WORKLOADS = {  # name -> (label, rw, bs, qd, protocol C target as a ratio to standalone)
    "write-1m-qd8": ("1M seq write QD8", "write", "1M", 8, 0.8),
    "randwrite-4k-qd32": ("4k randwrite QD32", "randwrite", "4k", 32, 0.6),
}
PROTOCOLS = ["A", "B", "C"]


def default_bin(name):
    env = os.environ.get(f"{name.upper()}_BIN")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.join(root, "build", "release", "bin", name)
    return rel if os.path.exists(rel) else os.path.join(root, "build", "default", "bin", name)


def preallocate(path, size):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standalone:
    def __init__(self, tmp, name, disk, repld):
        self.sock = os.path.join(tmp, f"{name}.sock")
        cfg = os.path.join(tmp, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(f'[resource]\nname = "{name}"\n[nbd]\nsocket = "{self.sock}"\n'
                    f'[node.solo]\ndisk = "{disk}"\n'
                    f'control_socket = "{os.path.join(tmp, name + ".ctl")}"\n')
        self.server = nb.Server(name, [repld, "-c", cfg, "-n", "solo", "--log-level", "warn"],
                                self.sock, os.path.join(tmp, f"{name}.log"))

    def start(self):
        self.server.start()

    def stop(self):
        self.server.stop()


class Pair:
    """Two daemons on loopback; alpha becomes Primary after the initial full sync."""

    def __init__(self, tmp, name, protocol, size, repld, replctl):
        self.name, self.replctl = name, replctl
        self.cfg = os.path.join(tmp, f"{name}.toml")
        self.disk = {n: os.path.join(tmp, f"{name}-{n}.img") for n in ("alpha", "beta")}
        self.sock = {n: os.path.join(tmp, f"{name}-{n}.sock") for n in ("alpha", "beta")}
        ctl = {n: os.path.join(tmp, f"{name}-{n}.ctl") for n in ("alpha", "beta")}
        for path in self.disk.values():
            preallocate(path, size)
        text = [f'[resource]\nname = "{name}"\nprotocol = "{protocol}"\n',
                '[net]\nsecret = "bench-secret"\n']
        for n in ("alpha", "beta"):
            text.append(f'[node.{n}]\ndisk = "{self.disk[n]}"\naddress = "127.0.0.1:{free_port()}"\n'
                        f'nbd_socket = "{self.sock[n]}"\ncontrol_socket = "{ctl[n]}"\n')
        with open(self.cfg, "w") as f:
            f.write("\n".join(text))
        self.servers = {n: nb.Server(f"{name}-{n}", [repld, "-c", self.cfg, "-n", n,
                                                      "--log-level", "warn"],
                                     self.sock[n], os.path.join(tmp, f"{name}-{n}.log"))
                        for n in ("alpha", "beta")}
        self.sock_primary = self.sock["alpha"]

    def ctl(self, node, *args):
        r = subprocess.run([self.replctl, *args, self.name, "-c", self.cfg, "-n", node],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"replctl {' '.join(args)} on {node}: {r.stderr.strip()}")
        return r.stdout

    def status(self, node):
        return json.loads(self.ctl(node, "status", "--json"))

    def start(self):
        for n in ("alpha", "beta"):
            self.ctl(n, "create-md", "--force")
        for s in self.servers.values():
            s.start()
        self.wait(lambda s: s["connection"] == "Connected", 30, "connect")
        self.ctl("alpha", "primary", "--force")
        t0 = time.monotonic()
        self.wait(lambda s: s["replication"] == "Established" and s["out_of_sync_bytes"] == 0
                  and s["peer"]["disk"] == "UpToDate", 3600, "initial sync")
        nb.log(f"{self.name}: initial full sync in {time.monotonic() - t0:.1f} s")

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.status("alpha")):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: {what} not done in {timeout} s: {self.status('alpha')}")

    def data_bytes(self):
        return int(self.status("alpha")["size_bytes"])

    def stop(self):
        for s in self.servers.values():
            s.stop()


def fio(sock, workload, size, runtime, outjson, offset=0):
    _label, rw, bs, qd, _t = workload
    argv = ["fio", "--name=w", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", "--numjobs=1",
            "--time_based", f"--runtime={runtime}", "--ramp_time=1", f"--offset={offset}",
            f"--size={size}", "--randrepeat=0", "--norandommap", "--output-format=json",
            f"--output={outjson}", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}"]
    nb.run_fio(argv, timeout=runtime * 4 + 60)
    return nb.parse_fio(outjson, rw)


def median(samples, key="iops"):
    return statistics.median(s[key] for s in samples) if samples else None


def part_protocols(args, tmp, lines):
    standalone_disk = os.path.join(tmp, "solo.img")
    preallocate(standalone_disk, args.size)
    targets = {"standalone": Standalone(tmp, "solo", standalone_disk, args.repld)}
    for p in PROTOCOLS:
        targets[f"protocol {p}"] = Pair(tmp, f"p{p.lower()}", p, args.size, args.repld,
                                        args.replctl)
    results = {w: {t: [] for t in targets} for w in WORKLOADS}
    try:
        for t in targets.values():
            t.start()
        size = (targets["protocol C"].data_bytes() // MiB) * MiB
        for rnd in range(args.runs):
            for w, spec in WORKLOADS.items():
                for name, t in targets.items():
                    sock = t.sock_primary if isinstance(t, Pair) else t.sock
                    out = os.path.join(tmp, f"{w}-{name.replace(' ', '')}-{rnd}.json")
                    r = fio(sock, spec, size, args.runtime, out)
                    nb.log(f"round {rnd + 1}/{args.runs} {w} {name}: {r['iops']:,.0f} IOPS "
                           f"{r['mbs']:.1f} MB/s")
                    results[w][name].append(r)
    finally:
        for t in targets.values():
            t.stop()
    lines += ["## Protocols A, B, C vs standalone", "",
              f"Disks of {nb.fmt_size(args.size)} (preallocated), fio over the whole device, "
              f"{args.runtime} s per run, median of {args.runs} runs. ×standalone = IOPS ÷ the "
              "standalone daemon's IOPS in the same run.", "",
              "| workload | target | IOPS | MB/s | p99 µs | ×standalone |",
              "|---|---|---:|---:|---:|---:|"]
    verdicts = []
    for w, (label, _rw, _bs, _qd, goal) in WORKLOADS.items():
        base = median(results[w]["standalone"])
        for name in targets:
            m = median(results[w][name])
            ratio = m / base if base else None
            lines.append(f"| {label} | {name} | {m:,.0f} | {median(results[w][name], 'mbs'):,.1f} | "
                         f"{median(results[w][name], 'p99_us'):,.0f} | "
                         f"{nb.ratio_str(ratio)} |")
            if name == "protocol C":
                verdicts.append(f"- {label}: protocol C {nb.ratio_str(ratio, goal)} of standalone "
                                f"(target ≥{goal:.2f}x) **{'PASS' if ratio >= goal else 'MISS'}**")
    lines += ["", *verdicts, ""]


def part_activity_log(args, tmp, lines):
    pair = Pair(tmp, "al", "C", args.al_size, args.repld, args.replctl)
    # Written blocks, not preallocated ones: an fdatasync (every AL transaction ends with one)
    # would otherwise also commit the file system's unwritten-extent conversions of every data
    # write before it, a cost a block device does not have. beta is written by the full sync.
    nb.prepare_backing(pair.disk["alpha"], args.al_size)
    spec = WORKLOADS["randwrite-4k-qd32"]
    extent_offset = 1 * GiB  # one 4 MiB extent, aligned
    res = {k: [] for k in ("solo spread", "solo extent", "C spread", "C extent")}
    solo = Standalone(tmp, "alsolo", pair.disk["alpha"], args.repld)
    solo.start()
    size = (args.al_size - 64 * MiB) // MiB * MiB  # below the internal metadata
    try:
        for rnd in range(args.runs):
            res["solo spread"].append(fio(solo.sock, spec, size, args.runtime,
                                          os.path.join(tmp, f"al-solo-s{rnd}.json")))
            res["solo extent"].append(fio(solo.sock, spec, 4 * MiB, args.runtime,
                                          os.path.join(tmp, f"al-solo-e{rnd}.json"),
                                          offset=extent_offset))
    finally:
        solo.stop()
    try:
        pair.start()
        al_before = pair.status("alpha")["counters"]["al_writes"]
        for rnd in range(args.runs):
            res["C spread"].append(fio(pair.sock_primary, spec, size, args.runtime,
                                       os.path.join(tmp, f"al-c-s{rnd}.json")))
            res["C extent"].append(fio(pair.sock_primary, spec, 4 * MiB, args.runtime,
                                       os.path.join(tmp, f"al-c-e{rnd}.json"),
                                       offset=extent_offset))
            nb.log(f"AL round {rnd + 1}: spread {res['C spread'][-1]['iops']:,.0f} IOPS, "
                   f"one extent {res['C extent'][-1]['iops']:,.0f} IOPS")
        al_writes = pair.status("alpha")["counters"]["al_writes"] - al_before
    finally:
        pair.stop()
    m = {k: median(v) for k, v in res.items()}
    cost = m["C extent"] / m["C spread"] - 1
    fs_share = m["solo extent"] / m["solo spread"] - 1
    lines += ["## Activity log cost", "",
              f"4k random writes QD32, protocol C pair on {nb.fmt_size(args.al_size)} disks "
              f"(al_extents = 1237: 4.8 GiB of hot extents), {args.runtime} s per run, median "
              f"of {args.runs}. 'spread' covers the whole device, 'one extent' a single 4 MiB "
              f"extent. {al_writes:,} AL transactions were written during the pair's runs.", "",
              "| target | spread IOPS | one-extent IOPS | one extent ÷ spread |",
              "|---|---:|---:|---:|",
              f"| standalone (no AL) | {m['solo spread']:,.0f} | {m['solo extent']:,.0f} | "
              f"{nb.ratio_str(m['solo extent'] / m['solo spread'])} |",
              f"| protocol C pair | {m['C spread']:,.0f} | {m['C extent']:,.0f} | "
              f"{nb.ratio_str(m['C extent'] / m['C spread'])} |", "",
              f"- spread writes cost {cost * 100:.1f}% more than one-extent writes on the pair "
              f"(target ≤ 5%) **{'PASS' if cost <= 0.05 else 'MISS'}**; on the standalone "
              f"daemon, which has no activity log, the difference is {fs_share * 100:.1f}% (the "
              "file system's and disk's share).", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=nb.parse_size, default=1 * GiB)
    ap.add_argument("--al-size", type=nb.parse_size, default=16 * GiB)
    ap.add_argument("--parts", default="protocols,al", help="protocols, al or both")
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repld", default=default_bin("repld"))
    ap.add_argument("--replctl", default=default_bin("replctl"))
    ap.add_argument("--out", help="also write the markdown report here")
    args = ap.parse_args()
    for tool in ("fio", args.repld, args.replctl):
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"repl_bench: {tool} not found (build first: scripts/build.sh release)")
    tmp = tempfile.mkdtemp(prefix="repl-bench-", dir=args.dir)
    lines = ["# repld replication benchmark", "",
             f"- **date**: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- **command**: `{' '.join(['bench/repl_bench.py', *sys.argv[1:]])}`",
             f"- **cpu**: {nb.cpu_model()} ({os.cpu_count()} cores)",
             f"- **repld**: {args.repld}", ""]
    try:
        parts = args.parts.split(",")
        if "protocols" in parts:
            part_protocols(args, tmp, lines)
        if "al" in parts:
            part_activity_log(args, tmp, lines)
        report = "\n".join(lines) + "\n"
        print(report, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(report)
    finally:
        nb.log(f"removing {tmp} (large files on a file system mounted with discard take a while)")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
