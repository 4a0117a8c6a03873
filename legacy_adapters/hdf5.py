"""The legacy HDF5 window caches: a read-only source that never gets in a writer's way.

Promises to the legacy writers (h5py scripts that create, rewrite and append):
- files are opened with HDF5 file locking off (`locking=False`), read-only, and
  closed as soon as one pass over them is done; no handle is kept between passes;
- a file is only indexed once it is complete: its size and mtime have been stable
  for a debounce window, no process holds it open for writing (the write lock an
  h5py writer holds, read from /proc/locks, never taken), and it opens
  consistently (same stat before and after);
- windows are read in chunk-aligned slabs. For gzip (and shuffle) chunks the raw
  chunk bytes are fetched from HDF5 and inflated in worker threads (zlib releases
  the GIL), so decompression uses every core; other filters go through h5py.

Two kinds of failure: `FileBusy` (being written, or changed under us: try again
later) and `BadFile` (truncated, corrupt, not HDF5, no known layout: quarantine).
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import itertools
import math
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5z

DEFAULT_LAYOUTS: tuple[tuple[str, str], ...] = (("eeg", "labels"), ("data", "targets"))
DEFAULT_PATTERNS: tuple[str, ...] = ("*.h5", "*.hdf5")
# Numeric kinds only: float, signed and unsigned integers, booleans. Nothing that
# needs an object or a structured decoder is ever cached.
ALLOWED_KINDS = frozenset("fiub")
SLAB_BYTES = 8 << 20
HASH_BLOCK = 8 << 20
# HDF5 error texts that mean "someone is writing this file right now", not "corrupt".
# HDF5's answer to an open whose locking flags differ from an open already in this process.
_LOCKING_MISMATCH = "flag values don't match"
_BUSY_MARKERS = ("already open for write", "unable to lock", "file locking",
                 "resource temporarily unavailable")


class Hdf5Error(Exception):
    """Base of the errors this source raises."""


class FileBusy(Hdf5Error):
    """The file is being written or changed while read: not an error, try again later."""


class BadFile(Hdf5Error):
    """The file cannot be used (truncated, corrupt, not HDF5, unknown layout): quarantine it."""


@dataclass(frozen=True)
class FileSig:
    """What changes when a file is written: size, mtime (ns) and inode (a rewrite via rename)."""

    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, path: Path) -> FileSig:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def document(self) -> dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "ino": self.ino}


@dataclass(frozen=True)
class Layout:
    """Which datasets hold the windows `(N, ...)` and the per-window labels `(N, ...)`."""

    windows: str
    labels: str


@dataclass
class DatasetInfo:
    name: str
    shape: list[int]
    dtype: str
    chunks: list[int] | None
    compression: str | None
    compression_opts: Any
    shuffle: bool
    filters: list[str]

    def document(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": self.dtype, "chunks": self.chunks,
                "compression": self.compression, "compression_opts": self.compression_opts,
                "shuffle": self.shuffle, "filters": self.filters}


@dataclass
class FileInfo:
    """Everything indexing learns about one complete file."""

    path: Path
    sig: FileSig
    layout: Layout
    datasets: dict[str, DatasetInfo]
    attrs: dict[str, Any]
    n_windows: int
    window_shape: list[int]
    window_dtype: str  # native byte order, numpy `dtype.str`
    label_shape: list[int]
    label_dtype: str
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def window_bytes(self) -> int:
        return int(np.dtype(self.window_dtype).itemsize * math.prod(self.window_shape))


# -- finding files --------------------------------------------------------------------


def list_files(dirs: Iterable[Path], patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[Path]:
    """Every file under `dirs` (recursively) whose name matches one of `patterns`, sorted."""
    found: set[Path] = set()
    for top in dirs:
        for root, subdirs, names in os.walk(top):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in names:
                if not name.startswith(".") and matches(name, patterns):
                    found.add(Path(root, name).absolute())
    return sorted(found)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# -- opening and inspecting -----------------------------------------------------------


def held_for_write(path: Path, locks: Path = Path("/proc/locks")) -> bool:
    """Whether a process holds a write lock on `path` (an h5py writer with HDF5's default
    file locking does, for as long as the file is open), read from /proc/locks without
    taking any lock ourselves. False where /proc/locks does not exist."""
    try:
        st = os.stat(path)
        text = locks.read_text()
    except OSError:
        return False
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[5] == ident and parts[3] == "WRITE":
            return True
    return False


def is_busy_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def open_h5(path: Path, **kwargs: Any) -> h5py.File:
    """Open read-only without HDF5 file locks (a legacy writer must never wait on syncd).

    HDF5 refuses a second open of a file that this process already has open with other
    locking flags (the legacy Dataset, a notebook: h5py's defaults). Such a file is then
    opened the way it is already open: the lock, if any, is already held by this
    process, so no writer is newly blocked.
    """
    for locking in (False, None, True):  # ours; h5py's default; an explicit locking=True
        try:
            return h5py.File(path, "r", locking=locking, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if _LOCKING_MISMATCH in str(exc):
                continue
            if is_busy_error(exc):
                raise FileBusy(f"being written ({_short(exc)})") from None
            raise BadFile(f"cannot open as HDF5: {_short(exc)}") from None
    raise FileBusy("already open in this process with HDF5 file access settings that do not "
                   "allow a second read-only open (e.g. open for writing); close that handle "
                   "or open it with h5py.File(path, 'r', locking=False)")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def json_safe(value: Any, limit: int = 1000) -> Any:
    """An HDF5 attribute as a JSON/BSON-safe value (bytes decoded, arrays as lists)."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value)[:limit].hex()
    if isinstance(value, np.ndarray):
        if value.size > limit:
            return {"dtype": value.dtype.str, "shape": list(value.shape), "truncated": True}
        return [json_safe(v, limit) for v in value.tolist()] if value.ndim else \
            json_safe(value.item(), limit)
    if isinstance(value, np.generic):
        return json_safe(value.item(), limit)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v, limit) for v in value[:limit]]
    if isinstance(value, h5py.Empty):
        return None
    return str(value)


def _dataset_info(name: str, ds: h5py.Dataset) -> DatasetInfo:
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[3].decode(errors="replace") for i in range(plist.get_nfilters())]
    opts = ds.compression_opts
    return DatasetInfo(name, [int(n) for n in ds.shape], ds.dtype.str,
                       list(ds.chunks) if ds.chunks else None, ds.compression,
                       json_safe(opts), bool(ds.shuffle), filters)


def _check_numeric(name: str, ds: h5py.Dataset) -> np.dtype:
    dtype = ds.dtype
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise BadFile(f"dataset {name!r} has dtype {dtype} (only numeric and boolean dtypes "
                      "are cached)")
    return dtype.newbyteorder("=")


def find_layout(f: h5py.File, layouts: Sequence[Layout]) -> Layout:
    for layout in layouts:
        w, lab = f.get(layout.windows), f.get(layout.labels)
        if isinstance(w, h5py.Dataset) and isinstance(lab, h5py.Dataset):
            return layout
    wanted = ", ".join(f"{lay.windows}+{lay.labels}" for lay in layouts)
    present = ", ".join(sorted(f.keys())[:10]) or "none"
    raise BadFile(f"no known windows/labels datasets (looked for {wanted}; found {present})")


def inspect(path: Path, layouts: Sequence[Layout], with_fingerprint: bool = True,
            workers: int = 2) -> FileInfo:
    """Open `path` once, read its structure (no window data), close it; check consistency.

    Raises FileBusy when the file changes while being read, BadFile when it is unusable.
    """
    path = Path(path)
    before = FileSig.of(path)
    if held_for_write(path):
        raise FileBusy("open for writing by another process")
    try:
        with open_h5(path) as f:
            layout = find_layout(f, layouts)
            windows, labels = f[layout.windows], f[layout.labels]
            wdtype = _check_numeric(layout.windows, windows)
            ldtype = _check_numeric(layout.labels, labels)
            if windows.ndim < 2:
                raise BadFile(f"dataset {layout.windows!r} has shape {windows.shape}: expected "
                              "(N, channels, times)")
            if labels.ndim < 1 or labels.shape[0] != windows.shape[0]:
                raise BadFile(f"{layout.labels!r} has shape {labels.shape} but "
                              f"{layout.windows!r} has {windows.shape[0]} windows")
            datasets = {}
            for name, obj in _walk(f):
                datasets[name] = _dataset_info(name, obj)
            attrs = {str(k): json_safe(_attr(f, k)) for k in f.attrs}
            info = FileInfo(path, before, layout, datasets, attrs, int(windows.shape[0]),
                            [int(n) for n in windows.shape[1:]], wdtype.str,
                            [int(n) for n in labels.shape[1:]], ldtype.str)
    except (FileBusy, BadFile, FileNotFoundError):
        raise
    except Exception as exc:  # h5py raises many kinds (KeyError, OSError, RuntimeError ...)
        if FileSig.of(path) != before or is_busy_error(exc):
            raise FileBusy(f"changed while being read ({_short(exc)})") from None
        raise BadFile(f"unreadable: {_short(exc)}") from None
    if with_fingerprint:
        info.fingerprint = fingerprint(path, workers)
    if FileSig.of(path) != before:
        raise FileBusy("changed while being indexed")
    return info


def _attr(f: h5py.File, key: str) -> Any:
    try:
        return f.attrs[key]
    except Exception as exc:  # an attribute of a type h5py cannot read
        return f"<unreadable: {type(exc).__name__}>"


def _walk(f: h5py.File, limit: int = 100) -> list[tuple[str, h5py.Dataset]]:
    out: list[tuple[str, h5py.Dataset]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and len(out) < limit:
            out.append((name, obj))

    f.visititems(visit)
    return out


def fingerprint(path: Path, workers: int = 2) -> str:
    """A SHA-256 tree hash of the file's bytes: 8 MiB blocks hashed in parallel threads
    (hashlib releases the GIL; SHA-256 uses the CPU's SHA instructions where it has
    them), then the size and the block digests hashed together. Two files with the
    same fingerprint hold the same bytes."""
    size = os.path.getsize(path)
    starts = range(0, size, HASH_BLOCK)

    def block(start: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            return hashlib.sha256(handle.read(HASH_BLOCK)).digest()

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="syncd-hash") as pool:
        digests = list(pool.map(block, starts))
    top = hashlib.sha256(size.to_bytes(8, "big"))
    for d in digests:
        top.update(d)
    return "sha256-tree:" + top.hexdigest()


# -- reading windows in slabs ---------------------------------------------------------


def _decoders(ds: h5py.Dataset) -> list[int] | None:
    """The filter codes to undo (in order) when decoding raw chunks here, or None for h5py."""
    if ds.chunks is None:
        return None
    plist = ds.id.get_create_plist()
    codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(c not in (h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE) for c in codes):
        return None
    return list(reversed(codes))


def _unshuffle(buf: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or len(buf) % itemsize:
        return buf
    raw = np.frombuffer(buf, np.uint8).reshape(itemsize, len(buf) // itemsize)
    return np.ascontiguousarray(raw.T).tobytes()


@dataclass
class _Job:
    start: int  # first row of the slab read (chunk-aligned)
    stop: int
    chunks: list[tuple[tuple[int, ...], bytes]] | None  # raw chunks, or None: read via h5py


_Pending = tuple[int, int, "Future[tuple[int, np.ndarray]]"]


class SlabReader:
    """Reads the windows of one open file in chunk-aligned slabs, decoding in threads.

    Use as a context manager: the file is opened on enter and closed on exit.
    """

    def __init__(self, path: Path, layout: Layout, workers: int = 2,
                 slab_bytes: int = SLAB_BYTES) -> None:
        self.path, self.layout = Path(path), layout
        self.workers = max(1, workers)
        self.slab_bytes = slab_bytes
        self._file: h5py.File | None = None

    def __enter__(self) -> SlabReader:
        self._file = open_h5(self.path)
        self.ds = self._file[self.layout.windows]
        self.dtype = self.ds.dtype
        self.native = self.dtype.newbyteorder("=")
        self.chunks = self.ds.chunks
        self.decoders = _decoders(self.ds)
        row = self.dtype.itemsize * math.prod(self.ds.shape[1:])
        step = self.chunks[0] if self.chunks else 1
        self.rows_per_slab = max(step, (self.slab_bytes // max(row, 1)) // step * step)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def n_windows(self) -> int:
        return int(self.ds.shape[0])

    def labels(self) -> np.ndarray:
        """All labels (small: one value per window), in native byte order."""
        assert self._file is not None
        ds = self._file[self.layout.labels]
        return np.ascontiguousarray(ds[()], dtype=ds.dtype.newbyteorder("="))

    def slabs(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """`(first index, windows)` for windows start..stop-1, in order, C-contiguous, native."""
        step = self.chunks[0] if self.chunks else 1
        first = start // step * step
        bounds = [*range(first, stop, self.rows_per_slab), stop]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="syncd-inflate") as pool:
            pending: collections.deque[_Pending] = collections.deque()
            for a, b in itertools.pairwise(bounds):
                job = self._prepare(a, min(stop, b))
                pending.append((max(a, start), min(stop, b), pool.submit(self._assemble, job)))
                while len(pending) > self.workers:
                    yield self._take(pending.popleft())
            while pending:
                yield self._take(pending.popleft())

    @staticmethod
    def _take(item: _Pending) -> tuple[int, np.ndarray]:
        lo, hi, fut = item
        first, data = fut.result()
        return lo, data[lo - first: hi - first]

    def _prepare(self, a: int, b: int) -> _Job:
        """Fetch the raw chunks of rows a..b (main thread: HDF5 calls are serialised anyway)."""
        if self.decoders is None:
            return _Job(a, b, None)
        assert self.chunks is not None
        c0 = self.chunks[0]
        shape = self.ds.shape
        ranges = [range(a - a % c0, b, c0)] + [range(0, n, c) for n, c in
                                               zip(shape[1:], self.chunks[1:])]
        raw: list[tuple[tuple[int, ...], bytes]] = []
        read = self.ds.id.read_direct_chunk
        for offset in itertools.product(*ranges):
            try:
                mask, data = read(offset)
            except (OSError, RuntimeError, ValueError):
                return _Job(a, b, None)  # e.g. a chunk never written: let h5py fill it
            if mask:
                return _Job(a, b, None)  # a filter was skipped for this chunk
            raw.append((offset, data))
        return _Job(a, b, raw)

    def _assemble(self, job: _Job) -> tuple[int, np.ndarray]:
        shape = (job.stop - job.start, *self.ds.shape[1:])
        out = np.empty(shape, self.dtype)
        if job.chunks is None:
            if shape[0]:
                self.ds.read_direct(out, np.s_[job.start:job.stop], np.s_[0:shape[0]])
        else:
            assert self.chunks is not None
            cshape = tuple(self.chunks)
            itemsize = self.dtype.itemsize
            nbytes = itemsize * math.prod(cshape)
            for offset, data in job.chunks:
                for code in self.decoders or ():
                    if code == h5z.FILTER_DEFLATE:
                        # One right-sized buffer: inflate runs start to end without the GIL.
                        data = zlib.decompress(data, bufsize=nbytes)
                    else:
                        data = _unshuffle(data, itemsize)
                chunk = np.frombuffer(data, self.dtype).reshape(cshape)
                dst, src = [], []
                for axis, (o, c) in enumerate(zip(offset, cshape)):
                    lo = max(o, job.start) if axis == 0 else o
                    hi = min(o + c, job.stop if axis == 0 else self.ds.shape[axis])
                    base = job.start if axis == 0 else 0
                    dst.append(slice(lo - base, hi - base))
                    src.append(slice(lo - o, hi - o))
                out[tuple(dst)] = chunk[tuple(src)]
        if out.dtype != self.native:
            out = out.astype(self.native)
        return job.start, out


def read_windows(f: h5py.File, layout: Layout, indices: Sequence[int]) -> np.ndarray:
    """Windows at `indices` (any order, repeats allowed) as one native C-order array."""
    ds = f[layout.windows]
    order = np.asarray(indices, dtype=np.int64)
    unique, inverse = np.unique(order, return_inverse=True)
    if len(unique) == 0:
        return np.empty((0, *ds.shape[1:]), ds.dtype.newbyteorder("="))
    if len(unique) > 1 and unique[-1] - unique[0] + 1 == len(unique):
        data = ds[int(unique[0]):int(unique[-1]) + 1]
    else:
        data = ds[unique.tolist()] if len(unique) > 1 else ds[int(unique[0])][None]
    data = np.ascontiguousarray(data[inverse])
    native = data.dtype.newbyteorder("=")
    return data if data.dtype == native else data.astype(native)


def wait_stable(path: Path, debounce: float, seen: dict[Path, tuple[FileSig, float]],
                now: float | None = None) -> tuple[bool, FileSig]:
    """Whether `path` has kept the same size/mtime/inode for `debounce` seconds.

    Stable when its mtime is at least `debounce` old, or when `seen` (the caller's
    memory of earlier looks) shows the same signature for that long.
    """
    sig = FileSig.of(path)
    mono = time.monotonic() if now is None else now
    age = time.time() - sig.mtime_ns / 1e9
    prev = seen.get(path)
    if prev is None or prev[0] != sig:
        seen[path] = (sig, mono)
        prev = seen[path]
    return (age >= debounce or mono - prev[1] >= debounce), sig
