"""Which tier serves each file of a `CachedWindowDataset`: local shard, Redis, or the file.

Per file generation, in each process (the training process and every DataLoader
worker): the host's local shard when there is one, else, while the tier has room,
one is filled (from Redis where it holds this generation, else from the file; by one
process at a time: the others serve that file from Redis meanwhile and look again
after the Dataset's recheck interval), else Redis, else the HDF5 file.

Generation changes: before each batch every file of the batch is stat'ed (as for the
Redis path); a size, mtime or inode different from the shard's generation drops the
shard at once, so a rewritten file is never served from the old shard, and its new
generation's shard is looked for (or filled) within the recheck interval.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from legacy_adapters.hdf5 import FileSig, Layout
from syncd.client.batches import WindowBatch, batch_arrays, gather_labels
from syncd.client.cache import FileMeta
from syncd.client.cluster_mget import Mget
from syncd.client.local_fill import FillSource, fill_shard
from syncd.client.local_reads import gather_labels_of, gather_windows, pinned_empty
from syncd.client.local_tier import LocalTier
from syncd.client.shards import Generation, Shard, ShardError
from syncd.connect.redis_urls import RedisClient

log = logging.getLogger(__name__)


@dataclass
class LocalFiles:
    """One process' shards for a Dataset's files (the same generation listed twice
    shares one mapping)."""

    tier: LocalTier
    recheck_seconds: float
    of_file: list[Shard | None]
    retry_at: list[float]
    shards: dict[str, Shard] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    # every file's labels in Dataset order, and the shards they were taken from
    all_labels: tuple[list[Shard | None], np.ndarray] | None = None

    @classmethod
    def new(cls, tier: LocalTier, n_files: int, recheck_seconds: float) -> LocalFiles:
        return cls(tier, recheck_seconds, [None] * n_files, [0.0] * n_files)

    def shard_for(self, j: int, gen: Generation | None,
                  source: Callable[[Generation], FillSource],
                  size: tuple[int, tuple[int, ...]]) -> Shard | None:
        """File j's shard for `gen` (the file as it is now; None: the file is gone, and
        the shard held, if any, is trusted as Redis is), else None. `size`: the windows
        and window shape the Dataset's offsets were built with; a generation of another
        size (the file rewritten shorter or longer) is not served from its shard, whose
        indices would not match the offsets (the Redis and file path then serves it, or
        raises IndexError past its end)."""
        shard = self.of_file[j]
        if shard is not None and (gen is None or shard.gen == gen):
            return shard
        if shard is not None:  # the file changed: never again from this shard
            self.of_file[j] = None
            self._release(shard)
        if gen is None or time.monotonic() < self.retry_at[j]:
            return None
        shard = self.shards.get(gen.key()) or self.tier.open(gen)
        if shard is None:
            self.tier.busy = False
            try:
                shard = fill_shard(self.tier, source(gen))
            except (ShardError, OSError) as exc:  # OSError: the tier's disk (full, read-only)
                log.warning("local tier: %s not filled (%s); served from Redis", gen.path, exc)
        if shard is None:  # another process filling it: look again next batch
            self.retry_at[j] = time.monotonic() + (0 if self.tier.busy else
                                                   self.recheck_seconds)
            return None
        self.shards[gen.key()] = shard
        if (shard.layout.n, shard.layout.shape) != size:
            self._release(shard)
            self.retry_at[j] = time.monotonic() + self.recheck_seconds
            return None
        self.of_file[j] = shard
        return shard

    def _release(self, shard: Shard) -> None:
        if all(s is not shard for s in self.of_file):
            self.shards.pop(shard.gen.key(), None)
            shard.close()

    def count(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses
        self.tier.count(hits=hits, misses=misses)

    def close(self) -> None:
        for shard in self.shards.values():
            shard.close()
        self.shards.clear()
        self.of_file = [None] * len(self.of_file)
        self.tier.flush()


def local_batch(files: LocalFiles, file_of: np.ndarray, local: np.ndarray, idx: np.ndarray,
                out: np.ndarray) -> np.ndarray | None:
    """Fill `out` (the batch's windows) from the shards of every file of the batch, all
    held already; the labels as one array (None: shapes or dtypes differ)."""
    gather_windows(files.of_file, file_of, local, out)
    files.count(len(local), 0)
    held = files.of_file
    if files.all_labels is not None and all(a is b for a, b in zip(files.all_labels[0], held)):
        return files.all_labels[1][idx]
    shards = [s for s in held if s is not None]
    if len(shards) == len(held) and \
            len({(s.labels.dtype, s.labels.shape[1:]) for s in shards}) == 1:
        files.all_labels = (list(shards), np.concatenate([s.labels for s in shards]))
        return files.all_labels[1][idx]
    return gather_labels_of(held, file_of, local)


@dataclass
class FileSpec:
    """What is fixed at construction: the file, its layout and its length."""

    path: str
    layout: Layout
    n: int
    shape: tuple[int, ...]  # one window's


@dataclass
class FileState:
    """Per-worker state of one file: cache metadata, labels, the open handle."""

    meta: FileMeta | None = None
    miss: Any = None  # the file's stat when the cache last had nothing for it
    recheck_at: float = 0.0
    labels: np.ndarray | None = None
    labels_sig: tuple[Any, ...] | None = None
    handle: Any = None
    handle_sig: FileSig | None = None


@dataclass
class ProcessState:
    pid: int
    redis: RedisClient | None
    files: list[FileState] = field(default_factory=list)
    direct: Mget | None = None
    redis_down_until: float = 0.0
    hits: int = 0
    misses: int = 0
    bad: int = 0  # cached values that failed their length or checksum check (also misses)
    local: LocalFiles | None = None  # the host's local tier (None: off)


class LocalSide:
    """The local-tier part of `CachedWindowDataset` (a mixin over its settings and state)."""

    specs: list[FileSpec]
    keys: Any
    label_dtype: torch.dtype
    pin_memory: bool

    def _local_batch(self, st: ProcessState, files: np.ndarray, locals_: np.ndarray,
                     idx: np.ndarray) -> WindowBatch:
        """Every file of the batch has its local shard: one read into one tensor."""
        assert st.local is not None
        shape = (len(files), *self.specs[int(files[0])].shape)
        batch, buffer, whole = batch_arrays(shape, pinned_empty if self.pin_memory else None)
        labels = local_batch(st.local, files, locals_, idx, whole)
        if labels is None:
            rows = [st.local.of_file[j].labels[i]  # type: ignore[union-attr]
                    for j, i in zip(files.tolist(), locals_.tolist())]
            return WindowBatch(batch, gather_labels(rows, self.label_dtype), buffer) \
                if len({np.shape(r) for r in rows}) == 1 else \
                list(zip(batch.unbind(0), gather_labels(rows, self.label_dtype)))
        return WindowBatch(batch, torch.from_numpy(labels).to(self.label_dtype), buffer)

    def _held(self, st: ProcessState, wanted: set[int]) -> dict[int, Shard]:
        """The local shards of the batch's files that have one (filling one if none)."""
        assert st.local is not None
        held = {}
        for j in wanted:
            spec = self.specs[j]
            try:
                st_ = os.stat(spec.path)
                gen: Generation | None = Generation(spec.path, st_.st_size, st_.st_mtime_ns,
                                                    st_.st_ino, spec.layout.windows,
                                                    spec.layout.labels)
            except FileNotFoundError:
                gen = None
            shard = st.local.shard_for(j, gen, lambda g, j=j: self._fill_source(st, j, g),
                                       (spec.n, spec.shape))
            if shard is not None:
                held[j] = shard
        return held

    def _fill_source(self, st: ProcessState, j: int, gen: Generation) -> FillSource:
        meta = self._current_meta(st, j)
        if meta is not None and meta.stat() != gen.stat():
            meta = None
        return FillSource(gen, self.keys, meta, direct=self._direct(st),
                          client=self._redis(st))

    def local_counts(self) -> dict[str, int]:
        """Windows served from the host's local tier (`hits`) and not (`misses`), and
        shards this process filled (`fills`) or found bad (`bad`), in this process."""
        st = self._state()
        if st.local is None:
            return {"hits": 0, "misses": 0, "fills": 0, "bad": 0}
        counts = st.local.tier.counts
        return {"hits": st.local.hits, "misses": st.local.misses, "fills": counts["fills"],
                "bad": counts["bad"]}
