#!/usr/bin/python3
"""NBD server benchmark: repld vs qemu-nbd vs nbdkit vs the raw-file limit.

One run measures every (workload, target) pair on the SAME backing file with fio,
interleaving targets inside each round so the noise of a shared machine hits all
targets alike, and reports the median of --runs rounds as a markdown table.

Standard library only; run it with /usr/bin/python3 (see docs/benchmarks.md).
Progress goes to stderr, the report to stdout (and to --out FILE).
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
GiB = 1 << 30

# name -> (label, fio rw, block size, iodepth, throughput-target ratio)
WORKLOADS = {
    "randwrite-4k-qd1": ("4k randwrite QD1", "randwrite", "4k", 1, 1.00),
    "randwrite-4k-qd32": ("4k randwrite QD32", "randwrite", "4k", 32, 1.20),
    "randread-4k-qd1": ("4k randread QD1", "randread", "4k", 1, 1.00),
    "randread-4k-qd32": ("4k randread QD32", "randread", "4k", 32, 1.00),
    "write-1m-qd8": ("1M seq write QD8", "write", "1M", 8, 1.00),
    "read-1m-qd8": ("1M seq read QD8", "read", "1M", 8, 1.00),
}

TARGETS = ["repld", "qemu-nbd", "nbdkit", "limit"]
PEERS = ["qemu-nbd", "nbdkit"]
TARGET_LABEL = {
    "repld": "repld",
    "qemu-nbd": "qemu-nbd",
    "nbdkit": "nbdkit",
    "limit": "limit (fio io_uring, direct)",
}

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def log(msg):
    print(f"[nbd_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(f"got signal {signal.Signals(signum).name}")
        self.signum = signum


def _on_signal(signum, _frame):
    raise Interrupted(signum)


# --------------------------------------------------------------------------- helpers

def parse_size(text):
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B?)\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 2G, 512MiB, 1073741824)")
    n = int(m.group(1))
    unit = m.group(2).upper()
    if unit:
        n <<= {"K": 10, "M": 20, "G": 30, "T": 40}[unit]
    if n < 64 * MiB or n % MiB:
        raise argparse.ArgumentTypeError("size must be a multiple of 1 MiB and at least 64 MiB")
    return n


def fmt_size(n):
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def comma_list(allowed, kind):
    def parse(text):
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {', '.join(bad) or '(empty)'}; allowed: {', '.join(allowed)}")
        # keep canonical order
        return [x for x in allowed if x in items]
    return parse


def cmd_output(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e.__class__.__name__})"


def first_line(text):
    return text.splitlines()[0] if text else ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fs_of(path):
    """(fstype, source, mountpoint) of the mount holding path, from /proc/self/mounts."""
    path = os.path.realpath(path)
    best = ("unknown", "?", "")
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[2]):
                    best = (parts[2], parts[0], mnt)
    except OSError:
        pass
    return best


_libc = None


def _pdeathsig():
    """preexec_fn: have the kernel SIGTERM the child if this process dies (e.g. SIGKILL)."""
    try:
        if _libc is not None:
            _libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


def socket_accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# --------------------------------------------------------------------------- servers

class Server:
    """One NBD server process we started; stopped by PID only."""

    def __init__(self, name, argv, sock, logpath):
        self.name, self.argv, self.sock, self.logpath = name, argv, sock, logpath
        self.proc = None
        self._log = None

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self._log = open(self.logpath, "ab")
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} {shlex.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode} "
                                   f"before its socket was ready: {self.last_log_line()}"
                                   f"\n{self.log_tail()}")
            if os.path.exists(self.sock) and socket_accepts(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} socket {self.sock} not accepting after "
                           f"{READY_TIMEOUT:.0f} s: {self.last_log_line()}\n{self.log_tail()}")

    def export_size(self):
        """Export size in bytes via nbdinfo (None if nbdinfo is missing or fails)."""
        if not shutil.which("nbdinfo"):
            return None
        r = subprocess.run(["nbdinfo", "--size", f"nbd+unix:///?socket={self.sock}"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"nbdinfo --size failed on {self.name}: {r.stderr.strip()}")
        return int(r.stdout.strip())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM by PID, SIGKILL after STOP_TIMEOUT. Returns the exit status (or None)."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        rc = p.poll()
        if rc is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                rc = p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {p.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s; SIGKILL")
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = p.wait()
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def last_log_line(self):
        lines = [l for l in self.log_tail(50).splitlines()
                 if l.strip() and not l.strip().startswith("=== ")]
        return lines[-1].strip().replace("|", "/") if lines else "(empty log)"

    def log_tail(self, n=20):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join("    " + l for l in lines[-n:])
        except OSError:
            return "    (no log)"


# --page-cache: every target through the page cache (repld direct_io = "off", qemu-nbd
# --cache=writeback, nbdkit's default cache, a buffered limit row), reported as its own table.
PAGE_CACHE = False


def make_server(target, tmp, backing, repld_bin):
    sock = os.path.join(tmp, f"{target}.sock")
    logpath = os.path.join(tmp, f"{target}.log")
    if target == "repld":
        cfg = os.path.join(tmp, "repld.toml")
        with open(cfg, "w") as f:
            f.write('[resource]\nname = "bench"\n'
                    f'[nbd]\nsocket = "{sock}"\n'
                    + ('[disk]\ndirect_io = "off"\n' if PAGE_CACHE else '')
                    + f'[node.bench]\ndisk = "{backing}"\n'
                    + f'control_socket = "{os.path.join(tmp, "repld.ctl")}"\n')
        argv = [repld_bin, "--config", cfg, "--node", "bench", "--log-level", "warn"]
    elif target == "qemu-nbd":
        cache = "--cache=writeback" if PAGE_CACHE else "--cache=none"
        argv = ["qemu-nbd", cache, "--aio=io_uring", "-f", "raw", f"--socket={sock}",
                "--shared=8", "-t", backing]
    elif target == "nbdkit":
        argv = ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock,
                "file", backing] + ([] if PAGE_CACHE else ["cache=none"])
    else:
        raise ValueError(target)
    return Server(target, argv, sock, logpath)


# --------------------------------------------------------------------------- fio

def fio_argv(workload, target, backing, size, runtime, sock, outjson):
    _label, rw, bs, qd, _t = WORKLOADS[workload]
    argv = ["fio", f"--name={workload}", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
            "--numjobs=1", "--time_based", f"--runtime={runtime}", "--ramp_time=1",
            f"--size={size}", "--randrepeat=0", "--norandommap", "--group_reporting",
            "--output-format=json", f"--output={outjson}"]
    if target == "limit":
        argv += ["--ioengine=io_uring", f"--direct={0 if PAGE_CACHE else 1}",
                 f"--filename={backing}"]
    else:
        argv += ["--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}"]
    return argv


def parse_fio(path, rw):
    with open(path) as f:
        text = f.read()
    # The nbd engine prints "fio: connected to NBD server" on stdout; with --output the
    # file is clean, but skip anything before the first '{' to be safe.
    start = text.find("{")
    if start < 0:
        raise RuntimeError(f"no JSON in {path}")
    data = json.loads(text[start:])
    job = data["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio job error {job['error']}")
    side = job["read" if "read" in rw else "write"]
    if side.get("total_ios", 0) <= 0:
        raise RuntimeError("fio completed no I/O")
    pct = side.get("clat_ns", {}).get("percentile", {})
    p99 = pct.get("99.000000")
    return {
        "iops": float(side["iops"]),
        "mbs": float(side["bw_bytes"]) / 1e6,
        "p99_us": (float(p99) / 1000.0) if p99 is not None else float("nan"),
        "ios": int(side["total_ios"]),
    }


def run_fio(argv, timeout):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise RuntimeError(f"fio exited {r.returncode}: {' | '.join(msg[-5:])}")


def prepare_backing(path, size):
    log(f"creating {fmt_size(size)} backing file {path} (fallocate + one sequential fill)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    t0 = time.monotonic()
    # Fill with fio's (non-zero, pseudo-random) buffers through O_DIRECT, so every block
    # is a real written extent and reads cannot be served from unwritten extents or holes.
    argv = ["fio", "--name=fill", f"--filename={path}", "--rw=write", "--bs=1M",
            "--iodepth=16", "--ioengine=io_uring", "--direct=1", f"--size={size}",
            "--end_fsync=1", "--output-format=terse"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"filling the backing file failed: {r.stderr.strip() or r.stdout.strip()}")
    dt = time.monotonic() - t0
    log(f"filled in {dt:.1f} s ({size / dt / 1e6:.0f} MB/s)")


# --------------------------------------------------------------------------- report

def ratio_str(r, threshold=None):
    if r is None:
        return "—"
    s = f"{r:.2f}x"
    # never print "1.00x MISS": show a third decimal when rounding would hide the miss
    if threshold is not None and r < threshold and float(f"{r:.2f}") >= threshold:
        s = f"{r:.3f}x"
    return s


def num(v, digits=0):
    if v is None or v != v:  # None or NaN
        return "—"
    return f"{v:,.{digits}f}"


def median_of(samples):
    if not samples:
        return None
    return {k: statistics.median(s[k] for s in samples) for k in ("iops", "mbs", "p99_us")}


def build_report(args, ctx, results, errors, workloads, targets):
    out = []
    out.append("# repld NBD benchmark")
    out.append("")
    for k, v in ctx:
        out.append(f"- **{k}**: {v}")
    out.append("")
    out.append("Medians of the runs. MB/s = 10^6 B/s. p99 = fio completion latency (clat) "
               "99th percentile. ×peer = repld ÷ best of qemu-nbd/nbdkit for throughput, "
               "best peer p99 ÷ repld p99 for latency (>1 = repld better). ×limit = target ÷ "
               "limit row (latency: limit p99 ÷ target p99). spread = (max−min)/median IOPS.")
    out.append("")
    out.append("| workload | target | IOPS | MB/s | p99 µs | ×peer IOPS | ×peer p99 | ×limit IOPS "
               "| ×limit p99 | spread | runs |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = []
    for w in workloads:
        label, _rw, _bs, _qd, threshold = WORKLOADS[w]
        med = {t: median_of(results[w][t]) for t in targets}
        peers = [t for t in PEERS if t in targets and med[t]]
        best_thr = max(peers, key=lambda t: med[t]["iops"]) if peers else None
        lat_peers = [t for t in peers if med[t]["p99_us"] == med[t]["p99_us"]]
        best_lat = min(lat_peers, key=lambda t: med[t]["p99_us"]) if lat_peers else None
        lim = med.get("limit")
        for t in targets:
            m = med[t]
            n = len(results[w][t])
            if not m:
                err = errors[w].get(t, "not measured")
                out.append(f"| {label} | {TARGET_LABEL[t]} | — | — | — | — | — | — | — | — | "
                           f"0 ({err}) |")
                continue
            pr_thr = pr_lat = lr_thr = lr_lat = None
            if t == "repld":
                if best_thr:
                    pr_thr = m["iops"] / med[best_thr]["iops"]
                if best_lat and m["p99_us"] > 0:
                    pr_lat = med[best_lat]["p99_us"] / m["p99_us"]
            if t != "limit" and lim:
                lr_thr = m["iops"] / lim["iops"] if lim["iops"] > 0 else None
                if m["p99_us"] > 0 and lim["p99_us"] == lim["p99_us"]:
                    lr_lat = lim["p99_us"] / m["p99_us"]
            iops = [s["iops"] for s in results[w][t]]
            spread = f"{(max(iops) - min(iops)) / m['iops'] * 100:.0f}%" if n > 1 and m["iops"] else "—"
            failed = f" ({len(errors[w].get(t + '#all', []))} failed)" if errors[w].get(t + "#all") else ""
            name = f"**{TARGET_LABEL[t]}**" if t == "repld" else TARGET_LABEL[t]
            out.append(f"| {label} | {name} | {num(m['iops'])} | {num(m['mbs'], 1)} | "
                       f"{num(m['p99_us'])} | {ratio_str(pr_thr)} | {ratio_str(pr_lat)} | "
                       f"{ratio_str(lr_thr)} | {ratio_str(lr_lat)} | {spread} | {n}{failed} |")
        # summary line
        rm = med.get("repld") if "repld" in targets else None
        if "repld" not in targets:
            summary.append(f"- {label}: repld not in --targets")
        elif not rm:
            summary.append(f"- {label}: repld not measured ({errors[w].get('repld', 'no data')})")
        elif not best_thr:
            summary.append(f"- {label}: repld {num(rm['iops'])} IOPS; no peer measured")
        else:
            r = rm["iops"] / med[best_thr]["iops"]
            verdict = "PASS" if r >= threshold else "MISS"
            line = (f"- {label}: repld vs best peer: {ratio_str(r, threshold)} "
                    f"(target ≥{threshold:.2f}x"
                    + ("" if threshold > 1.0 else "; ≥1.20x for 4k randwrite QD32")
                    + f") **{verdict}** — best peer {best_thr}")
            if best_lat and rm["p99_us"] > 0:
                line += f"; p99 vs best peer ({best_lat}): {ratio_str(med[best_lat]['p99_us'] / rm['p99_us'])}"
            if lim and lim["iops"] > 0:
                line += f"; vs limit: {ratio_str(rm['iops'] / lim['iops'])}"
            summary.append(line)
    out.append("")
    out.append("## Summary (throughput, repld ÷ best peer)")
    out.append("")
    out.extend(summary)
    notes = [e for w in workloads for t, e in errors[w].items() if t.endswith("#all")]
    if any(notes):
        out.append("")
        out.append("## Errors")
        out.append("")
        for w in workloads:
            for t, errs in errors[w].items():
                if t.endswith("#all"):
                    for e in errs:
                        out.append(f"- {WORKLOADS[w][0]} / {t[:-4]}: {e}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main

def default_repld():
    env = os.environ.get("REPLD_BIN")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.join(root, "build", "release", "bin", "repld")
    dflt = os.path.join(root, "build", "default", "bin", "repld")
    return rel if os.path.exists(rel) else dflt


def main():
    global _libc
    ap = argparse.ArgumentParser(
        description="Benchmark repld against qemu-nbd, nbdkit and the raw-file limit with fio.")
    ap.add_argument("--runtime", type=int, default=5, help="fio seconds per measurement (default 5; plus 1 s ramp)")
    ap.add_argument("--runs", type=int, default=3, help="rounds per workload; median is reported (default 3)")
    ap.add_argument("--size", type=parse_size, default=2 * GiB, help="backing file size (default 2G)")
    ap.add_argument("--targets", type=comma_list(TARGETS, "target"), default=list(TARGETS),
                    help=f"comma list of {','.join(TARGETS)} (default all)")
    ap.add_argument("--workloads", type=comma_list(list(WORKLOADS), "workload"), default=list(WORKLOADS),
                    help=f"comma list of {','.join(WORKLOADS)} (default all)")
    ap.add_argument("--repld", default=None,
                    help="repld binary (default $REPLD_BIN, else build/release/bin/repld, else build/default/bin/repld)")
    ap.add_argument("--dir", default="/var/tmp", help="where the temp dir with the backing file goes (default /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (backing file, configs, logs, fio JSON)")
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--json", help="also write every raw sample as JSON to this file")
    ap.add_argument("--page-cache", action="store_true",
                    help="run every target through the page cache: repld direct_io=off, "
                         "qemu-nbd --cache=writeback, nbdkit default cache, buffered limit row")
    args = ap.parse_args()
    global PAGE_CACHE
    PAGE_CACHE = args.page_cache
    if PAGE_CACHE:
        TARGET_LABEL["limit"] = "limit (fio io_uring, buffered)"
    if args.runtime < 1 or args.runs < 1:
        ap.error("--runtime and --runs must be ≥ 1")

    for tool in ["fio"] + [t for t in ("qemu-nbd", "nbdkit") if t in args.targets]:
        if not shutil.which(tool):
            ap.error(f"{tool} not found on PATH")
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        _libc = None

    cmdline = shlex.join([sys.executable] + sys.argv)
    repld_bin = os.path.abspath(args.repld or default_repld())
    targets = list(args.targets)
    repld_note = None
    if "repld" in targets and not (os.path.isfile(repld_bin) and os.access(repld_bin, os.X_OK)):
        repld_note = f"NOT FOUND at {repld_bin} — repld skipped, peers only"
        log(f"repld binary missing: {repld_bin}; running the peers only")
        targets.remove("repld")
    if not targets:
        ap.error("no target left to run")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    tmp = tempfile.mkdtemp(prefix="repld-bench-", dir=args.dir)
    backing = os.path.join(tmp, "backing.img")
    servers = {}
    results = {w: {t: [] for t in args.targets} for w in args.workloads}
    errors = {w: {} for w in args.workloads}
    rc = 0
    interrupted = False
    try:
        fstype, fssrc, fsmnt = fs_of(tmp)
        prepare_backing(backing, args.size)
        for t in targets:
            if t != "limit":
                servers[t] = make_server(t, tmp, backing, repld_bin)

        ctx = [
            ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")),
            ("host", f"{platform.node()}, kernel {platform.release()} ({platform.machine()})"),
            ("cpu", f"{cpu_model()}; {os.cpu_count()} cores online, "
                    f"{len(os.sched_getaffinity(0))} usable; loadavg at start "
                    f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"),
            ("backing file", f"{fmt_size(args.size)} preallocated + filled, {backing} on "
                             f"{fstype} ({fssrc} at {fsmnt})"),
            ("method", f"fio {args.runtime} s + 1 s ramp, one job/connection, {args.runs} interleaved "
                       f"round(s) per workload, median; each server started fresh per measurement"),
            ("tools", f"{cmd_output(['fio', '--version'])}; "
                      f"{first_line(cmd_output(['qemu-nbd', '--version']))}; "
                      f"{cmd_output(['nbdkit', '--version'])}"),
            ("repld", repld_note or f"{repld_bin} ({first_line(cmd_output([repld_bin, '--version'])) or 'no --version'})"),
            ("cache mode", "page cache: repld direct_io=off, qemu-nbd --cache=writeback, nbdkit "
                           "default cache, limit row buffered" if PAGE_CACHE else
                           "direct: repld O_DIRECT, qemu-nbd --cache=none, nbdkit cache=none "
                           "(nbdkit's is buffered I/O plus eviction, not O_DIRECT), limit row O_DIRECT"),
            ("command", f"`{cmdline}`"),
        ]
        for w in args.workloads:
            for t in args.targets:
                if t not in targets:
                    errors[w][t] = "binary missing" if t == "repld" else "skipped"

        export_sizes = {}
        total = len(args.workloads) * args.runs * len(targets)
        done = 0
        fio_timeout = args.runtime + 1 + 60
        for w in args.workloads:
            label, rw = WORKLOADS[w][0], WORKLOADS[w][1]
            for rnd in range(args.runs):
                # rotate the start target each round so no target always goes first
                order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
                for t in order:
                    done += 1
                    outjson = os.path.join(tmp, f"fio-{w}-{t}-r{rnd + 1}.json")
                    srv = servers.get(t)
                    try:
                        fio_size = args.size
                        if srv:
                            srv.start()
                            if t not in export_sizes:
                                export_sizes[t] = srv.export_size()
                                if export_sizes[t] is not None and export_sizes[t] != args.size:
                                    log(f"{t} exports {export_sizes[t]} bytes, file is {args.size}")
                            if export_sizes[t]:
                                fio_size = min(args.size, export_sizes[t]) // MiB * MiB
                        run_fio(fio_argv(w, t, backing, fio_size, args.runtime,
                                         srv.sock if srv else None, outjson), fio_timeout)
                        if srv and not srv.alive():
                            raise RuntimeError(f"{t} died during the run: {srv.last_log_line()}"
                                               f"\n{srv.log_tail()}")
                        s = parse_fio(outjson, rw)
                        s["round"] = rnd + 1
                        results[w][t].append(s)
                        log(f"[{done}/{total}] {label:18} round {rnd + 1} {t:9} "
                            f"{s['iops']:>10,.0f} IOPS {s['mbs']:>8.1f} MB/s p99 {s['p99_us']:>9,.0f} µs")
                    except (RuntimeError, OSError, ValueError, KeyError,
                            subprocess.TimeoutExpired) as e:
                        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
                        log(f"[{done}/{total}] {label:18} round {rnd + 1} {t:9} FAILED: {e}")
                        errors[w][t] = msg
                        errors[w].setdefault(t + "#all", []).append(f"round {rnd + 1}: {msg}")
                        rc = 1
                    finally:
                        if srv:
                            st = srv.stop()
                            if st not in (None, 0, -signal.SIGTERM, 128 + signal.SIGTERM):
                                log(f"{t} exit status at stop: {st}")

        odd = {t: n for t, n in export_sizes.items() if n is not None and n != args.size}
        if odd:
            ctx.insert(4, ("export sizes", "; ".join(
                f"{t} exports {n} B (≠ file {args.size} B; fio --size clamped to the export)"
                for t, n in odd.items())))
        report = build_report(args, ctx, results, errors, args.workloads, args.targets)
        sys.stdout.write(report)
        sys.stdout.flush()
        if args.out:
            with open(args.out, "w") as f:
                f.write(report)
            log(f"report written to {args.out}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"context": dict(ctx), "results": results,
                           "errors": {w: {t: e for t, e in d.items() if not t.endswith('#all')}
                                      for w, d in errors.items()}}, f, indent=1)
            log(f"raw samples written to {args.json}")
    except (KeyboardInterrupt, Interrupted) as e:
        interrupted = True
        log(f"interrupted ({str(e) or 'Ctrl-C'}); cleaning up")
        rc = 128 + getattr(e, "signum", signal.SIGINT)
    finally:
        for srv in servers.values():
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {srv.name}: {e}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        sys.exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
