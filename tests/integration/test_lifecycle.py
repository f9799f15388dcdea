#!/usr/bin/python3
"""Daemon lifecycle: SIGTERM drain, crash after flush/FUA, restart on a stale
socket, and configuration errors (repld and `replctl check-config`)."""

import errno
import fcntl
import os
import random
import re
import select
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import nbdraw as R  # noqa: E402
from harness import KiB, MiB, run  # noqa: E402

nbd = harness.nbd_module()

# errors acceptable for a write that was cut off by the shutdown: the spec's
# ESHUTDOWN, or the connection going away under it
CUT_OFF_ERRNOS = {errno.ESHUTDOWN, errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE}


def pump(handles, timeout_ms: int = 100) -> None:
    """One round of an external event loop over several libnbd handles."""
    p = select.poll()
    by_fd = {}
    for h in handles:
        if h.aio_is_dead() or h.aio_is_closed():
            continue
        d = h.aio_get_direction()
        ev = (select.POLLIN if d & nbd.AIO_DIRECTION_READ else 0) | \
             (select.POLLOUT if d & nbd.AIO_DIRECTION_WRITE else 0)
        if not ev:
            continue
        fd = h.aio_get_fd()
        by_fd[fd] = h
        p.register(fd, ev)
    if not by_fd:
        time.sleep(timeout_ms / 1000)
        return
    for fd, ev in p.poll(timeout_ms):
        h = by_fd[fd]
        try:
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                h.aio_notify_read()
            elif ev & select.POLLOUT:
                h.aio_notify_write()
        except nbd.Error:
            pass  # connection died; its commands are retired with an error


class Tracker:
    """aio writes with distinct data; records how each one ended."""

    def __init__(self):
        self.pending = {}   # (handle index, cookie) -> (offset, data)
        self.ok = []        # (offset, data)
        self.failed = []    # (offset, errno)

    def submit(self, hi, h, off, data):
        c = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off)
        self.pending[(hi, c)] = (off, data)

    def reap(self, handles):
        for (hi, c), (off, data) in list(self.pending.items()):
            h = handles[hi]
            try:
                done = h.aio_command_completed(c)
            except nbd.Error as e:
                self.failed.append((off, e.errnum))
                del self.pending[(hi, c)]
                continue
            if done:
                self.ok.append((off, data))
                del self.pending[(hi, c)]
            elif h.aio_is_dead() or h.aio_is_closed():
                # libnbd retires commands of a dead connection with an error;
                # if it has not, count it as cut off
                self.failed.append((off, errno.ENOTCONN))
                del self.pending[(hi, c)]


class ShutdownTest(harness.ReplTestCase):
    def test_sigterm_drains_in_flight_writes(self):
        inst = self.new_instance(128 * MiB, export="life")
        nconn, per, bs = 3, 150, 128 * KiB    # 450 writes, 56 MiB
        handles = [inst.nbd_handle(name=f"w{i}") for i in range(nconn)]
        t = Tracker()
        for i in range(per):
            for hi, h in enumerate(handles):
                off = (hi * per + i) * bs
                t.submit(hi, h, off, random.Random(off).randbytes(bs))
        deadline = time.monotonic() + 60
        while len(t.ok) < 20 and time.monotonic() < deadline:
            pump(handles)
            t.reap(handles)
        self.assertGreaterEqual(len(t.ok), 20, "writes did not start completing")
        in_flight_at_signal = len(t.pending)
        self.assertGreater(in_flight_at_signal, 0, "all writes finished before SIGTERM; "
                                                   "nothing left to drain")
        inst.daemon.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while t.pending and time.monotonic() < deadline:
            pump(handles)
            t.reap(handles)
        self.assertEqual(t.pending, {}, "some writes neither completed nor failed after SIGTERM")
        rc = inst.daemon.wait(20)
        self.assertIsNotNone(rc, "repld did not exit within 20s of SIGTERM")
        self.assertEqual(rc, 0, f"repld exit code after SIGTERM\n{inst.daemon.log_tail()}")
        harness.log(f"SIGTERM drain: {in_flight_at_signal} pending at signal; "
                    f"{len(t.ok)} ok, {len(t.failed)} failed "
                    f"(errnos {sorted(set(e for _, e in t.failed))})")
        bad = [(o, e) for o, e in t.failed if e not in CUT_OFF_ERRNOS]
        self.assertEqual(bad, [], "writes failed with unexpected errors during shutdown")
        # every acknowledged write is in the backing file, byte for byte
        with open(inst.disk_path, "rb") as f:
            for off, data in sorted(t.ok):
                f.seek(off)
                self.assertEqual(f.read(len(data)), data, f"acknowledged write at {off} lost")
        for h in handles:
            harness.close_nbd(h)

    def test_sigterm_answers_every_received_request(self):
        """Requests the daemon has read off the socket are in flight: after
        SIGTERM each must still get exactly one reply (success, or the spec's
        ESHUTDOWN) before the connection closes."""
        inst = self.new_instance(64 * MiB, export="life")
        c = R.RawClient(inst.socket, timeout=30)
        self.addCleanup(c.close)
        c.connect_go("")
        k, bs = 48, 256 * KiB          # < inflight_max (64): all get a slot
        datas = {h: random.Random(h).randbytes(bs) for h in range(1, k + 1)}
        for h, d in datas.items():     # FUA: each one costs a sync, keeps them busy
            c.send_request(R.CMD_WRITE, (h - 1) * bs, bs, handle=h, flags=R.CMD_FLAG_FUA, data=d)

        def unread_by_server() -> int:  # SIOCOUTQ on AF_UNIX: bytes the peer has not read
            return struct.unpack("i", fcntl.ioctl(c.sock.fileno(), 0x5411, b"\0" * 4))[0]

        self.assertTrue(harness.wait_until(lambda: unread_by_server() == 0, 10, 0.001),
                        "daemon did not read the requests")
        inst.daemon.send_signal(signal.SIGTERM)
        replies = {}
        while True:
            try:
                r = c.recv_reply()
            except R.Closed:
                break
            self.assertNotIn(r.handle, replies, "handle answered twice")
            replies[r.handle] = r.error
        rc = inst.daemon.wait(20)
        self.assertEqual(rc, 0, f"repld exit code after SIGTERM\n{inst.daemon.log_tail()}")
        harness.log(f"SIGTERM with {k} received requests: replies "
                    f"{sorted(set(replies.values()))}, {len(replies)} of {k}")
        self.assertEqual(sorted(replies), sorted(datas),
                         f"requests without a reply: {sorted(set(datas) - set(replies))}")
        self.assertTrue(all(e in (0, R.ESHUTDOWN) for e in replies.values()), replies)
        for h, e in replies.items():
            if e == 0:
                self.assertEqual(inst.read_backing((h - 1) * bs, bs), datas[h],
                                 f"acknowledged FUA write {h} not in the backing file")

    def test_sigterm_with_idle_client_exits(self):
        inst = self.new_instance(16 * MiB)
        h = inst.nbd_handle()
        h.pwrite(b"\x11" * 4096, 0)   # no flush: the daemon must fsync on exit
        t0 = time.monotonic()
        self.assertEqual(inst.daemon.stop(signal.SIGTERM, timeout=15), 0)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertEqual(inst.read_backing(0, 4096), b"\x11" * 4096)
        # the idle client sees the connection end (it is not left hanging)
        try:
            h.pread(4096, 0)
            self.fail("read succeeded on a stopped daemon")
        except nbd.Error:
            pass
        harness.close_nbd(h)

    def test_sigint_exits_zero(self):
        inst = self.new_instance(16 * MiB)
        h = inst.nbd_handle()
        h.pwrite(b"\x22" * 4096, 8192)
        harness.close_nbd(h)
        self.assertEqual(inst.daemon.stop(signal.SIGINT), 0)
        self.assertEqual(inst.read_backing(8192, 4096), b"\x22" * 4096)

    def test_no_new_connections_after_sigterm(self):
        inst = self.new_instance(16 * MiB)
        self.assertEqual(inst.daemon.stop(), 0)
        self.assertFalse(harness.unix_socket_accepts(inst.socket))


class CrashTest(harness.ReplTestCase):
    def test_kill9_after_flush_reply(self):
        inst = self.new_instance(64 * MiB)
        h = inst.nbd_handle()
        data = {}
        for i in range(16):
            off = i * 3 * MiB
            data[off] = os.urandom(256 * KiB)
            h.pwrite(data[off], off)
        h.flush()
        inst.daemon.kill9()   # right after the flush reply
        for off, d in data.items():
            self.assertEqual(inst.read_backing(off, len(d)), d, f"flushed write at {off} lost")
        harness.close_nbd(h)
        # restart on the stale socket path; the data is served again
        inst.restart()
        h = inst.nbd_handle()
        for off, d in data.items():
            self.assertEqual(h.pread(len(d), off), d)
        harness.close_nbd(h)
        self.assertEqual(inst.daemon.stop(), 0)

    def test_kill9_after_fua_reply(self):
        inst = self.new_instance(32 * MiB)
        h = inst.nbd_handle()
        d = os.urandom(1 * MiB)
        h.pwrite(d, 5 * MiB, flags=nbd.CMD_FLAG_FUA)
        inst.daemon.kill9()
        self.assertEqual(inst.read_backing(5 * MiB, len(d)), d, "FUA write lost")
        harness.close_nbd(h)

    def test_kill9_with_writes_in_flight_then_restart(self):
        # acknowledged+flushed data survives; the daemon restarts cleanly
        inst = self.new_instance(64 * MiB)
        h = inst.nbd_handle()
        base = os.urandom(4 * MiB)
        h.pwrite(base, 0)
        h.flush()
        for i in range(64):
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(os.urandom(256 * KiB))),
                         8 * MiB + i * 256 * KiB)
        h.poll(10)
        inst.daemon.kill9()
        harness.close_nbd(h)
        inst.restart()
        h = inst.nbd_handle()
        self.assertEqual(h.pread(4 * MiB, 0), base)
        harness.close_nbd(h)
        self.assertEqual(inst.daemon.stop(), 0)


# --------------------------------------------------------------------------
# configuration errors
# --------------------------------------------------------------------------

BASE = """# repld integration test config
[resource]
name = "cfg"

[nbd]
socket = "{sock}"
export = "cfg"
{nbd_extra}
[disk]
direct_io = "auto"
{disk_extra}
[node.a]
disk = "{disk}"
control_socket = "{sock}.ctl"
{tail}"""


class ConfigErrorTest(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = harness.make_tempdir()
        cls.disk = harness.make_sparse_file(os.path.join(cls.tmp, "disk.img"), 16 * MiB)
        cls.sock = os.path.join(cls.tmp, "cfg.sock")
        cls.adir = os.path.join(cls.tmp, "a-directory")
        os.mkdir(cls.adir)
        cls.n = 0

    def write_cfg(self, *, nbd_extra="", disk_extra="", tail="", disk=None, text=None):
        ConfigErrorTest.n += 1
        path = os.path.join(self.tmp, f"r{self.n}.toml")
        if text is None:
            text = BASE.format(sock=self.sock, disk=disk or self.disk, nbd_extra=nbd_extra,
                               disk_extra=disk_extra, tail=tail)
        with open(path, "w") as f:
            f.write(text)
        return path, text

    @staticmethod
    def line_of(text: str, needle: str) -> int:
        for i, line in enumerate(text.splitlines(), 1):
            if needle in line:
                return i
        raise AssertionError(f"{needle!r} not in config")

    def check_error(self, prog: str, cp, path: str, *, key=None, value=None, line=None,
                    also=()):
        out = cp.stderr
        self.assertEqual(cp.returncode, 1, f"{prog}: exit code {cp.returncode}, expected 1\n"
                                           f"stdout:\n{cp.stdout}\nstderr:\n{out}")
        prefix = f"{prog}: error: "
        lines = [ln for ln in out.splitlines() if ln.startswith(prefix)]
        self.assertEqual(len(lines), 1, f"expected exactly one line starting {prefix!r}:\n{out}")
        ln = lines[0]
        self.assertIn(path, ln, "error line does not name the config file")
        if line is not None:
            m = re.search(re.escape(path) + r":(\d+):(\d+)", ln)
            self.assertIsNotNone(m, f"no {path}:LINE:COL in {ln!r}")
            self.assertEqual(int(m.group(1)), line, f"wrong line number in {ln!r}")
            self.assertGreaterEqual(int(m.group(2)), 1)
        if key is not None:
            self.assertIn(f"'{key}'", ln, f"key not named (in quotes) in {ln!r}")
        if value is not None:
            self.assertIn(value, ln, f"offending value not shown in {ln!r}")
        for s in also:
            self.assertIn(s, ln)

    def both(self, path, node="a", **expect):
        """repld must refuse to start; replctl check-config must agree."""
        cp = run([harness.REPLD_BIN, "--config", path, "--node", node], timeout=15)
        self.check_error("repld", cp, path, **expect)
        self.assertFalse(harness.unix_socket_accepts(self.sock), "socket is being served")
        if os.path.exists(harness.REPLCTL_BIN):
            cp = run([harness.REPLCTL_BIN, "check-config", path, "--node", node], timeout=15)
            self.check_error("replctl", cp, path, **expect)
        else:
            self.fail(f"replctl not found at {harness.REPLCTL_BIN}")

    # ---- the cases -------------------------------------------------------
    def test_valid_config(self):
        path, _ = self.write_cfg()
        self.assertTrue(os.path.exists(harness.REPLCTL_BIN), harness.REPLCTL_BIN)
        for args in (["--node", "a"], []):
            cp = run([harness.REPLCTL_BIN, "check-config", path, *args], timeout=15)
            self.assertEqual(cp.returncode, 0, f"{cp.stdout}\n{cp.stderr}")
            self.assertTrue(cp.stdout.strip(), "check-config printed no summary")
            self.assertNotIn("error:", cp.stdout + cp.stderr)

    def test_unknown_key(self):
        path, text = self.write_cfg(nbd_extra="inflight_maxx = 64\n")
        self.both(path, key="nbd.inflight_maxx", line=self.line_of(text, "inflight_maxx"))

    def test_unknown_key_in_node(self):
        path, text = self.write_cfg(tail='nbd_sockett = "/tmp/x.sock"\n')
        self.both(path, key="node.a.nbd_sockett", line=self.line_of(text, "nbd_sockett"))

    def test_wrong_type(self):
        path, text = self.write_cfg(nbd_extra='inflight_max = "lots"\n')
        self.both(path, key="nbd.inflight_max", value="lots",
                  line=self.line_of(text, "inflight_max"))

    def test_wrong_type_bool_for_int(self):
        path, text = self.write_cfg(nbd_extra="connections_max = true\n")
        self.both(path, key="nbd.connections_max", value="true",
                  line=self.line_of(text, "connections_max"))

    def test_out_of_range(self):
        path, text = self.write_cfg(nbd_extra="inflight_max = 5000\n")
        self.both(path, key="nbd.inflight_max", value="5000",
                  line=self.line_of(text, "inflight_max"))

    def test_size_out_of_range(self):
        path, text = self.write_cfg(nbd_extra='request_bytes_max = "64MiB"\n')
        self.both(path, key="nbd.request_bytes_max", value="64MiB",
                  line=self.line_of(text, "request_bytes_max"))

    def test_bad_size_unit(self):
        path, text = self.write_cfg(nbd_extra='buffer_pool_bytes = "256XB"\n')
        self.both(path, key="nbd.buffer_pool_bytes", value="256XB",
                  line=self.line_of(text, "buffer_pool_bytes"))

    def test_bad_enum(self):
        # direct_io is already set in BASE; replace its value
        text = BASE.format(sock=self.sock, disk=self.disk, nbd_extra="", disk_extra="",
                           tail="").replace('direct_io = "auto"', 'direct_io = "sometimes"')
        path, text = self.write_cfg(text=text)
        self.both(path, key="disk.direct_io", value="sometimes",
                  line=self.line_of(text, "sometimes"))

    def test_bad_listen(self):
        path, text = self.write_cfg(nbd_extra='listen = "no-port-here"\n')
        self.both(path, key="nbd.listen", value="no-port-here",
                  line=self.line_of(text, "no-port-here"))

    def test_bad_resource_name(self):
        text = BASE.format(sock=self.sock, disk=self.disk, nbd_extra="", disk_extra="",
                           tail="").replace('name = "cfg"', 'name = "bad name!"')
        path, text = self.write_cfg(text=text)
        self.both(path, key="resource.name", value="bad name!",
                  line=self.line_of(text, "bad name!"))

    def test_missing_resource_name(self):
        text = BASE.format(sock=self.sock, disk=self.disk, nbd_extra="", disk_extra="",
                           tail="").replace('name = "cfg"\n', "")
        path, _ = self.write_cfg(text=text)
        self.both(path, key="resource.name")

    def test_toml_syntax_error(self):
        path, text = self.write_cfg(nbd_extra='connections_max = = 3\n')
        self.both(path, line=self.line_of(text, "= = 3"))

    def test_missing_disk(self):
        missing = "/nonexistent-repld-test-dir/disk.img"
        path, _ = self.write_cfg(disk=missing)
        self.both(path, key="node.a.disk", value=missing)

    def test_disk_is_directory(self):
        path, _ = self.write_cfg(disk=self.adir)
        self.both(path, key="node.a.disk", value=self.adir)

    def test_no_matching_node(self):
        path, _ = self.write_cfg()
        self.both(path, node="zzz", value="zzz")

    def test_missing_config_file(self):
        path = os.path.join(self.tmp, "does-not-exist.toml")
        cp = run([harness.REPLD_BIN, "--config", path, "--node", "a"], timeout=15)
        self.check_error("repld", cp, path)
        cp = run([harness.REPLCTL_BIN, "check-config", path], timeout=15)
        self.check_error("replctl", cp, path)


if __name__ == "__main__":
    harness.run_main()
