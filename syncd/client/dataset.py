"""`CachedWindowDataset`: the legacy h5py window Dataset, served from Redis.

Same length, order and values as reading the HDF5 files directly: item `i` is
`(eeg, label)` with `eeg` a float32 tensor `(channels, times)` and `label` a
float32 tensor (as the legacy `HDF5Dataset` returned them). Batches are fetched
with one MGET (`__getitems__`, which DataLoader uses) into one batch tensor, and
anything not in Redis (not warmed yet, over the memory budget, evicted, Redis down)
is read from the HDF5 file into it instead. DataLoader's default collate (and
`collate_fn=collate_windows`) hands that tensor to the training loop without copying
it (syncd.client.batches).

Consistency: before each batch the dataset compares every file's size, mtime and
inode with what the cache recorded for its current generation. When they differ
(the file was rewritten and not re-warmed yet) that file's items come from the
file itself, so one batch never mixes two versions of a file.

Connections and file handles are opened lazily in each DataLoader worker (nothing
but plain settings is pickled), files without HDF5 locks, as syncd itself does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("syncd.client.dataset needs torch: pip install torch==2.13.0 (the CPU "
                      "wheel), then pip install '.[torch]' in the syncd clone") from exc

import redis

from legacy_adapters.hdf5 import FileSig, Layout, open_h5
from legacy_adapters.hdf5_slabs import read_windows
from syncd.client.batches import (
    WindowBatch,
    collate_windows,
    decode_into_targets,
    gather_labels,
    mget_into_targets,
    targets_for,
)
from syncd.client.cache import (
    CacheError,
    FileMeta,
    Keys,
    check_dtype,
    decode_sealed,
    read_file_meta,
)
from syncd.client.cluster_mget import Mget, open_direct
from syncd.client.dataset_sources import (
    FileSpec,
    FileState,
    LocalFiles,
    LocalSide,
    ProcessState,
)
from syncd.client.layouts import dataset_defaults, pick_layout, recorded_layouts
from syncd.client.local_tier import LocalTier, LocalTierOptions
from syncd.client.mget import BAD, HIT, MgetError
from syncd.connect.redis_urls import RedisClient, mget_any
from syncd.hdf5.files import paths_matching
from syncd.sinks.checksum import FORMAT

__all__ = ["CachedWindowDataset", "collate_windows"]

log = logging.getLogger(__name__)

RETRY_REDIS_SECONDS = 5.0
RECHECK_SECONDS = 1.0
CHUNK_CACHE_BYTES = 16 << 20


class CachedWindowDataset(LocalSide, Dataset):
    """Windows of HDF5 files, from the Redis cache syncd keeps warm, else from the files.

    Args:
        files: HDF5 paths, in the order their windows are numbered (as the legacy Dataset).
        query: instead of `files`, a MongoDB filter on `hdf5_files` (needs `db`);
            files are taken in path order, quarantined ones left out.
        db: the syncd target database (only used here, in the constructor).
        config: the syncd TOML file (as `--config`); default SYNCD_CONFIG, as the CLI.
            Its `[hdf5] layouts` and `[cache] prefix` are the Dataset's defaults.
        redis_url: the cache; default SYNCD_REDIS_URL, else the embedded Redis running
            for `state_dir` (default SYNCD_STATE_DIR or ./.syncd); None found: the local
            tier (filled from the files), else the files.
        prefix: the cache's key prefix; default `[cache] prefix` of the settings ("syncd").
        layouts: `(windows, labels)` dataset names to look for; default the layout syncd
            recorded when it indexed the file (Redis, or `db`), else the first of
            `[hdf5] layouts` (default `eeg`+`labels`, `data`+`targets`) the file has.
        label_dtype: the labels' tensor dtype (float32, as the legacy Dataset).
        recheck_seconds: how long a file found uncached is served from the file before
            the cache is asked again (it may have been warmed meanwhile), and a file
            without a local shard from Redis before the local tier is asked again.
        local_dir, local_bytes: the host's local tier (shards of the file generations
            read, memory-mapped by every process; syncd.client.local_tier) and its byte
            budget; default `[cache] local_dir` and `local_bytes` (0: no local tier).
        pin_memory: in the training process (`num_workers=0`), read batches straight
            into page-locked memory (with CUDA), as `DataLoader(pin_memory=True)` wants.
    """

    def __init__(self, files: Sequence[str | Path] | None = None, *,
                 query: Mapping[str, Any] | None = None, db: Any = None,
                 config: str | Path | None = None,
                 redis_url: str | None = None, state_dir: str | Path | None = None,
                 prefix: str | None = None,
                 layouts: Sequence[tuple[str, str]] | None = None,
                 label_dtype: torch.dtype = torch.float32,
                 recheck_seconds: float = RECHECK_SECONDS,
                 local_dir: str | Path | None = None, local_bytes: int | None = None,
                 pin_memory: bool = False) -> None:
        if (files is None) == (query is None):
            raise ValueError("pass either files or query (with db)")
        if query is not None:
            if db is None:
                raise ValueError("query needs db (the syncd MongoDB database)")
            files = paths_matching(db, query)
        assert files is not None
        found = dataset_defaults(config, state_dir)
        self.redis_url = redis_url or found.redis_url
        self.prefix = prefix or found.prefix
        self.keys = Keys(self.prefix)
        paths = [Path(p).absolute() for p in files]
        self.layouts = found.layouts if layouts is None else [Layout(*pair) for pair in layouts]
        recorded = {} if layouts is not None else \
            recorded_layouts(paths, db, self.redis_url, self.keys)
        self.specs = [self._spec(p, recorded.get(str(p))) for p in paths]
        self.offsets = np.cumsum([0] + [s.n for s in self.specs])
        self.label_dtype = label_dtype
        self.recheck_seconds = recheck_seconds
        self.local_tier = LocalTierOptions(
            Path(local_dir) if local_dir is not None else found.local.directory,
            found.local.budget if local_bytes is None else int(local_bytes))
        self.pin_memory = pin_memory
        self._local: ProcessState | None = None
        if self.redis_url is None:
            # Without Redis the local tier still fills from the files and serves them.
            where = (f"this host's local tier ({self.local_tier.directory}), filled from the "
                     "HDF5 files" if self.local_tier.budget > 0 else "the HDF5 files")
            log.warning("no Redis cache found (no redis_url, SYNCD_REDIS_URL or running "
                        "embedded Redis): windows are read from %s", where)

    def _spec(self, path: Path, recorded: Layout | None) -> FileSpec:
        with open_h5(path) as f:
            layout = pick_layout(f, path, recorded, self.layouts)
            shape = f[layout.windows].shape
            return FileSpec(str(path), layout, int(shape[0]), tuple(shape[1:]))

    # -- pickling for DataLoader workers: settings only, no connection or handle ----------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_local"] = None
        return state

    def _state(self) -> ProcessState:
        local = self._local
        if local is None or local.pid != os.getpid():
            from syncd.connect.redis import reader_redis

            client = reader_redis(self.redis_url)
            local = ProcessState(os.getpid(), client, [FileState() for _ in self.specs])
            if self.local_tier.budget > 0:
                local.local = LocalFiles.new(LocalTier(self.local_tier), len(self.specs),
                                             self.recheck_seconds)
            self._local = local
        return local

    # -- Dataset ---------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch: one MGET for every cached window, the files for the rest, all into
        one tensor (a `WindowBatch`, see syncd.client.batches) when shapes agree."""
        n = len(self)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a dataset of {n} windows")
        idx = np.where(idx < 0, idx + n, idx)
        files = np.searchsorted(self.offsets, idx, side="right") - 1
        locals_ = idx - self.offsets[files]
        st = self._state()
        held = self._held(st, set(files.tolist())) if st.local is not None else {}
        if held and len(held) == len(set(files.tolist())) and len(idx) and \
                len({self.specs[j].shape for j in held}) == 1:
            return self._local_batch(st, files, locals_, idx)
        file_of, local_of = files.tolist(), locals_.tolist()
        metas = {j: self._current_meta(st, j) for j in set(file_of) if j not in held}
        batch, buffer, targets = targets_for([self.specs[j].shape for j in file_of])
        filled = [False] * len(idx)
        rows: list[Any] = [None] * len(idx)
        for p, j in enumerate(file_of):
            if j in held:
                targets[p][...] = held[j].windows[local_of[p]]
                rows[p], filled[p] = held[j].labels[local_of[p]], True
        if st.local is not None:
            st.local.count(sum(filled), len(idx) - sum(filled))
        positions = [p for p, j in enumerate(file_of) if metas.get(j) is not None]
        if positions:
            self._fetch(st, [(p, metas[file_of[p]], local_of[p]) for p in positions],
                        targets, filled)
        st.hits += sum(1 for p in positions if filled[p])
        for j in sorted(metas):
            mine = [p for p, f in enumerate(file_of) if f == j]
            misses = [p for p in mine if not filled[p]]
            st.misses += len(misses)
            if misses:
                data = read_windows(self._handle(st, j), self.specs[j].layout,
                                    [local_of[p] for p in misses])
                for p, w in zip(misses, data):
                    targets[p][...] = w
            lab = self._labels(st, j, metas[j])
            for p in mine:
                rows[p] = lab[local_of[p]]
        labels = gather_labels(rows, self.label_dtype)
        if batch is not None and isinstance(labels, torch.Tensor):
            return WindowBatch(batch, labels, buffer)
        eeg = list(batch.unbind(0)) if batch is not None else \
            [torch.from_numpy(t) for t in targets]
        return list(zip(eeg, labels))

    def _fetch(self, st: ProcessState, wanted: list[tuple[int, FileMeta, int]],
               targets: list[np.ndarray], filled: list[bool]) -> None:
        """Fill `targets[p]` (and set `filled[p]`) for every cached window in `wanted`
        (position, metadata, index): received in place, its checksum checked."""
        keys = [self.keys.window(m.fid, m.gen, i) for _, m, i in wanted]
        metas = [m for _, m, _ in wanted]
        mine = [targets[p] for p, _, _ in wanted]
        direct = self._direct(st)
        if direct is None:
            status = decode_into_targets(self._mget(st, keys), keys, metas, mine)
        else:
            try:
                status = mget_into_targets(direct, keys, metas, mine)
            except MgetError as exc:
                self._redis_failed(st, exc)
                return
        for (p, meta, _), key, s in zip(wanted, keys, status):
            if s == HIT:
                filled[p] = True
            elif s == BAD:
                st.bad += 1
                log.warning("%s: ignoring a bad cached value under %s (wrong length or "
                            "checksum)", meta.path, key)

    def _direct(self, st: ProcessState) -> Mget | None:
        """The worker's direct MGET connection (None: Redis down, or a URL it cannot serve)."""
        if self.redis_url is None or time.monotonic() < st.redis_down_until:
            return None
        if st.direct is None and not self.redis_url.startswith("rediss"):
            try:
                st.direct = open_direct(self.redis_url, timeout=10.0)
            except MgetError as exc:
                self._redis_failed(st, exc)
        return st.direct

    # -- the cache side ----------------------------------------------------------------

    def _redis(self, st: ProcessState) -> RedisClient | None:
        if st.redis is None or time.monotonic() < st.redis_down_until:
            return None
        return st.redis

    def _redis_failed(self, st: ProcessState, exc: Exception) -> None:
        log.warning("Redis is unavailable (%s); reading from the HDF5 files for %.0f s",
                    exc, RETRY_REDIS_SECONDS)
        st.redis_down_until = time.monotonic() + RETRY_REDIS_SECONDS
        if st.direct is not None:
            st.direct.close()
            st.direct = None
        for fs in st.files:
            fs.meta = None

    def _mget(self, st: ProcessState, keys: list[str]) -> list[bytes | None]:
        client = self._redis(st)
        if client is None:
            return [None] * len(keys)
        try:
            return mget_any(client, keys)
        except redis.RedisError as exc:
            self._redis_failed(st, exc)
            return [None] * len(keys)

    def _current_meta(self, st: ProcessState, j: int) -> FileMeta | None:
        """The cache's metadata for file j if it describes the file as it is now, else None."""
        fs = st.files[j]
        spec = self.specs[j]
        try:
            sig = FileSig.of(Path(spec.path))
            now: tuple[int, int, int] | None = (sig.size, sig.mtime_ns, sig.ino)
        except FileNotFoundError:
            now = None  # no file to compare with or fall back to: trust the cache
        if fs.meta is not None and (now is None or fs.meta.stat() == now):
            return fs.meta
        if fs.miss == now and time.monotonic() < fs.recheck_at:
            return None
        fs.meta = None
        client = self._redis(st)
        if client is not None:
            try:
                meta = read_file_meta(client, self.keys, spec.path)
            except redis.RedisError as exc:
                self._redis_failed(st, exc)
                meta = None
            except CacheError as exc:
                log.warning("%s: ignoring unreadable cache metadata (%s)", spec.path, exc)
                meta = None
            if meta is not None and (now is None or meta.stat() == now) \
                    and meta.layout == [spec.layout.windows, spec.layout.labels] \
                    and meta.format == FORMAT:
                fs.meta = meta
                return meta
        # Not cached for this version (yet): serve the file, look again in a second.
        fs.miss, fs.recheck_at = now, time.monotonic() + self.recheck_seconds
        return None

    def _labels(self, st: ProcessState, j: int, meta: FileMeta | None) -> np.ndarray:
        """All labels of file j for the version being served (cache generation or file)."""
        fs = st.files[j]
        if meta is not None:
            ident: tuple[Any, ...] = ("gen", meta.fid, meta.gen)
            if fs.labels_sig == ident and fs.labels is not None:
                return fs.labels
            client = self._redis(st)
            value = None
            key = self.keys.labels(meta.fid, meta.gen)
            if client is not None:
                try:
                    value = client.get(key)
                except redis.RedisError as exc:
                    self._redis_failed(st, exc)
            if value is not None:
                try:
                    fs.labels = decode_sealed(key, value, check_dtype(meta.label_dtype),
                                              (meta.n_windows, *meta.label_shape))
                    fs.labels_sig = ident
                    return fs.labels
                except CacheError as exc:
                    st.bad += 1
                    log.warning("%s: ignoring bad cached labels (%s)", meta.path, exc)
        handle = self._handle(st, j)
        ident = ("file", fs.handle_sig)
        if fs.labels_sig != ident or fs.labels is None:
            fs.labels = np.asarray(handle[self.specs[j].layout.labels][()])
            fs.labels_sig = ident
        return fs.labels

    # -- the HDF5 side -------------------------------------------------------------------

    def _handle(self, st: ProcessState, j: int) -> Any:
        fs = st.files[j]
        path = Path(self.specs[j].path)
        sig = FileSig.of(path)
        if fs.handle is None or fs.handle_sig != sig:
            if fs.handle is not None:
                fs.handle.close()
            fs.handle = open_h5(path, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
            fs.handle_sig = sig
        return fs.handle

    # -- introspection -----------------------------------------------------------------

    def cache_counts(self) -> dict[str, int]:
        """Windows served from Redis and from the files, in this process; `bad`: cached
        values that failed their length or checksum check and were read from the files."""
        st = self._state()
        return {"hits": st.hits, "misses": st.misses, "bad": st.bad}

    def close(self) -> None:
        """Close this process' file handles and Redis connection."""
        st = self._local
        if st is None:
            return
        for fs in st.files:
            if fs.handle is not None:
                fs.handle.close()
                fs.handle = None
        if st.redis is not None:
            st.redis.close()
        if st.direct is not None:
            st.direct.close()
        if st.local is not None:
            st.local.close()
        self._local = None
