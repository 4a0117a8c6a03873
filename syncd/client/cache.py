"""Reading the Redis window and feature cache: what the Dataset and `syncd cache stats` use.

Every value's length and checksum are checked before it becomes an array; a value
that fails is a miss (counted in `bad_values`), never data, and metadata that does
not parse is a miss too (listed in `stats()["unreadable_metadata"]`). Nothing read
from Redis is unpickled or evaluated. The key layout and the writes are
`syncd.sinks.cache`'s: `WindowCache` adds the reads to that writer, so new code can
also fill collections of its own (`register`, `put_windows`) and follow the events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import redis

from syncd.client.local_fill import FillSource, fill_shard
from syncd.client.local_tier import LocalTier
from syncd.client.sealed import decode, decode_sealed
from syncd.client.shards import Generation, Shard
from syncd.connect.redis_urls import mget_any, server_info
from syncd.sinks.cache import (
    DEFAULT_PREFIX,
    EVENTS_MAXLEN,
    MAX_VALUE_BYTES,
    CacheError,
    CacheWriter,
    FeatureMeta,
    FileMeta,
    Keys,
    check_dtype,
    feature_key,
)
from syncd.sinks.events import publish_event, tail

__all__ = ["DEFAULT_PREFIX", "MAX_VALUE_BYTES", "CacheError", "FeatureMeta", "FileMeta", "Keys",
           "WindowCache", "check_dtype", "decode", "decode_sealed", "read_file_meta"]

log = logging.getLogger(__name__)


def read_file_meta(client: redis.Redis, keys: Keys, path: str) -> FileMeta | None:
    """The metadata Redis holds for the file at `path` (None: not cached); raises
    CacheError when it does not parse (callers read that as a miss too)."""
    fid = client.hget(keys.files, path)
    raw = client.hgetall(keys.file(fid.decode())) if fid else {}
    return FileMeta.from_hash(raw) if raw else None


class WindowCache(CacheWriter):
    """Get windows, labels and features; statistics; events. Safe by construction.

    With `local_tier` (syncd.client.local_tier, e.g. `LocalTier(local_tier_options(s))`),
    windows and labels of a generation that has a local shard on this host are read
    from it (read-only arrays over the mapping); `fill_local` makes one.
    """

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX,
                 max_value_bytes: int = MAX_VALUE_BYTES,
                 local_tier: LocalTier | None = None,
                 events_maxlen: int = EVENTS_MAXLEN) -> None:
        super().__init__(client, prefix, max_value_bytes, events_maxlen)
        self.bad_values = 0  # values that failed their length or checksum check (read as misses)
        self.local_tier = local_tier
        self._shards: dict[str, Shard] = {}

    def files(self) -> list[FileMeta]:
        """Every cached file's metadata (unreadable ones are left out, see `unreadable`)."""
        out = []
        for fid in sorted(set(self.redis.hvals(self.keys.files))):
            text = fid.decode(errors="replace")
            meta = self._parse(text, self.redis.hgetall(self.keys.file(text)))
            if meta is not None:
                out.append(meta)
        return out

    # -- windows and labels --------------------------------------------------------

    def get_window(self, ref: FileMeta | str, index: int) -> np.ndarray | None:
        return self.get_windows(ref, [index])[0]

    # -- the local tier -------------------------------------------------------------

    @staticmethod
    def generation(meta: FileMeta) -> Generation:
        """The file generation `meta` describes, as the local tier names it."""
        return Generation(meta.path, meta.size, meta.mtime_ns, meta.ino, *meta.layout)

    def local_shard(self, ref: FileMeta | str) -> Shard | None:
        """The generation's local shard on this host, if the tier has one (kept open)."""
        if self.local_tier is None:
            return None
        gen = self.generation(self._meta(ref))
        shard = self._shards.get(gen.key())
        if shard is None:
            shard = self.local_tier.open(gen)
            if shard is not None:
                self._shards[gen.key()] = shard
        return shard

    def fill_local(self, ref: FileMeta | str, progress: Any = None,
                   wait: bool = True) -> Shard | None:
        """Make the generation's local shard (from Redis, the rest from the file if it is
        on this host). None: it does not fit the budget (or another process fills it and
        `wait` is false). Raises ShardError when it cannot be read whole."""
        if self.local_tier is None:
            raise ValueError("WindowCache has no local_tier")
        meta = self._meta(ref)
        source = FillSource.of_meta(meta, self.keys, client=self.redis)
        shard = fill_shard(self.local_tier, source, wait=wait, progress=progress)
        self.bad_values += source.bad
        if shard is not None:
            self._shards[shard.gen.key()] = shard
        return shard

    def get_windows(self, ref: FileMeta | str, indices: Sequence[int]) -> list[np.ndarray | None]:
        """Windows by index: from the local shard if there is one, else with one MGET;
        None for each one not cached."""
        meta = self._meta(ref)
        if not indices:
            return []
        shard = self.local_shard(meta)
        if shard is not None:
            return [shard.windows[i] for i in indices]
        keys = self.keys.windows(meta.fid, meta.gen, indices)
        return self._decode_all(keys, mget_any(self.redis, keys), meta.dtype, meta.shape)

    def _decode_all(self, keys: list[str], values: list[bytes | None], dtype: np.dtype,
                    shape: tuple[int, ...]) -> list[np.ndarray | None]:
        """Values as arrays; missing ones and ones that fail their checks (counted) are None."""
        out: list[np.ndarray | None] = []
        for key, value in zip(keys, values):
            try:
                out.append(decode_sealed(key, value, dtype, shape))
            except CacheError as exc:
                self.bad_values += 1
                log.warning("ignoring a bad cached value (%s)", exc)
                out.append(None)
        return out

    def get_labels(self, ref: FileMeta | str) -> np.ndarray | None:
        meta = self._meta(ref)
        shard = self.local_shard(meta)
        if shard is not None:
            return shard.labels
        key = self.keys.labels(meta.fid, meta.gen)
        return self._decode_all([key], [self.redis.get(key)], check_dtype(meta.label_dtype),
                                (meta.n_windows, *meta.label_shape))[0]

    # -- features ------------------------------------------------------------------

    def feature_meta(self, meta: FileMeta, extractor: str) -> FeatureMeta:
        """The extractor by key (`band_power-1a2b3c4d`) or by name (if only one has it)."""
        if extractor in meta.features:
            return meta.features[extractor]
        named = [k for k, f in meta.features.items() if f.name == extractor]
        if len(named) != 1:
            known = ", ".join(sorted(meta.features)) or "none"
            raise KeyError(f"no features {extractor!r} for {meta.path} (cached: {known})")
        return meta.features[named[0]]

    def get_features(self, ref: FileMeta | str, indices: Sequence[int],
                     extractor: str) -> list[np.ndarray | None]:
        meta = self._meta(ref)
        fm = self.feature_meta(meta, extractor)
        fkey = feature_key(fm.name, fm.params)
        keys = self.keys.features(meta.fid, meta.gen, fkey, indices)
        return self._decode_all(keys, mget_any(self.redis, keys), check_dtype(fm.dtype),
                                tuple(fm.shape))

    # -- statistics and events -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Coverage per file and overall, and Redis' own memory and hit counters."""
        info = server_info(self.redis, "memory")
        counters = server_info(self.redis, "stats")
        self.unreadable.clear()
        files = self.files()
        total = sum(m.n_windows for m in files)
        cached = sum(min(m.cached, m.n_windows) for m in files)
        hits, misses = counters.get("keyspace_hits", 0), counters.get("keyspace_misses", 0)
        return {
            "files": len(files),
            "windows_total": total,
            "windows_cached": cached,
            "coverage": round(cached / total, 4) if total else None,
            "used_memory": info.get("used_memory"),
            "maxmemory": info.get("maxmemory"),
            "evicted_keys": counters.get("evicted_keys", 0),
            "keyspace_hits": hits,
            "keyspace_misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
            "unreadable_metadata": [{"fid": fid, "error": error}
                                    for fid, error in sorted(self.unreadable.items())],
            "per_file": [{"path": m.path, "generation": m.gen, "cached": m.cached,
                          "windows": m.n_windows, "features": sorted(m.features)}
                         for m in files],
        }

    def publish(self, event: Mapping[str, Any]) -> str:
        """Append a JSON event to the events stream (trimmed to ~`events_maxlen`, as
        `[daemon] events_maxlen` trims it) and announce it on pub/sub."""
        return publish_event(self.redis, self.keys.events, event, self.events_maxlen)

    def subscribe(self, last_id: str = "$", block_ms: int = 1000,
                  stop: Any = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events after `last_id` ("0" for the retained history, "$" for new ones only).

        Yields `(id, event)`; pass the last id back in to resume without a gap. Stops
        when `stop()` returns true (checked every `block_ms`), else runs forever.
        """
        yield from tail(self.redis, self.keys.events, last_id, block_ms, stop=stop)
