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


def report_header(title, script, repld):
    """The report's first lines: what ran, when, where, with which binary."""
    return [f"# {title}", "",
            f"- **date**: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- **command**: `{' '.join([script, *sys.argv[1:]])}`",
            f"- **cpu**: {nb.cpu_model()} ({os.cpu_count()} cores)",
            f"- **repld**: {repld}", ""]


def write_report(lines, out):
    """Prints the markdown report and, with --out, writes it there too."""
    report = "\n".join(lines) + "\n"
    print(report, flush=True)
    if out:
        with open(out, "w") as f:
            f.write(report)


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

    def pids(self):
        return [self.server.proc.pid]


class Pair:
    """Two daemons on loopback; alpha becomes Primary after the initial full sync."""

    def __init__(self, tmp, name, protocol, size, repld, replctl, peer_dir=None, al_extents=None,
                 disks=None):
        self.name, self.replctl = name, replctl
        self.cfg = os.path.join(tmp, f"{name}.toml")
        # disks: another pair's files, already there (this pair gets its own metadata on them)
        self.disk = disks or {n: os.path.join(peer_dir if n == "beta" and peer_dir else tmp,
                                              f"{name}-{n}.img") for n in ("alpha", "beta")}
        self.sock = {n: os.path.join(tmp, f"{name}-{n}.sock") for n in ("alpha", "beta")}
        ctl = {n: os.path.join(tmp, f"{name}-{n}.ctl") for n in ("alpha", "beta")}
        self.ctl_path = ctl
        for path in self.disk.values():
            if not disks:
                preallocate(path, size)
        text = [f'[resource]\nname = "{name}"\nprotocol = "{protocol}"\n',
                '[net]\nsecret = "bench-secret"\n']
        if al_extents:
            text.append(f"[disk]\nal_extents = {al_extents}\n")
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
        """Straight from the control socket (docs/control.md): polling with a replctl process
        20 times a second would take CPU from the daemons being measured."""
        import socket
        reply = b""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(self.ctl_path[node])
                s.sendall(b'{"version":1,"command":"status"}\n')
                while not reply.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        except OSError as e:
            raise RuntimeError(f"status of {node}: {e}") from e
        answer = json.loads(reply)
        if not answer.get("ok"):
            raise RuntimeError(f"status of {node}: {answer.get('error')}")
        return answer["status"]

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

    def pids(self):
        return [s.proc.pid for s in self.servers.values()]

    def remove_peer_disk(self):
        if os.path.exists(self.disk["beta"]):
            os.unlink(self.disk["beta"])


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


def cpu_seconds(pids):
    """User + system CPU time of each process so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / tick)
    return out


def odirect_ok(directory):
    probe = os.path.join(directory, ".repl-bench-odirect")
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        if os.path.exists(probe):
            os.unlink(probe)


LAYOUTS = {  # name -> heading
    "own": "the Secondary's disks in RAM (/dev/shm): each node has a disk of its own",
    "shared": "both nodes' disks on the one virtual disk",
}


def peer_directory(layout):
    """Where the Secondary's disks go for `layout`: None (next to the Primary's) or a new
    directory in /dev/shm. Raises RuntimeError if /dev/shm cannot take them."""
    if layout == "shared":
        return None
    if not odirect_ok("/dev/shm"):
        raise RuntimeError("/dev/shm does not take O_DIRECT (tmpfs needs Linux 6.6): use "
                           "--layouts shared")
    return tempfile.mkdtemp(prefix="repl-bench-peer-", dir="/dev/shm")


def part_protocols(args, tmp, lines, layout):
    peer_dir = peer_directory(layout)
    standalone_disk = os.path.join(tmp, "solo.img")
    preallocate(standalone_disk, args.size)
    targets = {"standalone": Standalone(tmp, "solo", standalone_disk, args.repld)}
    for p in PROTOCOLS:
        targets[f"protocol {p}"] = Pair(tmp, f"p{p.lower()}-{layout}", p, args.size, args.repld,
                                        args.replctl, peer_dir=peer_dir)
    results = {w: {t: [] for t in targets} for w in WORKLOADS}
    cpu = {w: {t: [] for t in targets} for w in WORKLOADS}  # CPU µs per op, per daemon
    try:
        for t in targets.values():
            t.start()
        size = (targets["protocol C"].data_bytes() // MiB) * MiB
        for rnd in range(args.runs):
            for w, spec in WORKLOADS.items():
                for name, t in targets.items():
                    sock = t.sock_primary if isinstance(t, Pair) else t.sock
                    out = os.path.join(tmp, f"{w}-{name.replace(' ', '')}-{rnd}.json")
                    before, t0 = cpu_seconds(t.pids()), time.monotonic()
                    r = fio(sock, spec, size, args.runtime, out)
                    wall = time.monotonic() - t0
                    used = [a - b for a, b in zip(cpu_seconds(t.pids()), before)]
                    ops = r["iops"] * wall
                    cpu[w][name].append([u / ops * 1e6 if ops else 0 for u in used])
                    nb.log(f"{layout} round {rnd + 1}/{args.runs} {w} {name}: {r['iops']:,.0f} "
                           f"IOPS {r['mbs']:.1f} MB/s")
                    results[w][name].append(r)
    finally:
        for t in targets.values():
            t.stop()
        os.unlink(standalone_disk)
        for t in targets.values():
            if isinstance(t, Pair):
                t.remove_peer_disk()
        if peer_dir:
            shutil.rmtree(peer_dir, ignore_errors=True)
    lines += [f"## Protocols A, B, C vs standalone: {LAYOUTS[layout]}", "",
              f"Disks of {nb.fmt_size(args.size)} (preallocated), fio over the whole device, "
              f"{args.runtime} s per run, median of {args.runs} runs. ×standalone = IOPS ÷ the "
              "standalone daemon's IOPS in the same run. CPU µs/op: the daemons' user + system "
              "time per request (Primary / Secondary; approximate: it counts fio's ramp).", "",
              "| workload | target | IOPS | MB/s | p99 µs | CPU µs/op | ×standalone |",
              "|---|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for w, (label, _rw, _bs, _qd, goal) in WORKLOADS.items():
        base = median(results[w]["standalone"])
        for name in targets:
            m = median(results[w][name])
            ratio = m / base if base else None
            per_op = " / ".join(f"{statistics.median(c[i] for c in cpu[w][name]):,.0f}"
                                for i in range(len(cpu[w][name][0])))
            lines.append(f"| {label} | {name} | {m:,.0f} | {median(results[w][name], 'mbs'):,.1f} | "
                         f"{median(results[w][name], 'p99_us'):,.0f} | {per_op} | "
                         f"{nb.ratio_str(ratio)} |")
            if name == "protocol C":
                verdicts.append(f"- {label}: protocol C {nb.ratio_str(ratio, goal)} of standalone "
                                f"(target ≥{goal:.2f}x) **{'PASS' if ratio >= goal else 'MISS'}**")
    lines += ["", *verdicts, ""]


def part_activity_log(args, tmp, lines):
    peer_dir = peer_directory(args.al_layout)
    try:
        activity_log_runs(args, tmp, lines, peer_dir)
    finally:
        if peer_dir:
            shutil.rmtree(peer_dir, ignore_errors=True)


def activity_log_runs(args, tmp, lines, peer_dir):
    covering = min(args.al_size // (4 * MiB) + 16, 65534)  # every extent of the device fits
    al_sizes = [(1237, "1237 (the default: 4.8 GiB)"),
                (covering, f"{covering} (covers the device)")]
    pairs = [Pair(tmp, f"al{al_sizes[0][0]}", "C", args.al_size, args.repld, args.replctl,
                  peer_dir=peer_dir, al_extents=al_sizes[0][0])]
    pairs += [Pair(tmp, f"al{n}", "C", args.al_size, args.repld, args.replctl, al_extents=n,
                   disks=pairs[0].disk) for n, _ in al_sizes[1:]]
    # Written blocks, not preallocated ones: an fdatasync (every AL transaction ends with one)
    # would otherwise also commit the file system's unwritten-extent conversions of every data
    # write before it, a cost a block device does not have. beta is written by the full sync.
    disk = pairs[0].disk["alpha"]
    nb.prepare_backing(disk, args.al_size)
    spec = WORKLOADS["randwrite-4k-qd32"]
    extent_offset = 1 * GiB  # one 4 MiB extent, aligned
    res = {"solo": {"spread": [], "extent": []}}
    solo = Standalone(tmp, "alsolo", disk, args.repld)
    solo.start()
    size = (args.al_size - 64 * MiB) // MiB * MiB  # below the internal metadata
    try:
        for rnd in range(args.runs):
            res["solo"]["spread"].append(fio(solo.sock, spec, size, args.runtime,
                                             os.path.join(tmp, f"al-solo-s{rnd}.json")))
            res["solo"]["extent"].append(fio(solo.sock, spec, 4 * MiB, args.runtime,
                                             os.path.join(tmp, f"al-solo-e{rnd}.json"),
                                             offset=extent_offset))
    finally:
        solo.stop()
    al_writes = {}
    for (n, _), pair in zip(al_sizes, pairs):
        res[n] = {"spread": [], "extent": []}
        try:
            pair.start()
            al_before = pair.status("alpha")["counters"]["al_writes"]
            for rnd in range(args.runs):
                for kind, sz, off in (("spread", size, 0), ("extent", 4 * MiB, extent_offset)):
                    res[n][kind].append(fio(pair.sock_primary, spec, sz, args.runtime,
                                            os.path.join(tmp, f"al{n}-{kind}{rnd}.json"),
                                            offset=off))
                nb.log(f"AL {n} round {rnd + 1}: spread {res[n]['spread'][-1]['iops']:,.0f} IOPS,"
                       f" one extent {res[n]['extent'][-1]['iops']:,.0f} IOPS")
            al_writes[n] = pair.status("alpha")["counters"]["al_writes"] - al_before
        finally:
            pair.stop()
    m = {k: {kind: median(v) for kind, v in r.items()} for k, r in res.items()}
    where = LAYOUTS[args.al_layout]
    lines += [f"## Activity log cost: {where}", "",
              f"4k random writes QD32 on {nb.fmt_size(args.al_size)} disks, {args.runtime} s per "
              f"run (after fio's 1 s ramp), median of {args.runs}. 'spread' covers the whole "
              "device, 'one extent' a single 4 MiB extent. A protocol C pair with two activity "
              "log sizes, and a standalone daemon (no activity log) over the same file for the "
              "file system's and disk's own share.", "",
              "| target | al_extents | spread IOPS | one-extent IOPS | one extent ÷ spread | "
              "AL transactions |",
              "|---|---|---:|---:|---:|---:|",
              f"| standalone | (none) | {m['solo']['spread']:,.0f} | {m['solo']['extent']:,.0f} | "
              f"{nb.ratio_str(m['solo']['extent'] / m['solo']['spread'])} | |"]
    verdicts = []
    for n, label in al_sizes:
        cost = m[n]["extent"] / m[n]["spread"] - 1
        lines.append(f"| protocol C pair | {label} | {m[n]['spread']:,.0f} | "
                     f"{m[n]['extent']:,.0f} | {nb.ratio_str(m[n]['extent'] / m[n]['spread'])} | "
                     f"{al_writes[n]:,} |")
        verdicts.append(f"- al_extents {label}: spread writes cost {cost * 100:.1f}% more than "
                        f"one-extent writes (target ≤ 5%) **{'PASS' if cost <= 0.05 else 'MISS'}**")
    fs_share = m["solo"]["extent"] / m["solo"]["spread"] - 1
    (small, _), (large, _) = al_sizes
    own = m[large]["spread"] / m[small]["spread"] - 1
    lines += ["", *verdicts, f"- the standalone daemon's difference, with no activity log: "
              f"{fs_share * 100:.1f}% (the file system's and disk's share).",
              f"- the AL transactions' own cost: spread writes with al_extents {small} are "
              f"{own * 100:.1f}% slower than with {large}, where after fio's ramp no transaction "
              "is written.", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=nb.parse_size, default=1 * GiB)
    ap.add_argument("--al-size", type=nb.parse_size, default=16 * GiB)
    ap.add_argument("--parts", default="protocols,al", help="protocols, al or both")
    ap.add_argument("--layouts", default="own,shared",
                    help="where the Secondary's disks are for the protocols part: 'own' (RAM, "
                         "/dev/shm: a disk of its own, as on a second machine), 'shared' (the "
                         "same disk as the Primary's), or both")
    ap.add_argument("--al-layout", default="own", choices=sorted(LAYOUTS),
                    help="where the Secondary's disk is for the activity log part")
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repld", default=default_bin("repld"))
    ap.add_argument("--replctl", default=default_bin("replctl"))
    ap.add_argument("--out", help="also write the markdown report here")
    args = ap.parse_args()
    for tool in ("fio", args.repld, args.replctl):
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"repl_bench: {tool} not found (build first: scripts/build.sh release)")
    tmp = tempfile.mkdtemp(prefix="repl-bench-", dir=args.dir)
    lines = report_header("repld replication benchmark", "bench/repl_bench.py", args.repld)
    try:
        parts = args.parts.split(",")
        if "protocols" in parts:
            for layout in args.layouts.split(","):
                if layout not in LAYOUTS:
                    sys.exit(f"repl_bench: unknown layout {layout!r} (own, shared)")
                part_protocols(args, tmp, lines, layout)
        if "al" in parts:
            part_activity_log(args, tmp, lines)
        write_report(lines, args.out)
    finally:
        nb.log(f"removing {tmp} (large files on a file system mounted with discard take a while)")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
