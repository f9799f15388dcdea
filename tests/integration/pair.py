"""A replicated pair on one machine: two repld daemons (nodes alpha and beta)
from one config file, each with its own sparse backing file, NBD socket,
control socket and peer-link port on 127.0.0.1.  Used by test_replication.py
and the demo; see docs/replication.md for what the daemons do."""

from __future__ import annotations

import hashlib
import json
import os
import time

import harness
from harness import MiB, run


class Pair:
    NODES = ("alpha", "beta")

    def __init__(self, *, protocol: str = "C", disk_size: int = 64 * MiB,
                 secrets: dict[str, str] | None = None, net: dict | None = None,
                 resource: str = "r0", log_level: str | None = None,
                 nbd: dict | None = None, disk: dict | None = None,
                 resync: dict | None = None, startup: dict | None = None):
        self.tmp = harness.make_tempdir()
        self.resource = resource
        self.nbd, self.disk_table, self.resync = nbd or {}, disk or {}, resync or {}
        self.startup = startup or {}
        self.protocol = protocol
        self.disk = {n: os.path.join(self.tmp, f"{n}.img") for n in self.NODES}
        self.socket = {n: os.path.join(self.tmp, f"{n}.sock") for n in self.NODES}
        self.control = {n: os.path.join(self.tmp, f"{n}.ctl") for n in self.NODES}
        self.port = {n: harness.free_tcp_port() for n in self.NODES}
        self.log = {n: os.path.join(self.tmp, f"{n}.log") for n in self.NODES}
        for n in self.NODES:
            harness.make_sparse_file(self.disk[n], disk_size)
        net_table = {"ping_interval": "1s", "ping_timeout": "500ms", "connect_timeout": "2s",
                     "reconnect_max": "500ms"}
        net_table.update(net or {})
        # One file for both nodes, as in production; one per node only when the test gives
        # them different secrets.
        self.config = {}
        for n in self.NODES:
            secret = (secrets or {}).get(n, "it-shared-secret")
            path = os.path.join(self.tmp, f"{resource}-{n}.toml" if secrets else
                                f"{resource}.toml")
            self.config[n] = path
            with open(path, "w") as f:
                f.write(self._config_text(protocol, secret, net_table))
        self.daemon = {n: None for n in self.NODES}
        self.log_level = log_level

    def _config_text(self, protocol: str, secret: str, net: dict) -> str:
        lines = ["[resource]", f'name = "{self.resource}"', f'protocol = "{protocol}"', "",
                 "[net]", f"secret = {json.dumps(secret)}"]
        lines += [f"{k} = {harness.toml_value(v)}" for k, v in net.items()]
        lines += ["", "[nbd]", f'export = "{self.resource}"']
        lines += [f"{k} = {harness.toml_value(v)}" for k, v in self.nbd.items()]
        lines += ["", "[disk]"] + [f"{k} = {harness.toml_value(v)}"
                                   for k, v in self.disk_table.items()] + [""]
        lines += ["[resync]"] + [f"{k} = {harness.toml_value(v)}"
                                 for k, v in self.resync.items()] + [""]
        lines += ["[startup]"] + [f"{k} = {harness.toml_value(v)}"
                                  for k, v in self.startup.items()] + [""]
        for n in self.NODES:
            lines += [f"[node.{n}]", f'disk = "{self.disk[n]}"',
                      f'address = "127.0.0.1:{self.port[n]}"',
                      f'nbd_socket = "{self.socket[n]}"',
                      f'control_socket = "{self.control[n]}"', ""]
        return "\n".join(lines) + "\n"

    def external_metadata(self) -> None:
        """Each node's metadata on a file of its own (meta_disk), with the same data size on
        both: what a node records about its failing data disk stays readable."""
        for n in self.NODES:
            meta = harness.make_sparse_file(os.path.join(self.tmp, f"{n}-md.img"), 4 * MiB)
            for path in set(self.config.values()):
                text = harness.read_text(path)
                text = text.replace(f"[node.{n}]\n", f'[node.{n}]\nmeta_disk = "{meta}"\n', 1)
                with open(path, "w") as f:
                    f.write(text)

    # ---- processes -------------------------------------------------------

    def replctl(self, node: str, *args: str, timeout: float = 60):
        return run([harness.REPLCTL_BIN, *args, self.resource, "-c", self.config[node],
                    "-n", node], timeout=timeout)

    def use_failing_disk(self, test, node: str, ops: tuple[str, ...] = ("pwrite", "zero", "trim")
                         ) -> "harness.FailingDisk":
        """`node`'s disk becomes a harness.FailingDisk of the pair's size, and both nodes get
        external metadata (the same data size), so that the failed node's record of the failure
        stays writable. Before create_md."""
        size = os.path.getsize(self.disk[node])
        disk = harness.FailingDisk(test, self.tmp, size, name=f"{node}-failing", ops=ops)
        os.remove(self.disk[node])
        os.symlink(disk.path, self.disk[node])
        self.external_metadata()
        return disk

    def create_md(self) -> None:
        for n in self.NODES:
            cp = self.replctl(n, "create-md")
            assert cp.returncode == 0, f"create-md on {n}: {cp.stdout}{cp.stderr}"

    def start(self, node: str) -> harness.Repld:
        d = harness.Repld(self.config[node], node, self.socket[node], self.log[node],
                          log_level=self.log_level)
        d.start()
        self.daemon[node] = d
        return d

    def start_all(self) -> None:
        for n in self.NODES:
            self.start(n)

    def status(self, node: str) -> dict:
        cp = self.replctl(node, "status", "--json", timeout=15)
        assert cp.returncode == 0, f"status on {node}: rc={cp.returncode} {cp.stdout}{cp.stderr}"
        return json.loads(cp.stdout)

    def wait_status(self, node: str, pred, timeout: float = 30, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status(node)
            if pred(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"{node}: {what or 'condition'} not reached in {timeout}s; last "
                             f"status {json.dumps(last)}\n{self.log_tails()}")

    def wait_connected(self, timeout: float = 30) -> None:
        for n in self.NODES:
            self.wait_status(n, lambda s: s["connection"] == "Connected", timeout, "Connected")

    def wait_in_sync(self, timeout: float = 120) -> None:
        for n in self.NODES:
            self.wait_status(n, lambda s: s["connection"] == "Connected"
                             and s["replication"] == "Established" and s["disk"] == "UpToDate"
                             and s["out_of_sync_bytes"] == 0
                             and s["peer"]["disk"] == "UpToDate", timeout, "in sync")

    def promote(self, node: str, force: bool = False) -> None:
        args = ["primary", "--force"] if force else ["primary"]
        cp = self.replctl(node, *args)
        assert cp.returncode == 0, f"primary on {node}: {cp.stdout}{cp.stderr}"

    def up_primary(self, node: str = "alpha", test=None) -> None:
        """create-md, start both, connect, make `node` Primary (--force: a fresh pair), wait
        for the initial full sync. With `test`, both daemons are stopped at that test's cleanup
        (before what it registered earlier, such as a FUSE disk under them)."""
        self.create_md()
        self.start_all()
        if test is not None:
            for n in self.NODES:
                test.addCleanup(lambda n=n: self.daemon[n] is not None and self.daemon[n].alive()
                                and self.daemon[n].stop())
        self.wait_connected()
        self.promote(node, force=True)
        self.wait_in_sync()

    def log_tails(self) -> str:
        return "\n".join(d.log_tail(60) for d in self.daemon.values() if d is not None)

    # ---- data ------------------------------------------------------------

    def uri(self, node: str) -> str:
        return harness.unix_uri(self.socket[node], self.resource)

    def data_bytes(self, node: str = "alpha") -> int:
        return int(self.status(node)["size_bytes"])

    def digest(self, node: str, length: int) -> str:
        h = hashlib.sha256()
        with open(self.disk[node], "rb") as f:
            left = length
            while left > 0:
                chunk = f.read(min(left, 4 * MiB))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
        return h.hexdigest()

    def read_disk(self, node: str, offset: int, length: int) -> bytes:
        with open(self.disk[node], "rb") as f:
            f.seek(offset)
            return f.read(length)
