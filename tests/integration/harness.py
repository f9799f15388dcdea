"""Shared helpers for the repld integration tests.

Every script in this folder imports this module and runs standalone with
``/usr/bin/python3 tests/integration/test_X.py`` (unittest, exit code != 0 on
failure).  The daemon binaries come from the environment:

    REPLD_BIN    path of repld    (default: <repo>/build/default/bin/repld)
    REPLCTL_BIN  path of replctl  (default: <repo>/build/default/bin/replctl)
    REPLD_LOG_LEVEL  --log-level given to repld (default: info)
    REPLD_TEST_KEEP  if set to 1, keep temp dirs (debugging only)

Everything a test creates (temp dirs, daemons, nbdfuse processes, loop
devices, mounts) is registered on one cleanup stack that is unwound in LIFO
order by the test's own cleanups, at interpreter exit (atexit, which also
covers Ctrl-C) and on SIGTERM/SIGHUP.  Child processes get PR_SET_PDEATHSIG,
and test_mount sweeps mounts/loop devices left by a test process that was
SIGKILLed (e.g. by a ctest timeout).  Processes are only ever signalled by the PID of a
process this module started.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

REPLD_BIN = os.environ.get("REPLD_BIN") or str(REPO / "build/default/bin/repld")
REPLCTL_BIN = os.environ.get("REPLCTL_BIN") or str(REPO / "build/default/bin/replctl")
LOG_LEVEL = os.environ.get("REPLD_LOG_LEVEL", "info")
KEEP = os.environ.get("REPLD_TEST_KEEP") == "1"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to this child if the test process
    dies (e.g. killed by a ctest timeout), so no daemon outlives its test."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def log(msg: str) -> None:
    sys.stderr.write(f"[harness] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Cleanup stack
# --------------------------------------------------------------------------

_cleanup_lock = threading.RLock()
_cleanups: list[tuple[int, str, object]] = []
_cleanup_seq = 0


def register_cleanup(fn, desc: str) -> int:
    """Push fn on the global cleanup stack; returns a token for unregister."""
    global _cleanup_seq
    with _cleanup_lock:
        _cleanup_seq += 1
        _cleanups.append((_cleanup_seq, desc, fn))
        return _cleanup_seq


def run_cleanup(token: int) -> None:
    """Run (and remove) one registered cleanup now."""
    with _cleanup_lock:
        for i, (tok, desc, fn) in enumerate(_cleanups):
            if tok == token:
                del _cleanups[i]
                break
        else:
            return
    _safe_call(fn, desc)


def unregister_cleanup(token: int) -> None:
    with _cleanup_lock:
        _cleanups[:] = [c for c in _cleanups if c[0] != token]


def _safe_call(fn, desc: str) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - cleanup must go on
        log(f"cleanup '{desc}' failed:\n{traceback.format_exc()}")


def run_all_cleanups() -> None:
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            tok, desc, fn = _cleanups.pop()
        _safe_call(fn, desc)


atexit.register(run_all_cleanups)


def _on_signal(signum, _frame):
    log(f"got signal {signum}; cleaning up")
    run_all_cleanups()
    os._exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


# --------------------------------------------------------------------------
# Files, configs
# --------------------------------------------------------------------------

TMP_PREFIX = "/tmp/repld-it-"


def make_tempdir() -> str:
    # the PID in the name lets sweep_stale() tell a dead run's leftovers from
    # a live run's (another test process may be running at the same time)
    d = tempfile.mkdtemp(prefix=f"repld-it-{os.getpid()}-", dir="/tmp")
    if not KEEP:
        register_cleanup(lambda: shutil.rmtree(d, ignore_errors=True), f"rmtree {d}")
    return d


def make_sparse_file(path: str, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for our simple values
    raise TypeError(f"unsupported TOML value {v!r}")


def config_text(*, resource: str = "it", nbd: dict | None = None, disk: dict | None = None,
                nodes: dict[str, dict] | None = None, raw_extra: str = "") -> str:
    """Build a repld TOML config (see docs/config.md).  Values are written as
    given; use a str for values that are strings in TOML."""
    lines = ["# generated by tests/integration/harness.py", "[resource]",
             f"name = {toml_value(resource)}", ""]
    if nbd:
        lines.append("[nbd]")
        lines += [f"{k} = {toml_value(v)}" for k, v in nbd.items()]
        lines.append("")
    if disk:
        lines.append("[disk]")
        lines += [f"{k} = {toml_value(v)}" for k, v in disk.items()]
        lines.append("")
    for name, table in (nodes or {}).items():
        lines.append(f"[node.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    if raw_extra:
        lines.append(raw_extra)
    return "\n".join(lines) + "\n"


def read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unix_uri(sock: str, export: str = "") -> str:
    return f"nbd+unix:///{export}?socket={sock}"


def require_binary(path: str, what: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(
            f"{what} binary not found or not executable: {path!r} "
            f"(set {what.upper()}_BIN or build with `cmake --build --preset default`)")


def run(cmd: list[str], *, timeout: float = 120, check: bool = False, input: bytes | None = None,
        env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture output as text.  On check=True and non-zero
    exit raise AssertionError with the full output."""
    log("run: " + " ".join(cmd))
    cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                        input=input, env=env, cwd=cwd)
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    if check and cp.returncode != 0:
        raise AssertionError(f"command failed (exit {cp.returncode}): {' '.join(cmd)}\n"
                             f"--- stdout ---\n{cp.stdout}\n--- stderr ---\n{cp.stderr}")
    return cp


def run_on_terminal(cmd: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Like run(), with standard output on a pseudo-terminal (replctl draws progress lines only
    there); stdout is what the terminal got, carriage returns included."""
    import select
    log("run on a terminal: " + " ".join(cmd))
    master, slave = os.openpty()
    proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        else:
            proc.kill()
            raise AssertionError(f"{' '.join(cmd)}: still running after {timeout} s")
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"), err)


def backtrace(pid: int) -> str:
    """Every thread's stack of a live process, for a daemon that hangs (needs gdb)."""
    if shutil.which("gdb") is None:
        return "(gdb is not installed: no stacks)"
    cp = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                        capture_output=True, text=True, timeout=60)
    return "\n".join(l for l in cp.stdout.splitlines() if l.startswith(("#", "Thread")))


def unix_socket_accepts(path: str) -> bool:
    """True once a server greets on the socket. A connect alone is not enough: the socket of a
    daemon that was just killed can still accept into its backlog for a moment."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return s.recv(8, socket.MSG_WAITALL) == b"NBDMAGIC"
    except OSError:
        return False
    finally:
        s.close()


def wait_until(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------

ALL_DAEMONS: list["Repld"] = []


class Repld:
    """One repld process.  Use ReplTestCase.start_repld() or Instance()."""

    def __init__(self, config_path: str, node: str, socket_path: str, log_path: str,
                 extra_args: list[str] | None = None, log_level: str | None = None):
        self.config_path = config_path
        self.node = node
        self.socket_path = socket_path
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.log_level = log_level or LOG_LEVEL
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.started_at = 0.0
        self._token: int | None = None
        ALL_DAEMONS.append(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        return [REPLD_BIN, "--config", self.config_path, "--node", self.node,
                "--log-level", self.log_level] + self.extra_args

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> "Repld":
        require_binary(REPLD_BIN, "repld")
        logf = open(self.log_path, "ab")
        logf.write(f"==== {' '.join(self.argv())}\n".encode())
        logf.flush()
        log("start: " + " ".join(self.argv()))
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, close_fds=True, preexec_fn=_die_with_parent)
        logf.close()
        self.returncode = None
        self.started_at = time.monotonic()
        self._token = register_cleanup(self._cleanup, f"repld pid {self.proc.pid}")
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"repld exited with code {self.proc.returncode} before becoming ready\n"
                    f"{self.log_tail()}")
            if os.path.exists(self.socket_path) and unix_socket_accepts(self.socket_path):
                return
            time.sleep(0.05)
        raise AssertionError(f"repld did not accept on {self.socket_path} within {timeout}s\n"
                             f"{self.log_tail()}")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)  # by PID of our own child

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal, wait; SIGKILL (by PID) if it does not exit.  Returns the exit
        code (negative signal number when killed).  Raises AssertionError if
        SIGKILL was needed."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.send_signal(sig)
            if self.wait(timeout) is None:
                stacks = backtrace(self.pid)
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = self.proc.returncode
                self._unregister()
                raise AssertionError(f"repld pid {self.pid} did not exit within {timeout}s "
                                     f"after signal {sig}; killed with SIGKILL\n{self.log_tail()}"
                                     f"\n---- its threads before the kill ----\n{stacks}")
        self.returncode = self.proc.returncode
        self._unregister()
        return self.returncode

    def kill9(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        self._unregister()
        return self.returncode

    def _unregister(self) -> None:
        if self._token is not None:
            unregister_cleanup(self._token)
            self._token = None

    def _cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_list(self) -> list[str]:
        out = []
        d = f"/proc/{self.pid}/fd"
        for fd in sorted(os.listdir(d), key=int):
            try:
                out.append(f"{fd} -> {os.readlink(os.path.join(d, fd))}")
            except OSError:
                pass
        return out

    def log_text(self) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"

    def log_tail(self, lines: int = 150) -> str:
        text = self.log_text().splitlines()
        return (f"---- repld log {self.log_path} (last {min(lines, len(text))} of {len(text)} lines) ----\n"
                + "\n".join(text[-lines:]) + "\n---- end of repld log ----")


class Instance:
    """A temp dir with a sparse backing file, a config and a repld for it."""

    def __init__(self, disk_size: int = 64 * MiB, *, export: str = "it", node: str = "a",
                 nbd: dict | None = None, disk: dict | None = None, tcp: bool = False,
                 tmpdir: str | None = None, disk_path: str | None = None,
                 log_level: str | None = None):
        self.tmp = tmpdir or make_tempdir()
        self.disk_path = disk_path or os.path.join(self.tmp, "disk.img")
        if disk_path is None:
            make_sparse_file(self.disk_path, disk_size)
        self.disk_size = os.path.getsize(self.disk_path)
        self.socket = os.path.join(self.tmp, "nbd.sock")
        self.export = export
        self.node = node
        self.port = free_tcp_port() if tcp else None
        nbd_cfg = {"socket": self.socket, "export": export}
        if tcp:
            nbd_cfg["listen"] = f"127.0.0.1:{self.port}"
        nbd_cfg.update(nbd or {})
        self.config_path = os.path.join(self.tmp, "repld.toml")
        with open(self.config_path, "w") as f:
            # the control socket in the temp dir: tests run side by side with one resource name
            f.write(config_text(nbd=nbd_cfg, disk=disk,
                                nodes={node: {"disk": self.disk_path,
                                              "control_socket": os.path.join(self.tmp, "ctl")}}))
        self.log_path = os.path.join(self.tmp, "repld.log")
        self.daemon = Repld(self.config_path, node, self.socket, self.log_path,
                            log_level=log_level)

    def start(self, wait: bool = True) -> "Instance":
        self.daemon.start(wait=wait)
        return self

    def restart(self) -> "Instance":
        """Fresh process (same config/disk) after a stop or kill."""
        self.daemon = Repld(self.config_path, self.node, self.socket, self.log_path,
                            log_level=self.daemon.log_level)
        return self.start()

    def uri(self, export: str | None = None) -> str:
        return unix_uri(self.socket, self.export if export is None else export)

    def tcp_uri(self, export: str | None = None) -> str:
        assert self.port is not None
        return f"nbd://127.0.0.1:{self.port}/{self.export if export is None else export}"

    def read_backing(self, offset: int, length: int) -> bytes:
        with open(self.disk_path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write_backing(self, offset: int, data: bytes) -> None:
        with open(self.disk_path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def nbd_handle(self, export: str | None = None, **kw):
        return open_nbd(self.socket, self.export if export is None else export, **kw)


# --------------------------------------------------------------------------
# libnbd helpers
# --------------------------------------------------------------------------

def nbd_module():
    try:
        import nbd  # noqa: F401  (python3-libnbd, Debian's /usr/bin/python3)
    except ImportError as e:
        raise AssertionError("python3-libnbd not importable; run with /usr/bin/python3") from e
    return nbd


def open_nbd(sock: str, export: str = "", *, structured: bool = True, strict: int | None = None,
             name: str | None = None):
    nbd = nbd_module()
    h = nbd.NBD()
    if name:
        h.set_handle_name(name)
    h.set_export_name(export)
    h.set_request_structured_replies(structured)
    if strict is not None:
        h.set_strict_mode(strict)
    h.connect_unix(sock)
    register_cleanup(lambda: _close_nbd(h), "close libnbd handle")
    return h


def _close_nbd(h) -> None:
    try:
        h.shutdown()
    except Exception:  # noqa: BLE001
        pass
    try:
        h.close()
    except Exception:  # noqa: BLE001
        pass


def close_nbd(h) -> None:
    _close_nbd(h)


def aio_run(h, until, timeout: float = 60.0) -> None:
    """Drive libnbd's state machine until until() is true."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"libnbd aio loop timed out after {timeout}s "
                                 f"({h.aio_in_flight()} in flight)")
        h.poll(100)


# --------------------------------------------------------------------------
# Mount stack helpers (nbdfuse -> loop -> ext4)
# --------------------------------------------------------------------------

class FuseFile:
    """nbdfuse exposing an NBD export as MOUNTDIR/nbd (background process)."""

    def __init__(self, mountdir: str, sock: str, logdir: str):
        self.mountdir = mountdir
        self.file = os.path.join(mountdir, "nbd")
        os.makedirs(mountdir, exist_ok=True)
        self.log_path = os.path.join(logdir, f"nbdfuse-{os.path.basename(mountdir)}.log")
        logf = open(self.log_path, "ab")
        cmd = ["nbdfuse", mountdir + "/", "--unix", sock]
        log("start: " + " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     preexec_fn=_die_with_parent)
        logf.close()
        self._token = register_cleanup(self._cleanup, f"nbdfuse pid {self.proc.pid}")
        ok = wait_until(lambda: self.proc.poll() is not None
                        or (os.path.ismount(mountdir) and os.path.exists(self.file)), 15)
        if not ok or self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                out = f.read()
            raise AssertionError(f"nbdfuse did not expose {self.file} (exit={self.proc.poll()})\n{out}")

    def _cleanup(self) -> None:
        if os.path.ismount(self.mountdir):
            subprocess.run(["fusermount3", "-u", self.mountdir], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by PID
            self.proc.wait(timeout=10)
            subprocess.run(["fusermount3", "-u", "-z", self.mountdir], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def close(self) -> None:
        run_cleanup(self._token)


class NbdkitFuseDisk:
    """A backing disk with the properties of an nbdkit plugin (and filters): nbdkit serves
    `args` on a unix socket in `tmpdir`, nbdfuse exposes it as a file (`.file`), which a daemon
    uses as its disk. Both processes are ours and are stopped by PID at cleanup."""

    def __init__(self, tmpdir: str, name: str, args: list[str]):
        self.sock = os.path.join(tmpdir, f"{name}-nbdkit.sock")
        self.log_path = os.path.join(tmpdir, f"{name}-nbdkit.log")
        cmd = ["nbdkit", "--foreground", "--exit-with-parent", "-U", self.sock] + args
        log("start: " + " ".join(cmd))
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     preexec_fn=_die_with_parent)
        logf.close()
        self._token = register_cleanup(self._cleanup, f"nbdkit pid {self.proc.pid}")
        if not wait_until(lambda: self.proc.poll() is not None or os.path.exists(self.sock), 15) \
                or self.proc.poll() is not None:
            raise AssertionError(f"nbdkit did not start: {read_text(self.log_path)}")
        self.fuse = FuseFile(os.path.join(tmpdir, f"{name}-mnt"), self.sock, tmpdir)
        self.file = self.fuse.file

    def _cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by PID
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self) -> None:
        """The file system first (it holds the socket), then nbdkit."""
        self.fuse.close()
        run_cleanup(self._token)


def nbdkit_dd_disk(path: str, size: int, **scripts: str) -> list[str]:
    """nbdkit arguments for a disk of `size` bytes over the plain file `path`, read and written
    with dd by nbdkit's eval plugin: a disk with no trim, no zero and no holes, whose other
    methods (`flush=...`, `can_trim=...`) the caller scripts in `scripts`."""
    dd = "dd bs=512 status=none iflag=fullblock"
    methods = {"get_size": f"echo {size}",
               "pread": f"{dd} if={path} skip=$(($4/512)) count=$(($3/512))",
               "pwrite": f"{dd} of={path} seek=$(($4/512)) count=$(($3/512)) conv=notrunc",
               "can_flush": "exit 0", "flush": f"sync {path}",
               "can_trim": "exit 3", "can_zero": "exit 3"}
    methods.update(scripts)
    return ["eval"] + [f"{name}={script}" for name, script in methods.items()]


def nbdkit_disk_prerequisites(*tools: str) -> str | None:
    """Why a test with an nbdkit disk under nbdfuse cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (FUSE)"
    for tool in ("nbdkit", "nbdfuse", "fusermount3", *tools):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    if run(["nbdkit", "--dump-plugin", "memory"], timeout=30).returncode != 0:
        return "nbdkit's memory plugin is not installed"
    return None


class FailingDisk:
    """A disk of `size` bytes whose `ops` (nbdkit's names: pwrite, zero, trim, flush, pread) fail
    with EIO while `trigger` exists: nbdkit's memory plugin behind the error filter, exposed as a
    file (`path`) by nbdfuse. nbdkit and the mount are stopped at the test's cleanup, by PID."""

    def __init__(self, test, tmp: str, size: int, name: str = "failing",
                 ops: tuple[str, ...] = ("pwrite", "zero", "trim")):
        self.trigger = os.path.join(tmp, f"{name}-fail")
        errors = []
        for op in ops:
            errors += [f"error-{op}=EIO", f"error-{op}-rate=100%",
                       f"error-{op}-file={self.trigger}"]
        self.disk = NbdkitFuseDisk(tmp, name, ["--filter=error", "memory", str(size)] + errors)
        test.addCleanup(self.disk.close)
        self.path = self.disk.file

    def fail_writes(self, on: bool) -> None:
        if on:
            open(self.trigger, "w").close()
        elif os.path.exists(self.trigger):
            os.remove(self.trigger)


class LoopDevice:
    def __init__(self, file: str, direct_io: bool = True):
        cmd = ["losetup", "-f", "--show"] + (["--direct-io=on"] if direct_io else []) + [file]
        cp = run(cmd, check=True, timeout=30)
        self.dev = cp.stdout.strip()
        self.file = file
        # remembered next to the test's files so sweep_stale() can undo it if
        # this process is killed before its cleanups run
        if file.startswith(TMP_PREFIX):
            tmpdir = TMP_PREFIX + file[len(TMP_PREFIX):].split("/", 1)[0]
            with open(os.path.join(tmpdir, LOOP_RECORD), "a") as f:
                f.write(f"{self.dev}\t{file}\n")
        self._token = register_cleanup(self._cleanup, f"losetup -d {self.dev}")

    def _cleanup(self) -> None:
        for _ in range(20):
            cp = subprocess.run(["losetup", "-d", self.dev], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
            if cp.returncode == 0:
                return
            time.sleep(0.25)
        log(f"losetup -d {self.dev} kept failing: {cp.stderr.decode(errors='replace')}")

    def close(self) -> None:
        run_cleanup(self._token)


class Mount:
    def __init__(self, dev: str, mountpoint: str, fstype: str = "ext4"):
        os.makedirs(mountpoint, exist_ok=True)
        run(["mount", "-t", fstype, dev, mountpoint], check=True, timeout=60)
        self.mountpoint = mountpoint
        self._token = register_cleanup(self._cleanup, f"umount {mountpoint}")

    def _cleanup(self) -> None:
        if not os.path.ismount(self.mountpoint):
            return
        cp = subprocess.run(["umount", self.mountpoint], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=120)
        if cp.returncode != 0:
            log(f"umount {self.mountpoint} failed ({cp.stderr.decode(errors='replace')}); lazy umount")
            subprocess.run(["umount", "-l", self.mountpoint], timeout=60)
            raise AssertionError(f"umount {self.mountpoint} failed")

    def close(self) -> None:
        """Unmount now; raises (after a lazy unmount) if umount failed."""
        with _cleanup_lock:
            unregister_cleanup(self._token)
        self._cleanup()


def _stale_owner_dead(path: str) -> bool:
    """True for paths under /tmp/repld-it-PID-* whose PID is not running."""
    if not path.startswith(TMP_PREFIX):
        return False
    pid = path[len(TMP_PREFIX):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    return not os.path.exists(f"/proc/{pid}")


def sweep_stale() -> None:
    """Undo mounts and loop devices left by an earlier test process that was
    killed before it could clean up (only those whose owner PID is gone)."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
    except OSError:
        mounts = []
    for mp in sorted(set(mounts), key=len, reverse=True):
        mp = mp.replace("\\040", " ")
        if _stale_owner_dead(mp):
            log(f"sweeping stale mount {mp}")
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(["fusermount3", "-u", "-z", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    for d in sorted(glob.glob(TMP_PREFIX + "*")):
        if not _stale_owner_dead(d):
            continue
        for dev, back in _read_loop_records(d):
            cp = subprocess.run(["losetup", "-J", "-l", dev], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
            try:
                cur = json.loads(cp.stdout or b"{}").get("loopdevices", [{}])[0].get("back-file", "")
            except (ValueError, IndexError):
                continue
            # once the FUSE mount under it is gone the kernel shows "/nbd"
            if cur and (cur == back or back.endswith(cur)):
                log(f"sweeping stale loop device {dev} ({back})")
                subprocess.run(["losetup", "-d", dev], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        with open("/proc/self/mountinfo") as f:
            still = [ln.split()[4] for ln in f if ln.split()[4].startswith(d + "/")]
        if still:
            log(f"not removing {d}: still mounted: {still}")
            continue
        log(f"removing stale {d}")
        shutil.rmtree(d, ignore_errors=True)


LOOP_RECORD = ".loop-devices"


def _read_loop_records(tmpdir: str) -> list[tuple[str, str]]:
    try:
        with open(os.path.join(tmpdir, LOOP_RECORD)) as f:
            return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if "\t" in line]
    except OSError:
        return []


# --------------------------------------------------------------------------
# TestCase base
# --------------------------------------------------------------------------

class ReplTestCase(unittest.TestCase):
    """Prints the log of every daemon that ran during a failing test."""

    maxDiff = 4000

    def run(self, result=None):
        result = result or self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        started = len(ALL_DAEMONS)
        alive_before = [d for d in ALL_DAEMONS if d.alive()]
        try:
            return super().run(result)
        finally:
            if len(result.failures) + len(result.errors) > before:
                seen = set()
                for d in alive_before + ALL_DAEMONS[started:]:
                    if d.log_path in seen or d.proc is None:
                        continue
                    seen.add(d.log_path)
                    sys.stderr.write(f"\n{self.id()} failed; daemon pid {d.pid} "
                                     f"(exit {d.proc.poll()}):\n{d.log_tail()}\n")

    @classmethod
    def setUpClass(cls):
        require_binary(REPLD_BIN, "repld")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        """A class-level Instance in cls.inst is stopped here; it must exit 0
        on SIGTERM like any other."""
        inst = cls.__dict__.get("inst")
        try:
            if isinstance(inst, Instance) and inst.daemon.alive():
                rc = inst.daemon.stop()
                if rc != 0:
                    raise AssertionError(f"repld exited {rc} on SIGTERM (expected 0)\n"
                                         f"{inst.daemon.log_tail()}")
        finally:
            super().tearDownClass()

    def new_instance(self, *args, start: bool = True, **kw) -> Instance:
        inst = Instance(*args, **kw)
        if start:
            inst.start()
        return inst


def run_main() -> None:
    try:
        prog = unittest.main(verbosity=2, exit=False)
        ok = prog.result.wasSuccessful() and prog.result.testsRun > 0
    finally:
        run_all_cleanups()
    sys.exit(0 if ok else 1)
