"""The local tier's shard file: one file generation's windows and labels, uncompressed.

    header  "SYNCDSH1", u32 header bytes, u32 JSON length, JSON, zero padding (a 4 KB
            multiple, so the windows start page-aligned)
    windows n x window float32, C order (numpy memmap reads them in place)
    labels  n x label, in the file's own label dtype (64-byte aligned)

The JSON names the generation (path, size, mtime_ns, inode, layout: the file as it
was when its windows were read), the shapes, dtypes and offsets, and the xxh3-64 of
every byte after the header followed by the JSON itself (its checksum field zero):
a changed byte of the header (the labels' offset or dtype, still valid JSON) fails
the check as one of the windows does. A shard is written under a temporary name and renamed into
place once complete and checksummed (syncd.client.local_tier), so a shard under its
final name is whole; a later size or modification-time change (someone truncated or
overwrote it) is caught by `open_shard` and the shard is rebuilt. Shards are never
truncated or written in place by syncd: a reader's mapping stays valid (an evicted
or replaced shard is unlinked, and its pages live as long as a mapping of them).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

MAGIC = b"SYNCDSH1"
PAGE = 4096
_FIXED = struct.Struct("<8sII")  # magic, header bytes, JSON length
_FLOAT32 = np.dtype("<f4")
CHECK_CHUNK = 16 << 20


class ShardError(Exception):
    """The shard is not whole or not this generation's: a miss, rebuilt."""


@dataclass(frozen=True)
class Generation:
    """What makes a file generation's shard: the file as it was when read."""

    path: str
    size: int
    mtime_ns: int
    ino: int
    windows: str  # the layout's dataset names
    labels: str

    def stat(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.ino)

    def key(self) -> str:
        """The shard's file name stem: the path's hash, then the generation's."""
        path = xxhash.xxh3_64_hexdigest(self.path.encode())
        gen = xxhash.xxh3_64_hexdigest(json.dumps(
            [self.path, self.size, self.mtime_ns, self.ino, self.windows, self.labels]).encode())
        return f"{path}-{gen}"


@dataclass(frozen=True)
class ShardLayout:
    """Where the parts of a shard lie and what they hold."""

    n: int
    shape: tuple[int, ...]  # one window's
    label_dtype: np.dtype
    label_shape: tuple[int, ...]  # one label's
    header: int
    labels_at: int
    size: int

    @classmethod
    def plan(cls, gen: Generation, n: int, shape: tuple[int, ...], label_dtype: np.dtype,
             label_shape: tuple[int, ...]) -> tuple[ShardLayout, bytes]:
        """The layout of a new shard and its header (checksum left zero)."""
        doc = _doc(gen, n, shape, label_dtype, label_shape, 0, 0, 0, "0" * 16)
        header = -(-(_FIXED.size + len(doc) + 64) // PAGE) * PAGE
        window_bytes = 4 * int(np.prod(shape, dtype=np.int64))
        labels_at = -(-(header + n * window_bytes) // 64) * 64
        size = labels_at + n * label_dtype.itemsize * int(np.prod(label_shape, dtype=np.int64))
        layout = cls(n, tuple(shape), label_dtype, tuple(label_shape), header, labels_at,
                     max(size, labels_at))
        return layout, layout.header_bytes(gen, "0" * 16)

    def checksum(self, gen: Generation, mm: Any) -> str:
        """The xxh3-64 of the body (`mm`, the whole shard mapped) and of the header's JSON."""
        doc = _doc(gen, self.n, self.shape, self.label_dtype, self.label_shape, self.header,
                   self.labels_at, self.size, "0" * 16)
        return checksum_of(mm, self.header, self.size, doc)

    def header_bytes(self, gen: Generation, checksum: str) -> bytes:
        doc = _doc(gen, self.n, self.shape, self.label_dtype, self.label_shape, self.header,
                   self.labels_at, self.size, checksum)
        raw = _FIXED.pack(MAGIC, self.header, len(doc)) + doc
        return raw + b"\0" * (self.header - len(raw))


def _doc(gen: Generation, n: int, shape: tuple[int, ...], label_dtype: np.dtype,
         label_shape: tuple[int, ...], header: int, labels_at: int, size: int,
         checksum: str) -> bytes:
    return json.dumps({
        "path": gen.path, "size": gen.size, "mtime_ns": gen.mtime_ns, "ino": gen.ino,
        "layout": [gen.windows, gen.labels], "n": n, "shape": list(shape),
        "label_dtype": label_dtype.str, "label_shape": list(label_shape),
        "header": header, "labels_at": labels_at, "bytes": size, "xxh3": checksum,
    }, sort_keys=True).encode()


def checksum_of(mm: Any, start: int, end: int, tail: bytes = b"") -> str:
    """xxh3-64 of `mm[start:end]` (a mapping or memoryview), read in chunks, then `tail`."""
    h = xxhash.xxh3_64()
    view = memoryview(mm)
    try:
        for at in range(start, end, CHECK_CHUNK):
            h.update(view[at:min(end, at + CHECK_CHUNK)])
    finally:
        view.release()
    h.update(tail)
    return h.hexdigest()


@dataclass
class Shard:
    """An open shard: its windows and labels as read-only arrays over one mapping."""

    gen: Generation
    layout: ShardLayout
    fd: int  # kept open: its shared flock is the lease that keeps it from eviction
    windows: np.ndarray  # (n, *shape) float32, a memmap
    labels: np.ndarray  # (n, *label_shape)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the flock goes with it; the mapping lives with its arrays
            self.fd = -1


def read_header(fd: int) -> tuple[dict[str, Any], int]:
    """The shard's JSON header and its file size; ShardError when it is not a shard."""
    size = os.fstat(fd).st_size
    fixed = os.pread(fd, _FIXED.size, 0)
    if len(fixed) < _FIXED.size:
        raise ShardError("shorter than a header")
    magic, header, length = _FIXED.unpack(fixed)
    if magic != MAGIC or not _FIXED.size + length <= header <= size:
        raise ShardError("not a shard header")
    try:
        doc = json.loads(os.pread(fd, length, _FIXED.size))
    except ValueError as exc:
        raise ShardError(f"unreadable header ({exc})") from None
    if not isinstance(doc, dict):
        raise ShardError("unreadable header")
    return doc, size


def _map(fd: int, size: int) -> mmap.mmap:
    """Map through a descriptor of its own: Python's mmap keeps a dup of the one it is
    given, and a dup shares `fd`'s flock (the lease), which must end with `Shard.close`."""
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no /proc: the lease then lasts as long as the mapping
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)
    try:
        return mmap.mmap(own, size, prot=mmap.PROT_READ)
    finally:
        os.close(own)


def open_shard(fd: int, gen: Generation, verify: bool) -> Shard:
    """Map the shard open as `fd` (the Shard owns it from here) for `gen`. Raises
    ShardError (a miss: the caller rebuilds it) when it is not that generation's, is
    truncated, or (`verify`) fails its checksum; `fd` is then the caller's again."""
    doc, size = read_header(fd)
    try:
        shape = tuple(int(s) for s in doc["shape"])
        label_shape = tuple(int(s) for s in doc["label_shape"])
        label_dtype = np.dtype(doc["label_dtype"])
        layout = ShardLayout(int(doc["n"]), shape, label_dtype, label_shape,
                             int(doc["header"]), int(doc["labels_at"]), int(doc["bytes"]))
        mine = Generation(doc["path"], int(doc["size"]), int(doc["mtime_ns"]),
                          int(doc["ino"]), *doc["layout"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ShardError(f"unreadable header ({exc!r})") from None
    if label_dtype.hasobject:
        raise ShardError("labels of an object dtype")
    if mine != gen:
        raise ShardError("another generation's shard")
    if size != layout.size or layout.labels_at > size or layout.n < 0:
        raise ShardError(f"{size} bytes, the header says {layout.size} (truncated?)")
    mm = _map(fd, size)
    if verify and layout.checksum(gen, mm) != doc.get("xxh3"):
        mm.close()
        raise ShardError("checksum mismatch")
    windows = np.ndarray((layout.n, *shape), _FLOAT32, mm, layout.header)
    labels = np.ndarray((layout.n, *label_shape), label_dtype, mm, layout.labels_at)
    return Shard(gen, layout, fd, windows, labels)
