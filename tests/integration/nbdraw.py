"""A minimal raw NBD client (socket + struct), written from the NBD protocol
spec (NetworkBlockDevice/nbd doc/proto.md), for driving a server into corner
cases libnbd refuses to produce.  All integers are big-endian."""

from __future__ import annotations

import socket
import struct
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# handshake flags
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
# client flags
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

# transmission flags
TF_HAS_FLAGS = 1 << 0
TF_READ_ONLY = 1 << 1
TF_SEND_FLUSH = 1 << 2
TF_SEND_FUA = 1 << 3
TF_ROTATIONAL = 1 << 4
TF_SEND_TRIM = 1 << 5
TF_SEND_WRITE_ZEROES = 1 << 6
TF_SEND_DF = 1 << 7
TF_CAN_MULTI_CONN = 1 << 8

# options
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# option replies
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = 0x80000001
REP_ERR_POLICY = 0x80000002
REP_ERR_INVALID = 0x80000003
REP_ERR_PLATFORM = 0x80000004
REP_ERR_TLS_REQD = 0x80000005
REP_ERR_UNKNOWN = 0x80000006
REP_ERR_SHUTDOWN = 0x80000007
REP_ERR_BLOCK_SIZE_REQD = 0x80000008
REP_ERR_TOO_BIG = 0x80000009

# info types
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# commands
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_FLAG_FUA = 1 << 0

# structured reply
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ESHUTDOWN = 108


class ProtocolError(AssertionError):
    pass


class Closed(ProtocolError):
    """The server closed the connection (EOF or reset)."""


class OptionError(ProtocolError):
    def __init__(self, opt: int, rtype: int, msg: bytes):
        super().__init__(f"option {opt} failed: reply type {rtype:#x} ({msg!r})")
        self.opt = opt
        self.rtype = rtype
        self.msg = msg


class Reply:
    """A complete reply to one request (simple or structured)."""

    def __init__(self, handle: int, error: int, data: bytes = b"", message: str = "",
                 structured: bool = False, chunks=None):
        self.handle = handle
        self.error = error
        self.data = data
        self.message = message
        self.structured = structured
        self.chunks = chunks or []

    def __repr__(self):
        return (f"Reply(handle={self.handle}, error={self.error}, len={len(self.data)}, "
                f"structured={self.structured}, message={self.message!r})")


class RawClient:
    def __init__(self, path: str | None = None, *, tcp: tuple[str, int] | None = None,
                 timeout: float = 10.0):
        if tcp:
            self.sock = socket.create_connection(tcp, timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(path)
            except OSError:
                self.sock.close()
                raise
        self.hflags = None
        self.structured = False
        self.size = None
        self.tflags = None
        self.block_sizes = None
        self.pending_reads: dict[int, int] = {}  # handle -> length of READ requests
        self._read_base: dict[int, int] = {}     # handle -> offset of READ requests

    # ---- low level -------------------------------------------------------
    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed(f"connection reset after {len(buf)}/{n} bytes") from e
            if not chunk:
                raise Closed(f"EOF after {len(buf)}/{n} bytes")
            buf += chunk
        return bytes(buf)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within timeout (any data
        still arriving is read and discarded)."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    return True
                if not chunk:
                    return True
            return False
        finally:
            self.sock.settimeout(old)

    # ---- handshake -------------------------------------------------------
    def handshake(self, client_flags: int | None = None) -> int:
        magic, ihaveopt, hflags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC:
            raise ProtocolError(f"bad NBDMAGIC {magic:#x}")
        if ihaveopt != IHAVEOPT:
            raise ProtocolError(f"not newstyle: {ihaveopt:#x}")
        self.hflags = hflags
        if client_flags is None:
            client_flags = FLAG_C_FIXED_NEWSTYLE
        self.send(struct.pack(">I", client_flags))
        self.client_flags = client_flags
        return hflags

    def send_opt(self, opt: int, data: bytes = b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def recv_opt_reply(self, expect_opt: int | None = None):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC:
            raise ProtocolError(f"bad option reply magic {magic:#x}")
        if expect_opt is not None and opt != expect_opt:
            raise ProtocolError(f"option reply for {opt}, expected {expect_opt}")
        data = self.recv_exact(length) if length else b""
        return opt, rtype, data

    def opt_list(self, data: bytes = b"") -> list[str]:
        self.send_opt(OPT_LIST, data)
        names = []
        while True:
            _, rtype, d = self.recv_opt_reply(OPT_LIST)
            if rtype == REP_SERVER:
                (n,) = struct.unpack(">I", d[:4])
                if n > len(d) - 4:
                    raise ProtocolError(f"REP_SERVER name length {n} > payload {len(d) - 4}")
                names.append(d[4:4 + n].decode())
            elif rtype == REP_ACK:
                return names
            else:
                raise OptionError(OPT_LIST, rtype, d)

    def _info_or_go(self, opt: int, name: str, info_reqs=(INFO_BLOCK_SIZE,)) -> dict:
        nb = name.encode()
        data = struct.pack(">I", len(nb)) + nb + struct.pack(">H", len(info_reqs))
        data += b"".join(struct.pack(">H", r) for r in info_reqs)
        self.send_opt(opt, data)
        info: dict = {"infos": []}
        while True:
            _, rtype, d = self.recv_opt_reply(opt)
            if rtype == REP_INFO:
                (itype,) = struct.unpack(">H", d[:2])
                info["infos"].append(itype)
                if itype == INFO_EXPORT:
                    if len(d) != 12:
                        raise ProtocolError(f"NBD_INFO_EXPORT length {len(d)} != 12")
                    info["size"], info["tflags"] = struct.unpack(">QH", d[2:])
                elif itype == INFO_BLOCK_SIZE:
                    if len(d) != 14:
                        raise ProtocolError(f"NBD_INFO_BLOCK_SIZE length {len(d)} != 14")
                    info["block_sizes"] = struct.unpack(">III", d[2:])
                elif itype == INFO_NAME:
                    info["name"] = d[2:].decode()
                elif itype == INFO_DESCRIPTION:
                    info["description"] = d[2:].decode()
            elif rtype == REP_ACK:
                if "size" not in info:
                    raise ProtocolError("REP_ACK without NBD_INFO_EXPORT")
                return info
            else:
                raise OptionError(opt, rtype, d)

    def opt_info(self, name: str, info_reqs=(INFO_BLOCK_SIZE,)) -> dict:
        return self._info_or_go(OPT_INFO, name, info_reqs)

    def opt_go(self, name: str, info_reqs=(INFO_BLOCK_SIZE,)) -> dict:
        info = self._info_or_go(OPT_GO, name, info_reqs)
        self.size = info["size"]
        self.tflags = info["tflags"]
        self.block_sizes = info.get("block_sizes")
        return info

    def opt_structured_reply(self) -> None:
        self.send_opt(OPT_STRUCTURED_REPLY)
        _, rtype, d = self.recv_opt_reply(OPT_STRUCTURED_REPLY)
        if rtype != REP_ACK:
            raise OptionError(OPT_STRUCTURED_REPLY, rtype, d)
        self.structured = True

    def opt_abort(self):
        self.send_opt(OPT_ABORT)
        return self.recv_opt_reply(OPT_ABORT)

    def export_name(self, name: str) -> tuple[int, int, bytes]:
        """NBD_OPT_EXPORT_NAME; returns (size, tflags, trailing zero bytes)."""
        self.send_opt(OPT_EXPORT_NAME, name.encode())
        size, tflags = struct.unpack(">QH", self.recv_exact(10))
        pad = b""
        if not (self.client_flags & FLAG_C_NO_ZEROES):
            pad = self.recv_exact(124)
        self.size, self.tflags = size, tflags
        return size, tflags, pad

    def connect_go(self, name: str = "", structured: bool = False) -> dict:
        self.handshake()
        if structured:
            self.opt_structured_reply()
        return self.opt_go(name)

    # ---- transmission ----------------------------------------------------
    def send_request(self, cmd: int, offset: int = 0, length: int = 0, handle: int = 1,
                     flags: int = 0, data: bytes | None = None, magic: int = REQUEST_MAGIC):
        hdr = struct.pack(">IHHQQI", magic, flags, cmd, handle, offset, length)
        if cmd == CMD_READ:
            self.pending_reads[handle] = length
            self._read_base[handle] = offset
        self.send(hdr + (data or b""))

    def recv_reply(self) -> Reply:
        """Receive one complete reply (all chunks of a structured reply)."""
        (magic,) = struct.unpack(">I", self.recv_exact(4))
        if magic == SIMPLE_REPLY_MAGIC:
            error, handle = struct.unpack(">IQ", self.recv_exact(12))
            length = self.pending_reads.pop(handle, 0)
            self._read_base.pop(handle, None)
            data = self.recv_exact(length) if (length and error == 0) else b""
            return Reply(handle, error, data)
        if magic != STRUCTURED_REPLY_MAGIC:
            raise ProtocolError(f"bad reply magic {magic:#x}")
        if not self.structured:
            raise ProtocolError("structured reply chunk without negotiation")
        chunks = []
        first = True
        while True:
            if not first:
                (magic,) = struct.unpack(">I", self.recv_exact(4))
                if magic != STRUCTURED_REPLY_MAGIC:
                    raise ProtocolError(f"bad chunk magic {magic:#x} mid-reply (interleaving not "
                                        f"supported by this simple client)")
            first = False
            flags, rtype, handle, length = struct.unpack(">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length) if length else b""
            chunks.append((flags, rtype, handle, payload))
            if flags & REPLY_FLAG_DONE:
                break
        handle = chunks[0][2]
        if any(c[2] != handle for c in chunks):
            raise ProtocolError("interleaved chunks of different handles")
        rlen = self.pending_reads.pop(handle, 0)
        error = 0
        message = ""
        buf = bytearray(rlen)
        for flags, rtype, _h, payload in chunks:
            if rtype & 0x8000:
                err, mlen = struct.unpack(">IH", payload[:6])
                if mlen > len(payload) - 6:
                    raise ProtocolError("error message length exceeds chunk")
                error = error or err
                message = payload[6:6 + mlen].decode(errors="replace")
            elif rtype == REPLY_TYPE_OFFSET_DATA:
                (off,) = struct.unpack(">Q", payload[:8])
                d = payload[8:]
                rel = off - self._read_base.get(handle, 0)
                buf[rel:rel + len(d)] = d
            elif rtype == REPLY_TYPE_OFFSET_HOLE:
                off, hl = struct.unpack(">QI", payload)
                rel = off - self._read_base.get(handle, 0)
                buf[rel:rel + hl] = bytes(hl)
            elif rtype == REPLY_TYPE_NONE:
                if payload:
                    raise ProtocolError("NBD_REPLY_TYPE_NONE with payload")
            else:
                raise ProtocolError(f"unexpected chunk type {rtype}")
        self._read_base.pop(handle, None)
        return Reply(handle, error, bytes(buf) if error == 0 else b"", message, True, chunks)

    def request(self, cmd: int, offset: int = 0, length: int = 0, handle: int = 1,
                flags: int = 0, data: bytes | None = None) -> Reply:
        self.send_request(cmd, offset, length, handle, flags, data)
        r = self.recv_reply()
        if r.handle != handle:
            raise ProtocolError(f"reply for handle {r.handle}, expected {handle}")
        return r

    def read(self, offset: int, length: int, handle: int = 100) -> Reply:
        return self.request(CMD_READ, offset, length, handle)

    def write(self, offset: int, data: bytes, handle: int = 101, flags: int = 0) -> Reply:
        return self.request(CMD_WRITE, offset, len(data), handle, flags, data)

    def disconnect(self):
        self.send_request(CMD_DISC, 0, 0, handle=0xD15C)
