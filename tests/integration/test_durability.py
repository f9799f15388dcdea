#!/usr/bin/python3
"""Durability contract of repld, checked against the real kernel's block layer.

The NBD spec's promises about the server's volatile cache:

  (1) a WRITE with NBD_CMD_FLAG_FUA is replied to only once its data is on
      non-volatile storage: on a disk with a write-back cache, a cache flush
      (or a FUA write) covering the data has completed on the device;
  (2) a FLUSH is replied to only once every write completed before the FLUSH
      was sent is on non-volatile storage: a cache flush issued after those
      writes reached the device has completed.

A test that only reads the data back cannot see any of this (the page cache and
the disk's cache both answer reads).  This one records the block layer's own
tracepoints (block:block_rq_issue / block:block_rq_complete) for the disk that
holds the backing file, while a libnbd client does, five times each: a plain
1 MiB write, a 1 MiB FUA write and a FLUSH, at distinct offsets whose physical
sectors are known (FIEMAP).  Then, for every FUA write and every FLUSH, it
looks for the device requests that carried the data and for a cache flush
issued after them and completed before the NBD reply arrived.  It runs with
[disk] direct_io = "on" (O_DIRECT: data reaches the device before the reply of
a plain write) and "off" (page cache: the FUA write / FLUSH must write the
data back first), since repld's code paths differ.

Why not `perf record`: perf would read the same tracepoints, but on this
machine's kernel (6.18, a VM with no PMU) perf sampling never delivers a
block:block_rq_complete record -- `perf stat -a` counts them, but `perf record
-a` and a bare perf_event_open() ring buffer get zero samples (cause not
pinned down; the completions run in softirq context), so perf sees only the
issues.  ftrace delivers both (same tracepoints, same dev/rwbs fields), so the
test uses a private tracefs instance (instances/<name>, removed at the end)
with trace_clock "mono" = CLOCK_MONOTONIC, the clock of time.monotonic().
The test also writes markers into the same buffer (trace_marker) around every
NBD command: the buffer is ordered by that clock, so "after the data reached
the device" and "before the reply" are checked both by position in the trace
and by timestamp (the markers also prove the trace clock is time.monotonic()'s).

What the kernel showed here (virtio-blk vda 254,0, write_cache "write back",
fua 0, ext4, mq-deadline; rwbs letters: leading F = PREFLUSH or REQ_OP_FLUSH,
W = write, an F after the W = FUA, S = sync, M = metadata):

  tracing_mark_write: repld-dur 0 fua                         (our marker)
  iou-wrk-31631 block_rq_issue:  254,0 WS 1048576 () 56905728 + 2048   FUA data
  <idle>     block_rq_complete:  254,0 WS () 56905728 + 2048
  kworker/1:22 block_rq_issue:   254,0 WSM 4096 () 350486592 + 8       ext4 metadata
  <idle>     block_rq_complete:  254,0 WSM () 350486592 + 8
  kworker/1:2H block_rq_issue:   254,0 FF 0 () 0 + 0                   cache flush
  <idle>     block_rq_complete:  254,0 FF () 18446744073709551615 + 0
  <idle>     block_rq_complete:  254,0 WS () 0 + 0     fdatasync's empty PREFLUSH
                                                       write, ended by the flush
                                                       machinery (never issued)
  tracing_mark_write: repld-dur 0 flush                       (FUA reply seen)

The disk does not do FUA, so the kernel never sends one: RWF_DSYNC and
fdatasync both end in an "FF" request (the flush machinery's flush_rq, issued
by kblockd).  On a FUA-capable disk a FUA data write ("WFS") is accepted too.

Negative control: the same checker run on the plain writes' windows finds no
flush after their data (logged, not asserted: another process may flush the
disk at any time); for O_DIRECT the plain data's completion on the device
inside the plain write's own window is asserted, which shows that the trace
does see repld's data.  Checked once by hand: a repld patched to drop
RWF_DSYNC from FUA writes, or to answer FLUSH without fdatasync, fails both
tests ("FUA write replied ... without a cache flush", "FLUSH replied ...").

Skips (with the reason) when not root, without tracefs / the block
tracepoints / the mono trace clock, or when the temp dir is not on a plain
block device whose queue/write_cache is "write back" (tmpfs, dm, md, ...).
"""

import fcntl
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MiB  # noqa: E402

nbd = harness.nbd_module()

ROUNDS = 5
DATA = 1 * MiB
DISK = 20 * MiB          # plain write i at (1 + 3i) MiB, FUA write i at (2 + 3i) MiB
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
SECTOR = 512
# trace timestamps are printed in microseconds (rounded): compare with a margin
TS_SLACK = 2e-6


# --------------------------------------------------------------------------
# Where the backing file lives
# --------------------------------------------------------------------------

def read_sys(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def block_device_of(path: str):
    """(info dict, None) for the whole disk holding path, or (None, reason)."""
    st = os.stat(path)
    mm = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sysdir = f"/sys/dev/block/{mm}"
    if not os.path.exists(sysdir):
        return None, (f"{path} is on device {mm}, which is not a block device "
                      f"(tmpfs, overlay, btrfs?)")
    real = os.path.realpath(sysdir)
    start = 0
    if os.path.exists(os.path.join(real, "partition")):
        start = int(read_sys(os.path.join(real, "start")))   # in 512-byte sectors
        disk = os.path.dirname(real)
    else:
        disk = real
    name = os.path.basename(disk)
    if os.path.exists(os.path.join(disk, "dm")) or os.path.exists(os.path.join(disk, "md")):
        return None, (f"{path} is on a stacked device /dev/{name} (dm/md): its requests are "
                      f"not traced on it")
    if not os.path.isdir(os.path.join(disk, "mq")):
        return None, f"/dev/{name} is not a blk-mq device (no block_rq_* events)"
    wc_path = os.path.join(disk, "queue", "write_cache")
    if not os.path.exists(wc_path):
        return None, f"/dev/{name} has no queue/write_cache"
    wc = read_sys(wc_path)
    if wc != "write back":
        return None, (f"/dev/{name} queue/write_cache is {wc!r}, not 'write back': the disk has no "
                      f"volatile cache, flushes are no-ops and nothing can be observed")
    maj, mnr = (int(x) for x in read_sys(os.path.join(disk, "dev")).split(":"))
    fua_path = os.path.join(disk, "queue", "fua")
    fua = read_sys(fua_path) if os.path.exists(fua_path) else "?"
    return {"name": name, "major": maj, "minor": mnr, "part_start": start, "fua": fua,
            "write_cache": wc}, None


def pick_tmpdir():
    """A temp dir on a suitable disk: /tmp (the harness' place) or /var/tmp."""
    reasons = []
    for base in ("/tmp", "/var/tmp"):
        if not os.path.isdir(base):
            continue
        dev, why = block_device_of(base)
        if dev is None:
            reasons.append(why)
            continue
        if base == "/tmp":
            return harness.make_tempdir(), None
        d = tempfile.mkdtemp(prefix=f"repld-it-{os.getpid()}-", dir=base)
        if not harness.KEEP:
            harness.register_cleanup(lambda: shutil.rmtree(d, ignore_errors=True), f"rmtree {d}")
        return d, None
    return None, "; ".join(reasons)


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_NOT_ALIGNED = 0x100
FIEMAP_EXTENT_DATA_INLINE = 0x200


def fiemap_sectors(path: str, offset: int, length: int, part_start: int) -> list[tuple[int, int]]:
    """Disk sector ranges [(first, count)] holding file bytes [offset, offset+length)."""
    n = 64
    buf = bytearray(struct.pack("=QQIIII", offset, length, FIEMAP_FLAG_SYNC, 0, n, 0)
                    + b"\0" * (56 * n))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
    mapped = struct.unpack_from("=I", buf, 20)[0]
    out, covered = [], 0
    for i in range(mapped):
        logical, physical, ext_len, _r1, _r2, flags = struct.unpack_from("=QQQQQI", buf,
                                                                          32 + 56 * i)
        bad = flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_UNWRITTEN
                       | FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE)
        if bad:
            raise AssertionError(f"{path}: extent at {logical} has flags {flags:#x}; "
                                 f"cannot map it to disk sectors")
        lo, hi = max(logical, offset), min(logical + ext_len, offset + length)
        if lo >= hi:
            continue
        out.append((part_start + (physical + lo - logical) // SECTOR, (hi - lo) // SECTOR))
        covered += hi - lo
    if covered != length:
        raise AssertionError(f"{path}: FIEMAP maps {covered} of {length} bytes at {offset}")
    return out


# --------------------------------------------------------------------------
# ftrace instance
# --------------------------------------------------------------------------

def tracefs_root():
    for root in TRACEFS:
        if os.path.isdir(os.path.join(root, "instances")):
            return root
    return None


def trace_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (tracefs)"
    root = tracefs_root()
    if root is None and os.path.isdir("/sys/kernel/tracing"):
        # A machine that has tracefs but did not mount it: mount it (left mounted, as the
        # kernel's own default layout has it).
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                       capture_output=True)
        root = tracefs_root()
    if root is None:
        return "tracefs is not mounted (no /sys/kernel/tracing/instances)"
    for ev in ("block_rq_issue", "block_rq_complete"):
        if not os.path.isdir(os.path.join(root, "events", "block", ev)):
            return f"tracepoint block:{ev} is not available"
    clocks = read_sys(os.path.join(root, "trace_clock")).replace("[", " ").replace("]", " ")
    if "mono" not in clocks.split():
        return "trace clock 'mono' is not available"
    return None


class BlockTrace:
    """A private ftrace instance recording block_rq_issue/complete of one disk,
    plus our trace_marker lines, timestamped with CLOCK_MONOTONIC."""

    # a request the driver could not take (queue full) is requeued and issued
    # again: block_rq_requeue keeps the issue/complete bookkeeping straight
    EVENTS = ("block_rq_issue", "block_rq_complete", "block_rq_requeue")

    def __init__(self, dev: dict):
        self.dev = dev
        self.dir = os.path.join(tracefs_root(), "instances", f"repld-it-{os.getpid()}-durability")
        self.marker_fd = None
        self._token = None

    def _w(self, rel: str, value: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(value)

    def start(self) -> None:
        os.mkdir(self.dir)
        self._token = harness.register_cleanup(self.close, f"remove ftrace instance {self.dir}")
        self._w("tracing_on", "0")
        self._w("trace_clock", "mono")
        self._w("buffer_size_kb", "8192")   # per CPU; only one disk's requests go in
        dev_t = (self.dev["major"] << 20) | self.dev["minor"]   # the kernel's MKDEV
        for ev in self.EVENTS:
            try:
                self._w(f"events/block/{ev}/filter", f"dev == {dev_t}")
            except OSError:
                pass  # the parser filters by device anyway
            self._w(f"events/block/{ev}/enable", "1")
        self._w("trace", "")
        self.marker_fd = os.open(os.path.join(self.dir, "trace_marker"), os.O_WRONLY)
        self._w("tracing_on", "1")

    def mark(self, text: str) -> None:
        os.write(self.marker_fd, f"repld-dur {text}".encode())

    def stop(self) -> str:
        self._w("tracing_on", "0")
        lost = []
        for cpu in sorted(os.listdir(os.path.join(self.dir, "per_cpu"))):
            stats = read_sys(os.path.join(self.dir, "per_cpu", cpu, "stats"))
            for line in stats.splitlines():
                k, _, v = line.partition(":")
                if k.strip() in ("overrun", "dropped events") and v.strip() not in ("0", ""):
                    lost.append(f"{cpu} {k.strip()}={v.strip()}")
        if lost:
            raise AssertionError(f"ftrace lost events ({', '.join(lost)}); the trace is incomplete")
        with open(os.path.join(self.dir, "trace")) as f:
            return f.read()

    def close(self) -> None:
        if self.marker_fd is not None:
            os.close(self.marker_fd)
            self.marker_fd = None
        if not os.path.isdir(self.dir):
            return
        try:
            self._w("tracing_on", "0")
            for ev in self.EVENTS:
                self._w(f"events/block/{ev}/enable", "0")
        finally:
            os.rmdir(self.dir)

    def release(self) -> None:
        if self._token is not None:
            harness.run_cleanup(self._token)
            self._token = None


LINE_RE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                     r"(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<rest>.*)$")
RQ_RE = re.compile(r"^(?P<maj>\d+),(?P<min>\d+)\s+(?P<rwbs>\S+)\s+(?:\d+\s+)?\((?P<cmd>[^)]*)\)\s+"
                   r"(?P<sector>\d+)\s+\+\s+(?P<nr>\d+)")


class Ev:
    __slots__ = ("idx", "ts", "kind", "rwbs", "sector", "nr", "task", "text", "mark")

    def __init__(self, idx, ts, kind, text, task, rwbs="", sector=0, nr=0, mark=""):
        self.idx, self.ts, self.kind, self.text, self.task = idx, ts, kind, text, task
        self.rwbs, self.sector, self.nr, self.mark = rwbs, sector, nr, mark

    def is_flush(self) -> bool:
        """A request that makes the device flush its volatile cache first
        (REQ_PREFLUSH, or REQ_OP_FLUSH): rwbs starts with F ("FF", "FWS")."""
        return self.rwbs.startswith("F")

    def is_write(self) -> bool:
        op = self.rwbs.lstrip("F")
        return op.startswith("W") and self.nr > 0

    def is_fua_write(self) -> bool:
        op = self.rwbs.lstrip("F")
        return op.startswith("W") and "F" in op[1:]


def parse_trace(text: str, dev: dict) -> list[Ev]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        if not m:
            continue
        ev, rest, ts = m["event"], m["rest"], float(m["ts"])
        task = f"{m['task'].strip()}-{m['pid']}"
        if ev == "tracing_mark_write":
            if rest.startswith("repld-dur "):
                out.append(Ev(len(out), ts, "mark", line, task,
                              mark=rest[len("repld-dur "):].strip()))
            continue
        kind = {"block_rq_issue": "issue", "block_rq_complete": "complete",
                "block_rq_requeue": "requeue"}.get(ev)
        if kind is None:
            continue
        r = RQ_RE.match(rest)
        if not r or (int(r["maj"]), int(r["min"])) != (dev["major"], dev["minor"]):
            continue
        out.append(Ev(len(out), ts, kind, line, task,
                      rwbs=r["rwbs"], sector=int(r["sector"]), nr=int(r["nr"])))
    return out


# --------------------------------------------------------------------------
# Checks over the parsed trace
# --------------------------------------------------------------------------

def overlaps(ev: Ev, rng: tuple[int, int]) -> bool:
    return ev.sector < rng[0] + rng[1] and rng[0] < ev.sector + ev.nr


def data_on_device(evs: list[Ev], ranges: list[tuple[int, int]], lo: int, hi: int):
    """The write completions in trace positions (lo, hi) that carried the data
    in the sector ranges.  Returns (last index, all of them FUA, those events)
    or (None, False, partial events) if some sector was not written."""
    found = [e for e in evs[lo + 1:hi]
             if e.kind == "complete" and e.is_write() and any(overlaps(e, r) for r in ranges)]
    for first, count in ranges:
        spans = sorted((max(e.sector, first), min(e.sector + e.nr, first + count)) for e in found
                       if overlaps(e, (first, count)))
        pos = first
        for a, b in spans:
            if a > pos:
                break
            pos = max(pos, b)
        if pos < first + count:
            return None, False, found
    return max(e.idx for e in found), all(e.is_fua_write() for e in found), found


def flush_after(evs: list[Ev], after: int, hi: int, deadline: float):
    """A cache flush issued at a trace position > after and completed at a
    position < hi with a timestamp < deadline.  Flushes still in flight at
    `after` may complete in the window too; a completion only counts once all
    of those are accounted for; a requeued flush is taken back (it is issued
    again later; there is one flush_rq per hardware queue, so the requeued one
    is the latest issued).  Returns (issue, completion) or None."""
    inflight = 0
    for e in evs[:after + 1]:
        if e.kind != "mark" and e.is_flush():
            inflight = inflight + 1 if e.kind == "issue" else max(0, inflight - 1)
    issues = []
    for e in evs[after + 1:hi]:
        if e.kind == "mark" or not e.is_flush():
            continue
        if e.kind == "issue":
            issues.append(e)
        elif e.kind == "requeue":
            if issues:
                issues.pop()
            else:
                inflight = max(0, inflight - 1)
        elif inflight > 0:
            inflight -= 1      # one that was issued before `after`
        elif issues and e.ts + TS_SLACK < deadline:
            return issues[0], e
    return None


class DurabilityTest(harness.ReplTestCase):
    def setUp(self):
        why = trace_prerequisites()
        if why:
            self.skipTest(why)

    def test_direct_io_on(self):
        self.run_rounds("on")

    def test_direct_io_off(self):
        self.run_rounds("off")

    # ------------------------------------------------------------------

    def run_rounds(self, direct_io: str) -> None:
        tmp, why = pick_tmpdir()
        if tmp is None:
            self.skipTest(why)
        inst = self.new_instance(DISK, export="dur", tmpdir=tmp, disk={"direct_io": direct_io},
                                 start=False)
        dev, why = block_device_of(inst.disk_path)
        if dev is None:
            self.skipTest(why)
        harness.log(f"backing file {inst.disk_path} on /dev/{dev['name']} "
                    f"({dev['major']},{dev['minor']}), write_cache={dev['write_cache']!r}, "
                    f"fua={dev['fua']}, direct_io={direct_io}")
        # allocate and write every block first, so the measured writes are
        # overwrites with a fixed place on the disk (no allocation, no journal)
        fd = os.open(inst.disk_path, os.O_WRONLY)
        try:
            for off in range(0, DISK, MiB):
                os.pwrite(fd, bytes([0xA5]) * MiB, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        plain = [((1 + 3 * i) * MiB, os.urandom(DATA)) for i in range(ROUNDS)]
        fua = [((2 + 3 * i) * MiB, os.urandom(DATA)) for i in range(ROUNDS)]
        sectors = {off: fiemap_sectors(inst.disk_path, off, DATA, dev["part_start"])
                   for off, _ in plain + fua}
        inst.start()
        h = inst.nbd_handle()
        self.assertTrue(h.can_fua(), "repld does not offer FUA")
        self.assertTrue(h.can_flush(), "repld does not offer FLUSH")
        h.pread(4096, 0)   # connection fully set up before tracing

        trace = BlockTrace(dev)
        trace.start()
        times = []     # per round: dict of monotonic times
        try:
            time.sleep(0.1)   # let requests in flight before tracing finish
            for i in range(ROUNDS):
                t = {}
                t["m0"] = self.mark(trace, f"{i} plain")
                t["t0"] = time.monotonic()
                h.pwrite(plain[i][1], plain[i][0])
                t["t1"] = time.monotonic()
                t["m1"] = self.mark(trace, f"{i} fua")
                t["t1b"] = time.monotonic()
                h.pwrite(fua[i][1], fua[i][0], flags=nbd.CMD_FLAG_FUA)
                t["t2"] = time.monotonic()
                t["m2"] = self.mark(trace, f"{i} flush")
                t["t2b"] = time.monotonic()
                h.flush()
                t["t3"] = time.monotonic()
                t["m3"] = self.mark(trace, f"{i} end")
                times.append(t)
            text = trace.stop()
        finally:
            trace.release()
        harness.close_nbd(h)
        self.assertEqual(inst.daemon.stop(), 0, inst.daemon.log_tail())

        for i in range(ROUNDS):
            self.assertEqual(inst.read_backing(plain[i][0], DATA), plain[i][1],
                             f"plain write {i} lost")
            self.assertEqual(inst.read_backing(fua[i][0], DATA), fua[i][1], f"FUA write {i} lost")

        evs = parse_trace(text, dev)
        self.check(evs, times, plain, fua, sectors, dev, direct_io)

    @staticmethod
    def mark(trace: BlockTrace, text: str) -> tuple[float, float]:
        a = time.monotonic()
        trace.mark(text)
        return a, time.monotonic()

    # ------------------------------------------------------------------

    def check(self, evs, times, plain, fua, sectors, dev, direct_io) -> None:
        marks = {e.mark: e for e in evs if e.kind == "mark"}
        nblock = sum(1 for e in evs if e.kind != "mark")
        nrequeue = sum(1 for e in evs if e.kind == "requeue")
        harness.log(f"trace: {nblock} block request events on {dev['major']},{dev['minor']} "
                    f"({nrequeue} requeues), {len(marks)} markers")
        self.assertEqual(len(marks), 4 * ROUNDS, "markers missing from the trace")
        # the trace clock is time.monotonic()'s: every marker lies between the
        # monotonic readings taken just before and after writing it
        for i, t in enumerate(times):
            for k, name in (("m0", "plain"), ("m1", "fua"), ("m2", "flush"), ("m3", "end")):
                m = marks[f"{i} {name}"]
                a, b = t[k]
                self.assertTrue(a - TS_SLACK <= m.ts <= b + TS_SLACK,
                                f"marker '{i} {name}' at {m.ts:.6f} is not within its "
                                f"time.monotonic() bracket [{a:.6f}, {b:.6f}]: "
                                f"the trace clock is not CLOCK_MONOTONIC")

        sample = []
        control_flushed = 0
        for i, t in enumerate(times):
            m0, m1, m2, m3 = (marks[f"{i} {n}"].idx for n in ("plain", "fua", "flush", "end"))
            p_off, f_off = plain[i][0], fua[i][0]

            # -- plain write (control) ------------------------------------
            p_last, _, p_found = data_on_device(evs, sectors[p_off], m0, m1)
            if direct_io == "on":
                self.assertIsNotNone(p_last, f"round {i}: the O_DIRECT plain write's data "
                                             f"{sectors[p_off]} did not complete on the device "
                                             f"before its reply: the trace does not see repld's I/O"
                                             f"\n{window(evs, m0, m1)}")
                for e in p_found:
                    self.assertTrue(t["t0"] < e.ts + TS_SLACK and e.ts < t["t1"] + TS_SLACK,
                                    f"round {i}: plain data completion {e.ts:.6f} outside "
                                    f"[{t['t0']:.6f}, {t['t1']:.6f}]")
                if flush_after(evs, p_last, m1, t["t1"]) is not None:
                    control_flushed += 1
            elif p_last is not None:
                control_flushed += 1   # (page cache: not expected on the device at all yet)

            # -- (1) FUA write ---------------------------------------------
            f_last, all_fua, f_found = data_on_device(evs, sectors[f_off], m1, m2)
            self.assertIsNotNone(f_last, f"round {i}: the FUA write's data {sectors[f_off]} did "
                                         f"not complete on the device before its reply\n"
                                         f"{window(evs, m1, m2)}")
            for e in f_found:
                self.assertLess(e.ts, t["t2"] + TS_SLACK)
            fl = None if all_fua else flush_after(evs, f_last, m2, t["t2"])
            self.assertTrue(all_fua or fl is not None,
                            f"round {i}: FUA write replied at {t['t2']:.6f} without a cache flush "
                            f"issued after its data completed on the device (data completed at "
                            f"{evs[f_last].ts:.6f})\n{window(evs, m1, m2)}")
            if fl:
                self.assertTrue(t["t1b"] - TS_SLACK < fl[1].ts < t["t2"],
                                f"round {i}: flush completion {fl[1].ts:.6f} outside "
                                f"({t['t1b']:.6f}, {t['t2']:.6f})")

            # -- (2) FLUSH --------------------------------------------------
            # writes completed before the FLUSH was sent: this round's plain
            # and FUA writes; their data must be on the device before a flush
            # that was issued after the FLUSH request went out
            last = []
            for off, lo in ((p_off, m0), (f_off, m1)):
                idx, _, _ = data_on_device(evs, sectors[off], lo, m3)
                self.assertIsNotNone(idx, f"round {i}: data at {off} ({sectors[off]}) never "
                                          f"reached the device before the FLUSH reply\n"
                                          f"{window(evs, lo, m3)}")
                last.append(idx)
            fl2 = flush_after(evs, max(last + [m2]), m3, t["t3"])
            self.assertIsNotNone(fl2, f"round {i}: FLUSH replied at {t['t3']:.6f} without a cache "
                                      f"flush issued after it was sent and after the data reached "
                                      f"the device\n{window(evs, m2, m3)}")
            self.assertTrue(t["t2b"] - TS_SLACK < fl2[1].ts < t["t3"],
                            f"round {i}: flush completion {fl2[1].ts:.6f} outside "
                            f"({t['t2b']:.6f}, {t['t3']:.6f})")
            harness.log(
                f"round {i}: plain {1e3 * (t['t1'] - t['t0']):.2f} ms; FUA "
                f"{1e3 * (t['t2'] - t['t1b']):.2f} ms, data done "
                f"+{1e3 * (evs[f_last].ts - t['t1b']):.3f}"
                + (f", flush {fl[0].rwbs} issued +{1e3 * (fl[0].ts - t['t1b']):.3f} done "
                   f"+{1e3 * (fl[1].ts - t['t1b']):.3f} ms" if fl else ", FUA data write")
                + f"; FLUSH {1e3 * (t['t3'] - t['t2b']):.2f} ms, flush issued "
                  f"+{1e3 * (fl2[0].ts - t['t2b']):.3f} done "
                  f"+{1e3 * (fl2[1].ts - t['t2b']):.3f} ms")
            if i == 0:
                sample = evs[m0:m3 + 1]

        what = ("plain writes followed by a device flush before their reply (O_DIRECT)"
                if direct_io == "on" else
                "plain writes on the device before the FLUSH was sent (page cache)")
        harness.log(f"control: {what}: {control_flushed}/{ROUNDS} (expected 0; logged only)")
        harness.log("round 0 trace (device events and markers):\n" +
                    "\n".join(e.text for e in sample[:60]))


def window(evs: list[Ev], lo: int, hi: int) -> str:
    return "---- trace ----\n" + "\n".join(e.text for e in evs[lo:hi + 1][:80]) + "\n---- end ----"


if __name__ == "__main__":
    why = trace_prerequisites()
    if why:
        print(f"skipping: {why}")
    harness.run_main()
