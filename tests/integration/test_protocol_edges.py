#!/usr/bin/python3
"""NBD protocol corner cases against repld.

Two clients: python libnbd (error codes, many requests in flight, several
connections, FUA, flush) and nbdraw.RawClient, a socket+struct client written
from the NBD spec (doc/proto.md of NetworkBlockDevice/nbd) for everything
libnbd will not send (unknown options/commands, bad magic, EXPORT_NAME,
abandoned half requests, ...).

Where the brief's contract and the spec disagree on an error code, the test
accepts both values (see SPEC notes below); any other outcome (success, a
different errno, a dropped connection) fails.
"""

import errno
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import nbdraw as R  # noqa: E402
from harness import KiB, MiB  # noqa: E402

nbd = harness.nbd_module()

DISK = 16 * MiB
REQ_MAX = 1 * MiB          # request_bytes_max for the error tests (cheap to exceed)
EXPORT = "edge"


def o_direct_supported(d: str) -> bool:
    p = os.path.join(d, ".odirect-probe")
    try:
        fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        try:
            os.unlink(p)
        except OSError:
            pass


def fd_baseline(inst) -> int:
    """fd count of an idle daemon after one complete connection cycle."""
    h = inst.nbd_handle()
    h.pread(4096, 0)
    harness.close_nbd(h)
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        n = inst.daemon.fd_count()
        if n != last:
            last, stable_since = n, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            break
        time.sleep(0.05)
    return last


def assert_fds_back(tc, inst, baseline: int, timeout: float = 5.0):
    ok = harness.wait_until(lambda: inst.daemon.fd_count() <= baseline, timeout, 0.1)
    if not ok:
        tc.fail(f"repld fd count {inst.daemon.fd_count()} did not return to baseline "
                f"{baseline} within {timeout}s:\n" + "\n".join(inst.daemon.fd_list()))


def _describe(fn, args) -> str:
    shown = [f"<{len(a)} bytes>" if isinstance(a, (bytes, bytearray)) else repr(a) for a in args]
    return f"{fn.__name__}({', '.join(shown)})"


def expect_nbd_error(tc, allowed, fn, *args, **kw):
    """Call a libnbd method; it must fail with a server error in allowed."""
    if isinstance(allowed, int):
        allowed = {allowed}
    names = sorted(errno.errorcode.get(a, str(a)) for a in allowed)
    try:
        fn(*args, **kw)
    except nbd.Error as e:
        tc.assertIn(e.errnum, allowed,
                    f"{_describe(fn, args)}: got {e.errno} ({e.string}), expected {names}")
        return e.errnum
    tc.fail(f"{_describe(fn, args)}: succeeded, expected error {names}")


def pattern(seed: int, n: int) -> bytes:
    """Deterministic, per-seed distinct data."""
    return random.Random(seed).randbytes(n)


# ==========================================================================
# libnbd: error replies
# ==========================================================================

class LibnbdErrors(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = harness.make_tempdir()
        cls.direct = o_direct_supported(tmp)
        cls.inst = harness.Instance(DISK, export=EXPORT, tmpdir=tmp,
                                    nbd={"request_bytes_max": "1MiB"},
                                    disk={"direct_io": "on" if cls.direct else "auto"})
        cls.inst.start()

    def setUp(self):
        self.h = self.inst.nbd_handle(strict=0)
        self.size = self.h.get_size()
        self.min = self.h.get_block_size(nbd.SIZE_MINIMUM)
        self.max = self.h.get_block_size(nbd.SIZE_MAXIMUM)
        self.addCleanup(harness.close_nbd, self.h)

    def assert_usable(self, h=None):
        h = h or self.h
        self.assertFalse(h.aio_is_dead(), "connection died")
        data = os.urandom(4096)
        h.pwrite(data, 4096)
        self.assertEqual(h.pread(4096, 4096), data, "connection not usable after error")

    def test_block_size_info(self):
        self.assertEqual(self.max, REQ_MAX)
        self.assertEqual(self.h.get_block_size(nbd.SIZE_PREFERRED), 4096)
        if self.direct:
            self.assertIn(self.min, (512, 1024, 2048, 4096),
                          "direct_io=on must advertise the O_DIRECT alignment")
        self.assertEqual(self.size, DISK - DISK % self.min)

    def test_read_beyond_end(self):
        b = max(self.min, 4096)
        expect_nbd_error(self, errno.EINVAL, self.h.pread, b, self.size)
        expect_nbd_error(self, errno.EINVAL, self.h.pread, 2 * b, self.size - b)  # straddles
        expect_nbd_error(self, errno.EINVAL, self.h.pread, b, 1 << 60)
        self.assertEqual(len(self.h.pread(b, self.size - b)), b)  # last block readable
        self.assert_usable()

    def test_write_beyond_end(self):
        b = max(self.min, 4096)
        expect_nbd_error(self, errno.ENOSPC, self.h.pwrite, b"\x55" * b, self.size)
        expect_nbd_error(self, errno.ENOSPC, self.h.pwrite, b"\x55" * 2 * b, self.size - b)
        expect_nbd_error(self, errno.ENOSPC, self.h.pwrite, b"\x55" * b, 1 << 60)
        self.assert_usable()

    def test_write_zeroes_beyond_end(self):
        b = max(self.min, 4096)
        expect_nbd_error(self, errno.ENOSPC, self.h.zero, b, self.size)
        expect_nbd_error(self, errno.ENOSPC, self.h.zero, 2 * b, self.size - b)
        self.assert_usable()

    def test_trim_beyond_end(self):
        # SPEC: "It SHOULD return NBD_EINVAL if it receives a read or trim
        # request including one or more sectors beyond the size of the
        # device"; the repld contract says ENOSPC.  Accept both.
        b = max(self.min, 4096)
        expect_nbd_error(self, {errno.EINVAL, errno.ENOSPC}, self.h.trim, b, self.size)
        expect_nbd_error(self, {errno.EINVAL, errno.ENOSPC}, self.h.trim, 2 * b, self.size - b)
        self.assert_usable()

    def test_misaligned_requests(self):
        if self.min == 1:
            self.skipTest("minimum block size is 1 (no O_DIRECT here); nothing is misaligned")
        m = self.min
        good = os.urandom(2 * m)
        self.h.pwrite(good, 0)
        cases = [
            ("read len", self.h.pread, (m + 1, 0)),
            ("read off", self.h.pread, (m, 1)),
            ("read half", self.h.pread, (m // 2, m // 2)),
            ("write len", self.h.pwrite, (b"\xee" * (m + 1), 0)),
            ("write off", self.h.pwrite, (b"\xee" * m, 1)),
            ("write half", self.h.pwrite, (b"\xee" * (m // 2), m // 2)),
            ("trim off", self.h.trim, (m, 7)),
            ("zero len", self.h.zero, (m - 1, 0)),
        ]
        for name, fn, args in cases:
            with self.subTest(name):
                expect_nbd_error(self, errno.EINVAL, fn, *args)
        # the rejected writes must not have touched the data
        self.assertEqual(self.h.pread(2 * m, 0), good, "misaligned write corrupted data")
        self.assert_usable()

    def test_oversized_read(self):
        # SPEC: "The server SHOULD report an NBD_EINVAL error if the client's
        # request ... is larger than the advertised maximum block size" and
        # "SHOULD NOT return NBD_EOVERFLOW except ... NBD_CMD_FLAG_DF".
        # The repld contract says EOVERFLOW.  Accept both.
        expect_nbd_error(self, {errno.EOVERFLOW, errno.EINVAL}, self.h.pread,
                         self.max + max(self.min, 4096), 0)
        self.assert_usable()

    def test_oversized_write_is_drained(self):
        before = self.h.pread(64 * KiB, 0)
        big = b"\xa5" * (self.max + max(self.min, 4096))
        expect_nbd_error(self, {errno.EINVAL, errno.EOVERFLOW}, self.h.pwrite, big, 0)
        # payload was drained: the stream is still in sync, nothing was written
        self.assertEqual(self.h.pread(64 * KiB, 0), before, "rejected oversized write landed")
        self.assert_usable()
        # several in a row, pipelined with good requests
        cookies = []
        for i in range(3):
            cookies.append(("bad", self.h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(big)), 0)))
            good = pattern(i, 4096)
            cookies.append(("good", self.h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(good)),
                                                       (i + 10) * 4096)))
        outcomes = {}
        harness.aio_run(self.h, lambda: self.h.aio_in_flight() == 0)
        for kind, c in cookies:
            try:
                self.h.aio_command_completed(c)
                outcomes.setdefault(kind, []).append(0)
            except nbd.Error as e:
                outcomes.setdefault(kind, []).append(e.errnum)
        self.assertEqual(outcomes["good"], [0, 0, 0], outcomes)
        self.assertTrue(all(e in (errno.EINVAL, errno.EOVERFLOW) for e in outcomes["bad"]),
                        outcomes)
        self.assert_usable()

    def test_trim_larger_than_max_block_size(self):
        # SPEC: the max block size limits READ, WRITE, CACHE and WRITE_ZEROES
        # only ("Also for NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_CACHE and
        # NBD_CMD_WRITE_ZEROES ... the client MUST NOT use a length larger than
        # any advertised maximum block size"): a whole-disk TRIM (what
        # mkfs/fstrim send) is valid and must succeed.
        self.h.trim(self.size, 0)
        self.assert_usable()

    def test_write_zeroes_larger_than_max_block_size(self):
        # SPEC: for WRITE_ZEROES beyond the max block size "a server SHOULD
        # merely fail the command with an NBD_EINVAL error ... rather than
        # initiating a hard disconnect".  Success (zeroing) is also fine.
        off = 2 * MiB
        n = 3 * self.max
        self.h.pwrite(b"\x77" * 4096, off + n - 4096)
        try:
            self.h.zero(n, off)
        except nbd.Error as e:
            self.assertEqual(e.errnum, errno.EINVAL, str(e))
        else:
            self.assertTrue(nbd.Buffer.from_bytearray(self.h.pread(4096, off + n - 4096)).is_zero())
        self.assert_usable()

    def test_zero_length_requests(self):
        # SPEC (READ/WRITE/TRIM/WRITE_ZEROES): "The client SHOULD NOT request
        # a ... length of 0; the behavior of a server on such a request is
        # unspecified although the server SHOULD NOT disconnect."
        ops = [("read", lambda: self.h.pread(0, 0)),
               ("write", lambda: self.h.pwrite(b"", 0)),
               ("trim", lambda: self.h.trim(0, 0)),
               ("zero", lambda: self.h.zero(0, 0)),
               ("read at end", lambda: self.h.pread(0, self.size))]
        for name, op in ops:
            with self.subTest(name):
                try:
                    op()
                except nbd.Error as e:
                    self.assertNotEqual(e.errnum, 0, str(e))
                self.assertFalse(self.h.aio_is_dead(), f"zero-length {name} killed the connection")
                self.assert_usable()

    def test_errors_as_simple_replies(self):
        h = self.inst.nbd_handle(structured=False, strict=0)
        self.assertFalse(h.get_structured_replies_negotiated())
        expect_nbd_error(self, errno.EINVAL, h.pread, 4096, self.size)
        expect_nbd_error(self, errno.ENOSPC, h.pwrite, b"x" * 4096, self.size)
        if self.min > 1:
            expect_nbd_error(self, errno.EINVAL, h.pread, self.min, 1)
        expect_nbd_error(self, {errno.EOVERFLOW, errno.EINVAL}, h.pread, 2 * self.max, 0)
        self.assert_usable(h)
        harness.close_nbd(h)


# ==========================================================================
# libnbd: concurrency, FUA, flush, zero/trim data semantics
# ==========================================================================

class LibnbdData(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.inst = harness.Instance(64 * MiB, export=EXPORT)
        cls.inst.start()

    def test_many_requests_in_flight(self):
        h = self.inst.nbd_handle()
        n, bs, base = 512, 4096, 8 * MiB   # far more than inflight_max (64)
        datas = [pattern(i, bs) for i in range(n)]
        bufs = [nbd.Buffer.from_bytearray(bytearray(d)) for d in datas]
        cookies = [h.aio_pwrite(bufs[i], base + i * bs) for i in range(n)]
        peak = h.aio_in_flight()
        self.assertGreater(peak, 64, "client could not queue requests")
        harness.aio_run(h, lambda: h.aio_in_flight() == 0, timeout=60)
        for c in cookies:
            self.assertTrue(h.aio_command_completed(c))  # raises on error
        # read everything back with all reads in flight at once, reversed order
        rbufs = {i: nbd.Buffer(bs) for i in range(n)}
        rcookies = {h.aio_pread(rbufs[i], base + i * bs): i for i in reversed(range(n))}
        harness.aio_run(h, lambda: h.aio_in_flight() == 0, timeout=60)
        for c, i in rcookies.items():
            self.assertTrue(h.aio_command_completed(c))
            self.assertEqual(bytes(rbufs[i].to_bytearray()), datas[i], f"block {i} differs")
        harness.close_nbd(h)
        # and the file has it too
        self.assertEqual(self.inst.read_backing(base, n * bs), b"".join(datas))

    def test_mixed_sizes_in_flight(self):
        h = self.inst.nbd_handle()
        sizes = [4096, 65536, 1 * MiB, 8192, 512 * KiB, 4096 * 3, 2 * MiB, 32 * MiB]
        off = 0
        plan = []
        for i, s in enumerate(sizes):
            plan.append((off, pattern(1000 + i, s)))
            off += s
        cookies = [h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(d)), o) for o, d in plan]
        harness.aio_run(h, lambda: h.aio_in_flight() == 0, timeout=60)
        for c in cookies:
            self.assertTrue(h.aio_command_completed(c))
        for o, d in plan:
            self.assertEqual(h.pread(len(d), o), d, f"mismatch at {o} len {len(d)}")
        harness.close_nbd(h)

    def test_several_connections_at_once(self):
        nconn, per, bs, base = 8, 32, 16 * KiB, 24 * MiB
        handles = [self.inst.nbd_handle(name=f"c{i}") for i in range(nconn)]
        self.assertTrue(all(h.can_multi_conn() for h in handles))
        expected = {}
        errors = []
        barrier = threading.Barrier(nconn)

        def worker(i, h):
            try:
                barrier.wait(timeout=30)
                for j in range(per):
                    off = base + (i * per + j) * bs
                    d = pattern(i * 1000 + j, bs)
                    expected[off] = d
                    h.pwrite(d, off)
                h.flush()
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=worker, args=(i, h)) for i, h in enumerate(handles)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        # multi-conn: every connection sees every other connection's writes
        for i, h in enumerate(handles):
            other = (i + 1) % nconn
            for j in range(per):
                off = base + (other * per + j) * bs
                self.assertEqual(h.pread(bs, off), expected[off], f"conn {i} reading conn {other}")
        for h in handles:
            harness.close_nbd(h)
        for off, d in expected.items():
            self.assertEqual(self.inst.read_backing(off, bs), d)

    def test_fua_write(self):
        h = self.inst.nbd_handle()
        other = self.inst.nbd_handle()
        self.assertTrue(h.can_fua())
        d = pattern(77, 128 * KiB)
        h.pwrite(d, 40 * MiB, flags=nbd.CMD_FLAG_FUA)
        # visible on another connection and in the file as soon as FUA replies
        self.assertEqual(other.pread(len(d), 40 * MiB), d)
        self.assertEqual(self.inst.read_backing(40 * MiB, len(d)), d)
        # FUA on write_zeroes and trim is accepted too
        h.zero(4096, 40 * MiB, flags=nbd.CMD_FLAG_FUA)
        self.assertEqual(other.pread(4096, 40 * MiB), bytes(4096))
        h.trim(4096, 40 * MiB + 8192, flags=nbd.CMD_FLAG_FUA)
        harness.close_nbd(h)
        harness.close_nbd(other)

    def test_flush(self):
        h = self.inst.nbd_handle()
        self.assertTrue(h.can_flush())
        d = pattern(78, 256 * KiB)
        h.pwrite(d, 41 * MiB)
        h.flush()
        self.assertEqual(self.inst.read_backing(41 * MiB, len(d)), d)
        h.flush()  # flush with nothing dirty
        harness.close_nbd(h)

    def test_write_zeroes_and_trim(self):
        h = self.inst.nbd_handle()
        off = 42 * MiB
        d = pattern(79, 64 * KiB)
        h.pwrite(d, off)
        h.zero(16 * KiB, off + 16 * KiB)
        got = h.pread(64 * KiB, off)
        self.assertEqual(got[:16 * KiB], d[:16 * KiB])
        self.assertEqual(got[16 * KiB:32 * KiB], bytes(16 * KiB))
        self.assertEqual(got[32 * KiB:], d[32 * KiB:])
        h.zero(8 * KiB, off + 40 * KiB, flags=nbd.CMD_FLAG_NO_HOLE)
        self.assertEqual(h.pread(8 * KiB, off + 40 * KiB), bytes(8 * KiB))
        self.assertEqual(h.pread(8 * KiB, off + 48 * KiB), d[48 * KiB:56 * KiB])
        # trim: content afterwards unspecified, but the rest is untouched and
        # the area is writable again
        h.trim(4 * KiB, off + 56 * KiB)
        self.assertEqual(h.pread(16 * KiB, off), d[:16 * KiB])
        h.pwrite(d[:4 * KiB], off + 56 * KiB)
        self.assertEqual(h.pread(4 * KiB, off + 56 * KiB), d[:4 * KiB])
        h.flush()
        harness.close_nbd(h)
        self.assertEqual(self.inst.read_backing(off + 16 * KiB, 16 * KiB), bytes(16 * KiB))


# ==========================================================================
# Raw socket client
# ==========================================================================

class RawProtocol(harness.ReplTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.inst = harness.Instance(DISK, export=EXPORT)
        cls.inst.start()
        cls.baseline = fd_baseline(cls.inst)

    def client(self) -> R.RawClient:
        c = R.RawClient(self.inst.socket)
        self.addCleanup(c.close)
        return c

    def assert_alive_and_serving(self):
        self.assertTrue(self.inst.daemon.alive(), "repld died")
        with R.RawClient(self.inst.socket) as c:
            c.connect_go("")
            r = c.read(0, 4096)
            self.assertEqual(r.error, 0)
            self.assertEqual(len(r.data), 4096)

    # ---- handshake / options ------------------------------------------
    def test_handshake_flags(self):
        c = self.client()
        hflags = c.handshake()
        self.assertTrue(hflags & R.FLAG_FIXED_NEWSTYLE, "fixed newstyle not advertised")
        self.assertTrue(hflags & R.FLAG_NO_ZEROES, "NO_ZEROES not advertised")
        self.assertEqual(hflags & ~0x3, 0, "spec: server MUST NOT set other handshake flags")

    def test_unknown_option_then_go(self):
        c = self.client()
        c.handshake()
        c.send_opt(0x1234, b"some option payload the server must skip")
        opt, rtype, _ = c.recv_opt_reply()
        self.assertEqual((opt, rtype), (0x1234, R.REP_ERR_UNSUP))
        c.send_opt(R.OPT_STARTTLS)  # NOTLS server: ERR_UNSUP or ERR_POLICY
        _, rtype, _ = c.recv_opt_reply(R.OPT_STARTTLS)
        self.assertIn(rtype, (R.REP_ERR_UNSUP, R.REP_ERR_POLICY))
        c.send_opt(0xFFFFFFF0)
        _, rtype, _ = c.recv_opt_reply(0xFFFFFFF0)
        self.assertEqual(rtype, R.REP_ERR_UNSUP)
        info = c.opt_go("")
        self.assertEqual(info["size"], DISK)
        r = c.read(0, 4096)
        self.assertEqual((r.error, len(r.data)), (0, 4096))

    def test_list(self):
        c = self.client()
        c.handshake()
        self.assertIn(EXPORT, c.opt_list())
        self.assertIn(EXPORT, c.opt_list())  # repeatable
        c.opt_go(EXPORT)
        self.assertEqual(c.read(0, 512).error, 0)

    def test_list_with_data_is_invalid(self):
        # SPEC (NBD_OPT_LIST): "The client MUST NOT send any additional data
        # with the option, and the server SHOULD reject a request that
        # includes data with NBD_REP_ERR_INVALID."
        c = self.client()
        c.handshake()
        c.send_opt(R.OPT_LIST, b"junk")
        _, rtype, _ = c.recv_opt_reply(R.OPT_LIST)
        self.assertEqual(rtype, R.REP_ERR_INVALID)
        c.opt_go("")

    def test_info_unknown_export(self):
        c = self.client()
        c.handshake()
        with self.assertRaises(R.OptionError) as cm:
            c.opt_info("no-such-export")
        self.assertEqual(cm.exception.rtype, R.REP_ERR_UNKNOWN)
        with self.assertRaises(R.OptionError) as cm:
            c.opt_go("no-such-export")
        self.assertEqual(cm.exception.rtype, R.REP_ERR_UNKNOWN)
        # negotiation continues
        info = c.opt_info(EXPORT)
        go = c.opt_go(EXPORT)
        # SPEC: INFO then GO with the same parameters MUST give the same info
        self.assertEqual((info["size"], info["tflags"]), (go["size"], go["tflags"]))
        self.assertEqual(go["size"], DISK)
        self.assertEqual(c.read(DISK - 4096, 4096).error, 0)

    def test_info_block_size_and_flags(self):
        c = self.client()
        c.handshake()
        info = c.opt_info("", info_reqs=(R.INFO_BLOCK_SIZE,))
        self.assertIn("block_sizes", info, "NBD_INFO_BLOCK_SIZE requested but not sent")
        mn, pref, mx = info["block_sizes"]
        self.assertTrue(mn & (mn - 1) == 0 and 1 <= mn <= 65536, info)
        self.assertEqual(pref, 4096)
        self.assertEqual(mx, 32 * MiB)
        tf = info["tflags"]
        want = (R.TF_HAS_FLAGS | R.TF_SEND_FLUSH | R.TF_SEND_FUA | R.TF_SEND_TRIM
                | R.TF_SEND_WRITE_ZEROES | R.TF_CAN_MULTI_CONN)
        self.assertEqual(tf & want, want, f"transmission flags {tf:#x}")
        self.assertFalse(tf & R.TF_READ_ONLY)
        # SPEC: SEND_DF "MUST leave this flag clear if structured replies have
        # not been negotiated"
        self.assertFalse(tf & R.TF_SEND_DF, "SEND_DF without structured replies")

    def test_abort(self):
        c = self.client()
        c.handshake()
        opt, rtype, _ = c.opt_abort()
        self.assertEqual((opt, rtype), (R.OPT_ABORT, R.REP_ACK))  # spec: MUST reply ACK
        self.assertTrue(c.wait_closed(5), "server kept the connection open after ABORT")

    def test_export_name_with_zeroes(self):
        c = self.client()
        c.handshake(R.FLAG_C_FIXED_NEWSTYLE)
        size, tflags, pad = c.export_name(EXPORT)
        self.assertEqual(size, DISK)
        self.assertEqual(pad, bytes(124))
        self.assertTrue(tflags & R.TF_HAS_FLAGS)
        c.write(8192, b"\x42" * 4096)
        r = c.read(8192, 4096)
        self.assertEqual((r.error, r.data), (0, b"\x42" * 4096))

    def test_export_name_no_zeroes(self):
        c = self.client()
        hflags = c.handshake(R.FLAG_C_FIXED_NEWSTYLE | R.FLAG_C_NO_ZEROES)
        self.assertTrue(hflags & R.FLAG_NO_ZEROES)
        size, tflags, pad = c.export_name("")
        self.assertEqual((size, pad), (DISK, b""))
        # the very next bytes must be the reply to our read, no padding
        c.send_request(R.CMD_READ, 0, 512, handle=7)
        (magic,) = struct.unpack(">I", c.recv_exact(4))
        self.assertEqual(magic, R.SIMPLE_REPLY_MAGIC, "zero padding sent despite NO_ZEROES")

    def test_export_name_after_options(self):
        c = self.client()
        c.handshake()
        c.opt_list()
        c.send_opt(0x4321)
        self.assertEqual(c.recv_opt_reply()[1], R.REP_ERR_UNSUP)
        size, _, _ = c.export_name(EXPORT)
        self.assertEqual(size, DISK)
        self.assertEqual(c.read(0, 4096).error, 0)

    def test_export_name_unknown_terminates(self):
        # SPEC: "If the chosen export does not exist ... the server MUST
        # terminate the session."
        c = self.client()
        c.handshake()
        c.send_opt(R.OPT_EXPORT_NAME, b"no-such-export")
        self.assertTrue(c.wait_closed(5), "unknown EXPORT_NAME did not end the session")
        self.assert_alive_and_serving()

    def test_unknown_client_flags_drop(self):
        # SPEC: "the server MUST drop the TCP connection if the client sets an
        # unknown flag"
        c = self.client()
        c.handshake(R.FLAG_C_FIXED_NEWSTYLE | 0x100)
        self.assertTrue(c.wait_closed(5), "unknown client flag accepted")
        self.assert_alive_and_serving()

    # ---- transmission ---------------------------------------------------
    def test_unknown_command_simple(self):
        c = self.client()
        c.connect_go("")
        r = c.request(0x42, 0, 4096, handle=0xABCDEF)
        self.assertEqual(r.error, R.EINVAL)
        r = c.request(R.CMD_BLOCK_STATUS, 0, 4096, handle=0xABCDF0)  # not negotiated
        self.assertEqual(r.error, R.EINVAL)
        r = c.read(0, 4096)
        self.assertEqual((r.error, len(r.data)), (0, 4096))

    def test_unknown_command_structured(self):
        c = self.client()
        c.connect_go("", structured=True)
        r = c.request(0x42, 0, 4096, handle=9)
        self.assertTrue(r.structured)
        self.assertEqual(r.error, R.EINVAL)
        r = c.read(0, 4096)
        self.assertEqual((r.error, len(r.data)), (0, 4096))

    def test_unknown_command_flag(self):
        # SPEC: "The server SHOULD return NBD_EINVAL if it receives an unknown
        # command flag."
        c = self.client()
        c.connect_go("")
        r = c.request(R.CMD_READ, 0, 4096, handle=3, flags=0x8000)
        self.assertEqual(r.error, R.EINVAL)
        r = c.read(0, 4096)
        self.assertEqual((r.error, len(r.data)), (0, 4096))

    def test_structured_error_has_message(self):
        c = self.client()
        c.connect_go("", structured=True)
        r = c.read(DISK, 4096)
        self.assertTrue(r.structured)
        self.assertEqual(r.error, R.EINVAL)
        types = [ch[1] for ch in r.chunks]
        self.assertTrue(any(t in (R.REPLY_TYPE_ERROR, R.REPLY_TYPE_ERROR_OFFSET) for t in types),
                        types)
        self.assertTrue(r.chunks[-1][0] & R.REPLY_FLAG_DONE)
        self.assertTrue(r.message.strip(), "error chunk without a human-readable message")
        r = c.write(DISK, b"x" * 4096)
        self.assertEqual(r.error, R.ENOSPC)
        r = c.read(0, 8192)
        self.assertEqual((r.error, len(r.data)), (0, 8192))

    def test_simple_read_error_sends_no_payload(self):
        c = self.client()
        c.connect_go("")
        c.send_request(R.CMD_READ, DISK, 65536, handle=1)
        c.send_request(R.CMD_READ, 0, 4096, handle=2)
        replies = {}
        for _ in range(2):
            r = c.recv_reply()
            replies[r.handle] = r
        self.assertEqual(replies[1].error, R.EINVAL)
        self.assertEqual((replies[2].error, len(replies[2].data)), (0, 4096))

    def test_pipelined_handles(self):
        c = self.client()
        c.connect_go("")
        data = os.urandom(64 * 4096)
        c.write(0, data)
        handles = {}
        for i in range(64):
            h = 0x1000_0000_0000 + i * 7919
            handles[h] = i
            c.send_request(R.CMD_READ, i * 4096, 4096, handle=h)
        seen = set()
        for _ in range(64):
            r = c.recv_reply()
            self.assertIn(r.handle, handles)
            self.assertNotIn(r.handle, seen, "handle answered twice")
            seen.add(r.handle)
            i = handles[r.handle]
            self.assertEqual(r.data, data[i * 4096:(i + 1) * 4096], f"read {i}")

    def test_disc_answers_outstanding_requests(self):
        c = self.client()
        c.connect_go("")
        d = os.urandom(4096)
        c.send_request(R.CMD_WRITE, 12288, 4096, handle=5, data=d)
        c.disconnect()
        r = c.recv_reply()
        self.assertEqual((r.handle, r.error), (5, 0))
        self.assertTrue(c.wait_closed(5), "server did not close after NBD_CMD_DISC")
        self.assertEqual(self.inst.read_backing(12288, 4096), d)

    def test_bad_magic_closes_connection_only(self):
        bystander = self.client()
        bystander.connect_go("")
        c = self.client()
        c.connect_go("")
        c.send_request(R.CMD_READ, 0, 4096, handle=1, magic=0xDEADBEEF)
        self.assertTrue(c.wait_closed(5), "server kept a connection that sent a bad magic")
        r = bystander.read(0, 4096)
        self.assertEqual(r.error, 0, "other connection was affected")
        self.assert_alive_and_serving()
        assert_fds_back(self, self.inst, self.baseline + 1)  # + bystander
        bystander.close()
        assert_fds_back(self, self.inst, self.baseline)

    def test_half_write_payload_then_close(self):
        for payload_len, sent in ((1 * MiB, 300 * KiB), (4096, 1), (32 * MiB, 5 * MiB)):
            with self.subTest(payload=payload_len, sent=sent):
                c = R.RawClient(self.inst.socket)
                c.connect_go("")
                hdr = struct.pack(">IHHQQI", R.REQUEST_MAGIC, 0, R.CMD_WRITE, 1, 0, payload_len)
                c.send(hdr + os.urandom(sent))
                time.sleep(0.1)
                c.close()
                assert_fds_back(self, self.inst, self.baseline)
        # also a request header cut in the middle
        c = R.RawClient(self.inst.socket)
        c.connect_go("")
        c.send(struct.pack(">IHH", R.REQUEST_MAGIC, 0, R.CMD_READ))
        c.close()
        # and a client that vanishes mid-handshake
        c = R.RawClient(self.inst.socket)
        c.recv_exact(10)
        c.close()
        assert_fds_back(self, self.inst, self.baseline)
        self.assert_alive_and_serving()

    def test_many_requests_then_vanish(self):
        c = R.RawClient(self.inst.socket)
        c.connect_go("")
        c.sock.settimeout(5)
        # 400 x 256 KiB reads = 100 MiB of replies nobody reads, then writes
        burst = b"".join(struct.pack(">IHHQQI", R.REQUEST_MAGIC, 0, R.CMD_READ, i,
                                     (i * 256 * KiB) % (DISK - 256 * KiB), 256 * KiB)
                         for i in range(400))
        try:
            c.send(burst)
            for i in range(50):
                c.send(struct.pack(">IHHQQI", R.REQUEST_MAGIC, 0, R.CMD_WRITE, 1000 + i,
                                   i * 64 * KiB, 64 * KiB) + os.urandom(64 * KiB))
        except (socket.timeout, OSError):
            pass  # the server stopped reading: that is its right
        # vanish with a reset (SO_LINGER 0)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        assert_fds_back(self, self.inst, self.baseline)
        self.assert_alive_and_serving()

    def test_many_clients_vanish_at_once(self):
        clients = []
        for i in range(8):
            c = R.RawClient(self.inst.socket)
            c.connect_go("")
            for j in range(20):
                c.send_request(R.CMD_READ, j * 65536, 65536, handle=j)
            clients.append(c)
        for c in clients:
            c.close()
        assert_fds_back(self, self.inst, self.baseline)
        self.assert_alive_and_serving()


class ConnectionLimit(harness.ReplTestCase):
    LIMIT = 4

    def test_connections_beyond_max_refused(self):
        inst = self.new_instance(DISK, export=EXPORT, nbd={"connections_max": self.LIMIT})
        handles = [inst.nbd_handle(name=f"h{i}") for i in range(self.LIMIT)]
        for i, h in enumerate(handles):
            h.pwrite(pattern(i, 4096), i * 4096)

        def try_extra():
            """'refused' if the extra client cannot get to transmission."""
            try:
                c = R.RawClient(inst.socket, timeout=5)
            except OSError:
                return "refused"
            with c:
                try:
                    c.connect_go("")
                except R.OptionError:
                    return "refused"
                except R.Closed:
                    return "refused"
                except socket.timeout:
                    return "hung"
                return "accepted"

        for _ in range(3):
            self.assertEqual(try_extra(), "refused",
                             f"connection #{self.LIMIT + 1} got through (or hung) "
                             f"with connections_max={self.LIMIT}")
        # the existing ones keep working
        for i, h in enumerate(handles):
            self.assertEqual(h.pread(4096, i * 4096), pattern(i, 4096))
            d = os.urandom(4096)
            h.pwrite(d, 1 * MiB + i * 4096)
            self.assertEqual(h.pread(4096, 1 * MiB + i * 4096), d)
        # a freed slot can be reused
        harness.close_nbd(handles.pop())
        ok = harness.wait_until(lambda: try_extra() == "accepted", 5, 0.2)
        self.assertTrue(ok, "slot was not freed after a client disconnected")
        for h in handles:
            harness.close_nbd(h)
        self.assertEqual(inst.daemon.stop(), 0)


if __name__ == "__main__":
    harness.run_main()
