"""Reading windows out of an HDF5 file: chunk-aligned slabs for warming, any indices for readers.

For gzip (and shuffle) chunks the raw chunk bytes are fetched from HDF5 and inflated
in worker threads (zlib releases the GIL), so decompression uses every core; other
filters go through h5py. Files are opened without locks (`legacy_adapters.hdf5`).
"""

from __future__ import annotations

import collections
import itertools
import math
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from h5py import h5z

from legacy_adapters.hdf5 import Layout, open_h5

SLAB_BYTES = 8 << 20


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
