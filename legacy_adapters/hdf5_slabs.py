"""Reading windows out of an HDF5 file: chunk-aligned slabs for warming, any indices for readers.

For gzip (and shuffle) chunks the raw chunk bytes are fetched from HDF5 in the
calling thread, and a pool of worker threads inflates them (libdeflate, else zlib)
and copies them into the slab's array, each thread a share of the slab's chunks:
both release the GIL, so decompression uses as many cores as there are workers,
without the copies a process pool would need to move chunks and windows between
processes.
Memory stays bounded whatever the number of workers: at most `AHEAD` slabs are
being decoded while the caller writes the one before. Other filters (and chunks
HDF5 never wrote) go through h5py. Files are opened without locks
(`legacy_adapters.hdf5`).
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from h5py import h5z

from legacy_adapters.hdf5 import Layout, open_h5

try:  # libdeflate inflates HDF5's gzip chunks in about 60% of zlib's time
    import deflate
    from deflate import DeflateError
    from deflate import zlib_decompress as _libdeflate

    if tuple(int(p) for p in deflate.__version__.split(".")[:2]) < (0, 9):
        _libdeflate = None  # before 0.9 it holds the GIL: the threads would take turns
except (ImportError, AttributeError, ValueError):  # not installed: zlib does it all
    _libdeflate = None

SLAB_BYTES = 8 << 20
AHEAD = 2  # slabs being decoded while the caller writes the one before them
MAX_WORKERS = 8  # past this the Redis writes, not inflating, set the pace


def default_workers(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """One worker per CPU this process may use, at most `MAX_WORKERS`: the CPUs it may
    run on, fewer where a cgroup quota (a container's `--cpus`) allows less."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            usable = min(usable, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to respect
    return max(1, min(MAX_WORKERS, usable))


def _decoders(ds: h5py.Dataset) -> list[int] | None:
    """The filter codes to undo (in order) when decoding raw chunks here, or None for h5py."""
    if ds.chunks is None:
        return None
    plist = ds.id.get_create_plist()
    codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(c not in (h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE) for c in codes):
        return None
    return list(reversed(codes))


def inflate(data: bytes, nbytes: int) -> bytes | bytearray:
    """One chunk of HDF5's deflate filter (a zlib stream) decoded to its `nbytes` bytes."""
    if _libdeflate is not None:
        try:
            return _libdeflate(data, nbytes)
        except DeflateError:
            pass  # zlib decodes it, or says what is wrong with it
    # One right-sized buffer: inflate runs start to end without the GIL.
    return zlib.decompress(data, bufsize=nbytes)


def _unshuffle(buf: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or len(buf) % itemsize:
        return buf
    raw = np.frombuffer(buf, np.uint8).reshape(itemsize, len(buf) // itemsize)
    return np.ascontiguousarray(raw.T).tobytes()


Chunk = tuple[tuple[int, ...], bytes]  # a chunk's offset in the dataset and its raw bytes


@dataclass
class _Slab:
    """One slab being decoded: rows start..stop-1 into `out`, by one or more futures."""

    start: int  # first row read (chunk-aligned)
    stop: int
    lo: int  # the rows the caller asked for: lo..hi-1
    hi: int
    out: np.ndarray
    parts: list[Future[None]] = field(default_factory=list)


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
            pending: collections.deque[_Slab] = collections.deque()
            try:
                for a, b in itertools.pairwise(bounds):
                    pending.append(self._submit(pool, a, min(stop, b), start, stop))
                    while len(pending) > AHEAD:
                        yield self._take(pending.popleft())
                while pending:
                    yield self._take(pending.popleft())
            finally:
                for slab in pending:  # the caller stopped early: drop what is queued
                    for part in slab.parts:
                        part.cancel()

    def _take(self, slab: _Slab) -> tuple[int, np.ndarray]:
        for part in slab.parts:
            part.result()
        return slab.lo, slab.out[slab.lo - slab.start: slab.hi - slab.start]

    def _submit(self, pool: ThreadPoolExecutor, a: int, b: int, start: int,
                stop: int) -> _Slab:
        """Fetch rows a..b's raw chunks here (HDF5 calls are serialised anyway) and hand
        them to the workers in shares, or the whole slab to one worker through h5py."""
        # In native byte order: the workers' copies (or HDF5) swap bytes on the way in.
        slab = _Slab(a, b, max(a, start), min(stop, b),
                     np.empty((b - a, *self.ds.shape[1:]), self.native))
        chunks = self._raw_chunks(a, b)
        if chunks is None:
            slab.parts.append(pool.submit(self._read_h5py, slab))
            return slab
        shares = min(self.workers, len(chunks))
        size = -(-len(chunks) // shares) if shares else 0
        for i in range(0, len(chunks), max(size, 1)):
            slab.parts.append(pool.submit(self._decode_into, slab, chunks[i:i + size]))
        return slab

    def _raw_chunks(self, a: int, b: int) -> list[Chunk] | None:
        """The raw chunks holding rows a..b-1, or None when h5py must decode them."""
        if self.decoders is None:
            return None
        assert self.chunks is not None
        c0 = self.chunks[0]
        ranges = [range(a - a % c0, b, c0)] + [range(0, n, c) for n, c in
                                               zip(self.ds.shape[1:], self.chunks[1:])]
        raw: list[Chunk] = []
        read = self.ds.id.read_direct_chunk
        for offset in itertools.product(*ranges):
            try:
                mask, data = read(offset)
            except (OSError, RuntimeError, ValueError):
                return None  # e.g. a chunk never written: let h5py fill it
            if mask:
                return None  # a filter was skipped for this chunk
            raw.append((offset, data))
        return raw

    def _read_h5py(self, slab: _Slab) -> None:
        if len(slab.out):
            self.ds.read_direct(slab.out, np.s_[slab.start:slab.stop], np.s_[0:len(slab.out)])

    def _decode_into(self, slab: _Slab, chunks: list[Chunk]) -> None:
        """Inflate (and unshuffle) `chunks` and copy each one's part into the slab."""
        assert self.chunks is not None
        cshape = tuple(self.chunks)
        itemsize = self.dtype.itemsize
        nbytes = itemsize * math.prod(cshape)
        shape = self.ds.shape
        for offset, data in chunks:
            for code in self.decoders or ():
                if code == h5z.FILTER_DEFLATE:
                    data = inflate(data, nbytes)
                else:
                    data = _unshuffle(data, itemsize)
            chunk = np.frombuffer(data, self.dtype).reshape(cshape)
            dst, src = [], []
            for axis, (o, c) in enumerate(zip(offset, cshape)):
                lo = max(o, slab.start) if axis == 0 else o
                hi = min(o + c, slab.stop if axis == 0 else shape[axis])
                base = slab.start if axis == 0 else 0
                dst.append(slice(lo - base, hi - base))
                src.append(slice(lo - o, hi - o))
            slab.out[tuple(dst)] = chunk[tuple(src)]


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
