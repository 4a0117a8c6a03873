"""What a local shard is filled from: Redis where it holds the generation, else the file.

Used by `CachedWindowDataset` (on first use of a file generation), `WindowCache.fill_local`
and `syncd warm --local`. Windows come from Redis in large MGETs received straight into
the new shard's mapping (checksums checked, as for a batch), the rest from the HDF5
file in sequential slabs; labels from Redis, else the file. The file's size, mtime and
inode are compared before and after: a file rewritten meanwhile fails the fill (a
ShardError), so a shard never holds anything but its own generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from legacy_adapters.hdf5 import FileSig, Layout, open_h5
from legacy_adapters.hdf5_slabs import read_windows
from syncd.client.cluster_mget import Mget
from syncd.client.local_tier import LocalTier
from syncd.client.mget import HIT, MgetError
from syncd.client.mget_targets import decode_into_targets, mget_into_targets
from syncd.client.sealed import decode_sealed
from syncd.client.shards import Generation, Shard, ShardError
from syncd.connect.redis_urls import RedisClient, mget_any
from syncd.sinks.cache import CacheError, FileMeta, Keys, check_dtype

MGET_WINDOWS = 128  # windows per MGET while filling
SLAB_WINDOWS = 64  # windows per HDF5 read while filling


@dataclass
class FillSource:
    """Where one file generation's windows can be read: Redis (`meta` of the same
    generation, with `direct` or `client`) and/or the file itself (`path`, if here)."""

    gen: Generation
    keys: Keys
    meta: FileMeta | None = None
    direct: Mget | None = None
    client: RedisClient | None = None
    bad: int = 0  # cached values that failed their checks (read from the file instead)

    @classmethod
    def of_meta(cls, meta: FileMeta, keys: Keys, **clients: Any) -> FillSource:
        gen = Generation(meta.path, meta.size, meta.mtime_ns, meta.ino, *meta.layout)
        return cls(gen, keys, meta, **clients)

    @property
    def layout(self) -> Layout:
        return Layout(self.gen.windows, self.gen.labels)

    def _same_file(self) -> Path:
        """The file's path, if it is here and still this generation (else a ShardError)."""
        path = Path(self.gen.path)
        try:
            sig = FileSig.of(path)
        except FileNotFoundError:
            raise ShardError(f"{path} is not on this host and Redis lacks windows of "
                             "it") from None
        if (sig.size, sig.mtime_ns, sig.ino) != self.gen.stat():
            raise ShardError(f"{path} changed")
        return path

    def _file(self) -> Any:
        return open_h5(self._same_file())

    def shape(self) -> tuple[int, tuple[int, ...], np.dtype, tuple[int, ...]]:
        """(windows, window shape, label dtype, label shape) of the generation."""
        if self.meta is not None:
            m = self.meta
            return m.n_windows, m.shape, check_dtype(m.label_dtype), tuple(m.label_shape)
        with self._file() as f:
            w, lab = f[self.gen.windows], f[self.gen.labels]
            return (int(w.shape[0]), tuple(w.shape[1:]), lab.dtype.newbyteorder("="),
                    tuple(lab.shape[1:]))

    def write(self, windows: np.ndarray, labels: np.ndarray,
              progress: Callable[[int], None] | None = None) -> None:
        """Fill a new shard's arrays; raises ShardError when the generation cannot be
        read whole (the file changed, or is elsewhere and Redis lacks some of it)."""
        n = len(windows)
        missing = list(range(n)) if self.meta is None else self._from_redis(windows, progress)
        labels_done = self.meta is not None and self._labels_from_redis(labels)
        if missing or not labels_done:
            with self._file() as f:
                for a in range(0, len(missing), SLAB_WINDOWS):
                    part = missing[a:a + SLAB_WINDOWS]
                    if part[-1] - part[0] + 1 == len(part):
                        windows[part[0]:part[-1] + 1] = f[self.gen.windows][part[0]:part[-1] + 1]
                    else:
                        windows[part] = read_windows(f, self.layout, part)
                    if progress is not None:
                        progress(len(part))
                if not labels_done:
                    labels[...] = f[self.gen.labels][()]
            self._same_file()  # still the same generation after reading it

    def _from_redis(self, windows: np.ndarray, progress: Callable[[int], None] | None
                    ) -> list[int]:
        """Receive every cached window into `windows`; the indices Redis did not give."""
        meta = self.meta
        assert meta is not None
        missing: list[int] = []
        for a in range(0, len(windows), MGET_WINDOWS):
            b = min(len(windows), a + MGET_WINDOWS)
            keys = self.keys.windows(meta.fid, meta.gen, range(a, b))
            targets = list(windows[a:b])
            try:
                if self.direct is not None:
                    status = mget_into_targets(self.direct, keys, [meta] * (b - a), targets)
                elif self.client is not None:
                    status = decode_into_targets(mget_any(self.client, keys), keys,
                                                 [meta] * (b - a), targets)
                else:
                    status = [0] * (b - a)
            except (MgetError, redis.RedisError):
                status = [0] * (b - a)
                self.direct = self.client = None  # down: the rest from the file
            self.bad += sum(1 for s in status if s not in (HIT, 0))
            missing += [a + i for i, s in enumerate(status) if s != HIT]
            if progress is not None:
                progress(b - a - sum(1 for s in status if s != HIT))
        return missing

    def _labels_from_redis(self, labels: np.ndarray) -> bool:
        meta = self.meta
        if meta is None or self.client is None:
            return False
        key = self.keys.labels(meta.fid, meta.gen)
        try:
            value = decode_sealed(key, self.client.get(key), check_dtype(meta.label_dtype),
                                  (meta.n_windows, *meta.label_shape))
        except (CacheError, redis.RedisError):
            return False
        if value is None or value.shape != labels.shape:
            return False
        labels[...] = value
        return True


def fill_shard(tier: LocalTier, source: FillSource, wait: bool = False,
               progress: Callable[[int], None] | None = None) -> Shard | None:
    """The generation's shard, built from `source` if the tier has none (None: another
    process is filling it, or it does not fit). Raises ShardError when it cannot be read."""
    n, shape, label_dtype, label_shape = source.shape()
    return tier.fill(source.gen, n, shape, label_dtype, label_shape,
                     lambda w, lab: source.write(w, lab, progress), wait=wait)
