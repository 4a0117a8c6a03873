"""MGET that reads each value straight from the socket into the caller's array.

redis-py parses a reply into a buffer, copies it out into a `bytes` object, and the
Dataset then copies that into a tensor. For a batch of 64 windows of 100 KB that
is most of the time a batch takes. This speaks the few lines of RESP2 that MGET
needs over a plain socket and `recv_into`s every value into the writable array it
ends up in: one copy, from the kernel. Every value ends in a checksum trailer
(syncd.sinks.checksum), read into a small buffer of its own and checked against what was
received. Values whose length is not the expected one are read into a scratch
buffer and reported as misses, values that fail the checksum as bad; nothing is
ever decoded beyond a length. URLs it does not handle (TLS) make `DirectMget.connect` return
None, and the caller keeps using redis-py. A Redis Cluster's node answers with a
redirection when a slot is elsewhere: `Redirect`, which syncd.client.cluster_mget follows.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from urllib.parse import unquote, urlparse

import numpy as np

from syncd.sinks.checksum import CHECKSUM_BYTES, checksum

READ_CHUNK = 1 << 12  # small: a large value mostly goes by recv_into, not through buf
SKIP_CHUNK = 1 << 16
# What `mget_into` says of each value.
MISS, HIT, BAD = 0, 1, 2


class MgetError(Exception):
    """The connection failed or Redis answered with an error: treat as Redis unavailable."""


class Redirect(MgetError):
    """A cluster node's one-line answer that the keys are elsewhere or moving:
    `MOVED slot host:port`, `ASK slot host:port`, `TRYAGAIN ...` or `CLUSTERDOWN ...`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        parts = text.split()
        self.kind = parts[0]
        self.address: tuple[str, int] | None = None
        if self.kind in ("MOVED", "ASK") and len(parts) == 3:
            host, _, port = parts[2].rpartition(":")
            self.address = (host.strip("[]"), int(port))


class DirectMget:
    """One connection for MGET into preallocated arrays (not thread-safe; one per worker)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0
        self.crlf = memoryview(bytearray(2))
        self.trailer = memoryview(bytearray(CHECKSUM_BYTES))

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> DirectMget | None:
        """A connection for `url` (redis:// or unix://), or None for URLs it does not handle."""
        parts = urlparse(url)
        try:
            if parts.scheme == "redis":
                sock = socket.create_connection((parts.hostname or "127.0.0.1",
                                                 parts.port or 6379), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                db = (parts.path or "/0").lstrip("/") or "0"
            elif parts.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(parts.path)
                db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p) \
                    .get("db", "0")
            else:
                return None
        except OSError as exc:
            raise MgetError(f"cannot connect: {exc}") from None
        conn = cls(sock)
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            args = ["AUTH", user, unquote(parts.password)] if user else \
                ["AUTH", unquote(parts.password)]
            conn._simple(args)
        if db != "0":
            conn._simple(["SELECT", db])
        return conn

    def close(self) -> None:
        self.sock.close()

    # -- the protocol ----------------------------------------------------------------

    @staticmethod
    def command(args: Sequence[str | bytes]) -> bytes:
        """One command in RESP, ready to send."""
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def _send(self, args: Sequence[str | bytes]) -> None:
        self.send_raw(self.command(args))

    def send_raw(self, data: bytes) -> None:
        """Send commands already encoded (several at once: one system call)."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise MgetError(f"send failed: {exc}") from None

    def _fill(self) -> None:
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        try:
            chunk = self.sock.recv(READ_CHUNK)
        except OSError as exc:
            raise MgetError(f"receive failed: {exc}") from None
        if not chunk:
            raise MgetError("Redis closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos:end])
                self.pos = end + 2
                return line
            self._fill()

    def _read_into(self, target: memoryview) -> None:
        """Exactly len(target) bytes: what is buffered first, then straight from the socket."""
        have = min(len(self.buf) - self.pos, len(target))
        if have:
            with memoryview(self.buf) as buffered:  # released at once: `_fill` resizes buf
                target[:have] = buffered[self.pos:self.pos + have]
        self.pos += have
        done = have
        while done < len(target):
            try:
                n = self.sock.recv_into(target[done:])
            except OSError as exc:
                raise MgetError(f"receive failed: {exc}") from None
            if n == 0:
                raise MgetError("Redis closed the connection")
            done += n

    def _skip(self, n: int) -> None:
        scratch = memoryview(bytearray(min(n, SKIP_CHUNK)))
        while n:
            part = scratch[:min(n, len(scratch))]
            self._read_into(part)
            n -= len(part)

    def _simple(self, args: Sequence[str]) -> None:
        self._send(args)
        line = self._line()
        if line.startswith(b"-"):
            raise MgetError(line[1:].decode(errors="replace"))

    def mget_into(self, keys: Sequence[str], targets: Sequence[memoryview | None]) -> list[int]:
        """MGET `keys`; value i's payload goes into `targets[i]` (a writable byte view of
        exactly the expected length), its checksum trailer is checked. Returns, per key, HIT
        (filled and checked), MISS (no such key, or a None target) or BAD (another length:
        garbage or the format before checksums; or a failed checksum: the target then holds
        garbage)."""
        self.send_mget(keys)
        return self.read_mget(keys, targets)

    def send_mget(self, keys: Sequence[str], asking: bool = False) -> None:
        """Send MGET `keys` (after ASKING: a cluster's ASK redirection) without waiting;
        `read_mget` reads the reply, in order."""
        self.send_raw(self.mget_command(keys, asking))

    @classmethod
    def mget_command(cls, keys: Sequence[str], asking: bool = False) -> bytes:
        """What `send_mget` sends, for a caller that sends several at once (`send_raw`)."""
        mget = cls.command(["MGET", *keys])
        return cls.command(["ASKING"]) + mget if asking else mget

    def read_mget(self, keys: Sequence[str], targets: Sequence[memoryview | None],
                  asking: bool = False) -> list[int]:
        """The reply to one `send_mget`, as `mget_into` describes. A cluster's redirection
        (MOVED, ASK) or TRYAGAIN is a `Redirect`; the connection stays usable."""
        if asking:
            line = self._line()
            if not line.startswith(b"+"):
                raise MgetError(f"ASKING refused: {line[:80]!r}")
        head = self._line()
        if head.startswith(b"-"):
            text = head[1:].decode(errors="replace")
            if text.startswith(("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")):
                raise Redirect(text)
            raise MgetError(text)
        if not head.startswith(b"*") or int(head[1:]) != len(keys):
            raise MgetError(f"unexpected reply to MGET: {head[:40]!r}")
        filled = []
        for key, target in zip(keys, targets):
            line = self._line()
            if line.startswith(b"-"):
                raise MgetError(line[1:].decode(errors="replace"))
            size = int(line[1:])
            if size < 0:
                filled.append(MISS)
                continue
            if target is not None and size == len(target) + CHECKSUM_BYTES:
                self._read_into(target)
                self._read_into(self.trailer)
                ok = checksum(key, target) == int.from_bytes(self.trailer, "little")
                filled.append(HIT if ok else BAD)
            else:
                self._skip(size)
                filled.append(MISS if target is None else BAD)
            self._read_into(self.crlf)  # the value's trailing CRLF
        return filled


def byte_view(array: np.ndarray) -> memoryview:
    """A writable, flat byte view of a C-contiguous array."""
    return memoryview(array).cast("B")
