#!/usr/bin/python3
"""Resync benchmark: how fast a pair resyncs, against a plain copy of the same data on the
same disks, how much a Primary crash costs against a full sync, and how fast a verify runs.

Part 1 (speed): a pair on --size disks, the Primary's written whole first (so that reading it
reads the disk); the initial full sync (unthrottled, as the Primary's `primary --force` starts
it) timed from the command to in sync, then dd copying the same number of bytes from the
Primary's backing file to the Secondary's with O_DIRECT and 1 MiB blocks: the ratio is the
copy's time over the resync's (1.0: as fast as a plain copy).

Part 2 (crash): a pair on --crash-size disks (default 16 GiB) after its full sync; fio writes
4 KiB blocks at random over the first --hot bytes (default 1 GiB) for a few seconds, the
Primary is killed with SIGKILL in the middle, started again, and the time from its start to in
sync is the crash resync; what it resynced comes from its status (the activity log's extents).
The ratio to the full sync's time should be about the hot set's share of the disk.

Part 3 (verify, not in the default --parts): a synced pair's online verify (`replctl verify` on
the Primary, to its end), and dd reading the Primary's file alone, for the disk's speed.

Both nodes run on this machine; --layout says where the Secondary's disk is (own: /dev/shm,
a disk of its own; shared: next to the Primary's). Standard library only.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_bench as nb  # noqa: E402
import repl_bench as rb  # noqa: E402

MiB, GiB = nb.MiB, nb.GiB


def in_sync(status):
    return (status["replication"] == "Established" and status["out_of_sync_bytes"] == 0
            and status["peer"]["disk"] == "UpToDate" and status["disk"] == "UpToDate")


def wait(pair, node, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = pair.status(node)
        except RuntimeError:  # not up yet
            st = None
        if st is not None and pred(st):
            return st
        time.sleep(0.05)
    raise RuntimeError(f"{pair.name}: {what} not done in {timeout} s")


def started_pair(tmp, name, size, args, peer_dir, prefill=False, repld=None):
    """Both daemons up and connected, alpha not yet promoted. `prefill`: alpha's file is
    written whole first, so that reading it reads the disk (a preallocated file's unwritten
    extents read as zeroes without any I/O, for the resync and for dd alike)."""
    pair = rb.Pair(tmp, name, "C", size, repld or args.repld, args.replctl, peer_dir=peer_dir)
    if prefill:
        subprocess.run(["dd", "if=/dev/zero", f"of={pair.disk['alpha']}", "bs=1M",
                        f"count={size // MiB}", "oflag=direct", "conv=notrunc", "status=none"],
                       check=True)
    for n in ("alpha", "beta"):
        pair.ctl(n, "create-md", "--force")
    for s in pair.servers.values():
        s.start()
    wait(pair, "alpha", lambda s: s["connection"] == "Connected", 30, "connect")
    return pair


def full_sync_seconds(pair):
    t0 = time.monotonic()
    pair.ctl("alpha", "primary", "--force")
    wait(pair, "alpha", in_sync, 7200, "full sync")
    return time.monotonic() - t0


def copy_seconds(src, dst, size):
    t0 = time.monotonic()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", f"count={size // MiB}",
                    "iflag=direct", "oflag=direct", "conv=notrunc", "status=none"], check=True)
    return time.monotonic() - t0


def timed_pair(args, tmp, name, peer_dir, measure, repld=None):
    """A fresh pair whose Primary's file was written whole, and `measure(pair)`'s seconds:
    (pair, data bytes, seconds). The daemons are stopped, the files stay."""
    pair = started_pair(tmp, name, args.size, args, peer_dir, prefill=True, repld=repld)
    try:
        return pair, pair.data_bytes(), measure(pair)
    finally:
        pair.stop()


def remove_files(pair):
    pair.remove_peer_disk()
    os.remove(pair.disk["alpha"])


def with_before(args, tmp, i, peer_dir, measure, label):
    """timed_pair with the build under test and, with --before, with that binary too (first in
    every other round, so that neither always meets the disk after the other): (pair, data
    bytes, seconds, the before binary's seconds or None)."""
    def before_seconds():
        pair, _, seconds = timed_pair(args, tmp, f"before-{label}{i}", peer_dir, measure,
                                      repld=args.before)
        remove_files(pair)
        return seconds

    before = before_seconds() if args.before and i % 2 == 1 else None
    pair, data, seconds = timed_pair(args, tmp, f"{label}{i}", peer_dir, measure)
    if args.before and before is None:
        before = before_seconds()
    return pair, data, seconds, before


def report_rows(args, heading, intro, first_column, rows, last_columns, gains):
    """The part's table; with --before, a column for that binary and its median speed-up."""
    head, rule = f"| round | {first_column} | ", "|---|---:|"
    if args.before:
        head, rule = head + f"{first_column}, {args.before} | ", rule + "---:|"
    out = [heading, "", intro, "", head + " | ".join(last_columns) + " |",
           rule + "---:|" * len(last_columns), *rows, ""]
    if gains:
        out += [f"Against --before: median speed-up {sorted(gains)[len(gains) // 2]:.2f}x.", ""]
    return out


def speed_cell(data, seconds):
    return f"{seconds:.2f} s, {data / MiB / seconds:.0f} MiB/s"


def part_speed(args, tmp, lines, peer_dir):
    """--rounds rounds of (full sync, then dd of the same bytes right after it): the disk's
    speed drifts between minutes on a VM, so each ratio pairs two neighbouring runs, and the
    median ratio is the result."""
    rows, ratios, gains = [], [], []
    for i in range(args.rounds):
        pair, data, resync, before = with_before(args, tmp, i, peer_dir, full_sync_seconds,
                                                 "speed")
        # Into a fresh preallocated file, as the Secondary's was before its sync: writing over
        # the synced file's already written extents would spare dd the unwritten-extent
        # conversions that the resync paid.
        pair.remove_peer_disk()
        rb.preallocate(pair.disk["beta"], args.size)
        copy = copy_seconds(pair.disk["alpha"], pair.disk["beta"], data)
        remove_files(pair)
        ratios.append(copy / resync)
        cells = [speed_cell(data, resync)]
        if before is not None:
            gains.append(before / resync)
            cells.append(speed_cell(data, before))
        cells += [speed_cell(data, copy), f"{copy / resync:.2f}x"]
        rows.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    median = sorted(ratios)[len(ratios) // 2]
    lines += report_rows(args, "## Resync speed against a plain copy",
                         f"Secondary's disk: {rb.LAYOUTS[args.layout]}. {nb.fmt_size(data)} "
                         "each; dd is O_DIRECT with 1 MiB blocks.",
                         "full sync (unthrottled)", rows, ["dd", "ratio"], gains)
    lines += [f"Median ratio {median:.2f}x: target >= 0.8x "
              f"{'OK' if median >= 0.8 else 'MISS'}.", ""]


def verify_seconds(pair):
    """A full sync, then `replctl verify` on the Primary timed to its end; it must have compared
    everything and found no difference."""
    full_sync_seconds(pair)
    t0 = time.monotonic()
    pair.ctl("alpha", "verify")
    st = wait(pair, "alpha", lambda s: s["verify"] and not s["verify"]["running"], 7200,
              "verify")
    seconds = time.monotonic() - t0
    if st["verify"]["done_bytes"] != pair.data_bytes() or st["verify"]["differing_bytes"] != 0:
        raise RuntimeError(f"{pair.name}: the verify of identical disks ended with "
                           f"{st['verify']}")
    return seconds


def part_verify(args, tmp, lines, peer_dir):
    """--rounds rounds of (online verify of a synced pair, then dd reading the Primary's file):
    the verify reads both nodes' disks and digests every block on both."""
    rows, gains = [], []
    for i in range(args.rounds):
        pair, data, seconds, before = with_before(args, tmp, i, peer_dir, verify_seconds,
                                                  "verify")
        t0 = time.monotonic()
        subprocess.run(["dd", f"if={pair.disk['alpha']}", "of=/dev/null", "bs=1M",
                        f"count={data // MiB}", "iflag=direct", "status=none"], check=True)
        read = time.monotonic() - t0
        remove_files(pair)
        cells = [speed_cell(data, seconds)]
        if before is not None:
            gains.append(before / seconds)
            cells.append(speed_cell(data, before))
        cells.append(speed_cell(data, read))
        rows.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines += report_rows(args, "## Online verify",
                         f"Secondary's disk: {rb.LAYOUTS[args.layout]}. {nb.fmt_size(data)} "
                         "each, identical; `replctl verify` on the Primary, timed to its end; "
                         "dd reads the Primary's file alone (O_DIRECT, 1 MiB blocks), for the "
                         "disk's speed.", "online verify", rows, ["dd read"], gains)


def part_crash(args, tmp, lines, peer_dir):
    pair = started_pair(tmp, "crash", args.crash_size, args, peer_dir)
    try:
        data = pair.data_bytes()
        full = full_sync_seconds(pair)
        outjson = os.path.join(tmp, "crash-fio.json")
        argv = ["fio", "--name=hot", "--rw=randwrite", "--bs=4k", "--iodepth=32", "--numjobs=1",
                "--time_based", f"--runtime={args.write_seconds * 3}", f"--size={args.hot}",
                "--randrepeat=0", "--norandommap", "--thread", "--output-format=json",
                f"--output={outjson}", "--ioengine=nbd",
                f"--uri=nbd+unix:///?socket={pair.sock['alpha']}"]
        writer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.write_seconds)
        pair.servers["alpha"].proc.kill()  # SIGKILL, by the PID we started
        pair.servers["alpha"].proc.wait()
        writer.wait(timeout=60)  # fio fails once its server is gone
        t0 = time.monotonic()
        pair.servers["alpha"].start()
        wait(pair, "alpha", lambda s: s["connection"] == "Connected", 60, "reconnect")
        st = wait(pair, "alpha", lambda s: s["resync"] is not None or in_sync(s), 60, "resync")
        resynced = st["resync"]["total_bytes"] if st["resync"] else 0
        wait(pair, "alpha", in_sync, 3600, "crash resync")
        crash = time.monotonic() - t0
    finally:
        pair.stop()
        pair.remove_peer_disk()
    share = args.hot / data
    ratio = crash / full
    lines += ["## Resync after a Primary crash against a full sync", "",
              f"{nb.fmt_size(data)} disks, 4 KiB random writes at QD32 over the first "
              f"{nb.fmt_size(args.hot)} (the hot set, {share:.1%} of the disk) for "
              f"{args.write_seconds} s, then SIGKILL of the Primary. Secondary's disk: "
              f"{rb.LAYOUTS[args.layout]}.", "",
              "| | seconds | resynced | time ratio to the full sync |", "|---|---:|---:|---:|",
              f"| full sync | {full:.2f} | {nb.fmt_size(data)} | 1.00 |",
              f"| after the crash (restart to in sync) | {crash:.2f} | {nb.fmt_size(resynced)} "
              f"| {ratio:.3f} |", "",
              f"Target: proportional to the hot set ({share:.3f} of the full sync's time); "
              f"{'OK' if ratio <= 2 * share + 0.02 else 'MISS'} (at most twice the share, plus "
              "a restart's fixed cost).", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=nb.parse_size, default=4 * GiB)
    ap.add_argument("--crash-size", type=nb.parse_size, default=16 * GiB)
    ap.add_argument("--hot", type=nb.parse_size, default=1 * GiB)
    ap.add_argument("--write-seconds", type=int, default=5)
    ap.add_argument("--parts", default="speed,crash", help="a comma list from speed,crash,verify")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the speed and verify parts")
    ap.add_argument("--layout", default="own", choices=sorted(rb.LAYOUTS))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repld", default=rb.default_bin("repld"))
    ap.add_argument("--replctl", default=rb.default_bin("replctl"))
    ap.add_argument("--before", help="another repld binary whose full sync (or verify) each "
                    "round also times, for a before/after check of a change")
    ap.add_argument("--out", help="also write the markdown report here")
    args = ap.parse_args()
    for tool in ("fio", "dd", args.repld, args.replctl, *([args.before] if args.before else [])):
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"resync_bench: {tool} not found (build first: scripts/build.sh release)")
    tmp = tempfile.mkdtemp(prefix="resync-bench-", dir=args.dir)
    lines = rb.report_header("repld resync benchmark", "bench/resync_bench.py", args.repld)
    peer_dir = None
    try:
        peer_dir = rb.peer_directory(args.layout)
        parts = args.parts.split(",")
        if "speed" in parts:
            part_speed(args, tmp, lines, peer_dir)
        if "crash" in parts:
            part_crash(args, tmp, lines, peer_dir)
        if "verify" in parts:
            part_verify(args, tmp, lines, peer_dir)
        rb.write_report(lines, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if peer_dir:
            shutil.rmtree(peer_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
