"""The Redis window and feature cache: key layout, a safe array codec, and the client.

Replaces the legacy pickle-based cache. Values are raw C-order array bytes with a
CRC-32 trailer (syncd.sinks.checksum); the dtype and shape live beside them in the file's
metadata hash, are checked against a whitelist, and every value's length and
checksum are checked before it becomes an array: a value that fails is a miss
(counted), never data. Metadata that does not parse is a miss too (counted), and the
next warm pass rewrites it. Nothing read from Redis is ever unpickled or evaluated.

Key layout (prefix `cache.prefix`, default "syncd"):

    {p}:files                          hash  path -> file id
    {p}:file:{fid}                     hash  current generation, dtype, shape, stat, coverage
    {p}:w:{fid}:{gen}:{i}              string  window i (raw bytes + checksum)
    {p}:l:{fid}:{gen}                  string  all labels of the file (raw bytes + checksum)
    {p}:f:{fid}:{gen}:{fkey}:{i}       string  features of window i (raw bytes + checksum)
    {p}:events                         stream (and pub/sub channel) of JSON events

Keys carry the generation: when a file changes, its generation goes up, the
metadata hash points at the new one, and the old generation's keys are deleted,
so a reader never mixes windows of two versions of a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis

from syncd.sinks.checksum import CHECKSUM_BYTES, FORMAT, seal, unseal
from syncd.sinks.events import send, tail

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "syncd"
MAX_VALUE_BYTES = 64 << 20
ALLOWED_KINDS = frozenset("fiub")
# Redis' own bookkeeping per string key (dict entry, key and value headers) and the value's
# checksum trailer, for the budget.
KEY_OVERHEAD = 96 + CHECKSUM_BYTES


class CacheError(Exception):
    """A cache value or metadata that fails validation (wrong size, dtype not allowed)."""


def check_dtype(text: str) -> np.dtype:
    """A whitelisted numeric dtype from its `dtype.str` (e.g. '<f4'); anything else is refused."""
    try:
        dtype = np.dtype(str(text))
    except TypeError as exc:
        raise CacheError(f"dtype {text!r} is not a plain numeric dtype") from exc
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.itemsize > 8 or dtype.hasobject:
        raise CacheError(f"dtype {text!r} is not allowed in the cache (numeric and bool only)")
    return dtype


def check_shape(shape: Sequence[Any], dtype: np.dtype, limit: int) -> tuple[int, ...]:
    dims = tuple(int(n) for n in shape)
    if any(n < 0 for n in dims) or len(dims) > 8:
        raise CacheError(f"shape {list(shape)} is not valid")
    if math.prod(dims) * dtype.itemsize > limit:
        raise CacheError(f"shape {list(dims)} of {dtype} exceeds the value limit of {limit} bytes")
    return dims


def encode(array: np.ndarray) -> memoryview:
    """The C-order bytes of `array`, without a copy when it is already contiguous."""
    return np.ascontiguousarray(array).data.cast("B")


def decode(value: bytes | None, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
    """`value` as a read-only array of `dtype` and `shape`; None stays None; a bad length raises."""
    if value is None:
        return None
    expected = dtype.itemsize * math.prod(shape)
    if len(value) != expected:
        raise CacheError(f"cached value has {len(value)} bytes, expected {expected} "
                         f"({dtype} {list(shape)})")
    return np.frombuffer(value, dtype).reshape(shape)


def decode_sealed(key: str, value: bytes | None, dtype: np.dtype,
                  shape: tuple[int, ...]) -> np.ndarray | None:
    """A checksummed value read from `key` as an array; None stays None; a bad one raises."""
    try:
        payload = unseal(key, value, dtype.itemsize * math.prod(shape))
    except ValueError as exc:
        raise CacheError(f"{key}: {exc}") from None
    return None if payload is None else np.frombuffer(payload, dtype).reshape(shape)


def feature_key(name: str, params: Mapping[str, Any]) -> str:
    """The key part of an extractor: its name and a digest of its parameters."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return f"{name}-{hashlib.blake2b(blob.encode(), digest_size=4).hexdigest()}"


@dataclass
class FeatureMeta:
    name: str
    params: dict[str, Any]
    shape: list[int]
    dtype: str
    windows: int = 0


@dataclass
class FileMeta:
    """What Redis records about the current generation of one cached file."""

    fid: str
    gen: int
    path: str
    n_windows: int
    window_shape: list[int]
    window_dtype: str
    label_shape: list[int]
    label_dtype: str
    size: int = 0
    mtime_ns: int = 0
    ino: int = 0
    cached: int = 0  # windows 0..cached-1 are in Redis
    layout: list[str] = field(default_factory=list)
    features: dict[str, FeatureMeta] = field(default_factory=dict)
    format: int = FORMAT  # metadata written before checksums has none: format 1

    @property
    def dtype(self) -> np.dtype:
        return check_dtype(self.window_dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.window_shape)

    @property
    def window_bytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.window_shape)

    def stat(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.ino)

    def to_hash(self) -> dict[str, str]:
        data = asdict(self)
        out = {k: json.dumps(v) for k, v in data.items() if k != "fid"}
        out["fid"] = self.fid
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes], limit: int = MAX_VALUE_BYTES) -> FileMeta:
        """Parse and validate a metadata hash (JSON fields only)."""
        try:
            data = {k.decode(): v.decode() for k, v in raw.items()}
            fields_ = {k: json.loads(v) for k, v in data.items() if k != "fid"}
            fields_.setdefault("format", 1)
            features = {k: FeatureMeta(**v) for k, v in (fields_.pop("features", {}) or {}).items()}
            meta = cls(fid=data["fid"], features=features, **fields_)
            _check_types(meta)
            check_shape(meta.window_shape, check_dtype(meta.window_dtype), limit)
            check_shape([meta.n_windows, *meta.label_shape], check_dtype(meta.label_dtype), limit)
            for f in meta.features.values():
                check_shape(f.shape, check_dtype(f.dtype), limit)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CacheError(f"unreadable file metadata ({type(exc).__name__}: {exc})") from None
        return meta


def _check_types(meta: FileMeta) -> None:
    """JSON that parses is not yet metadata: every field must have the type syncd writes."""
    for name in ("gen", "n_windows", "size", "mtime_ns", "ino", "cached", "format"):
        if type(getattr(meta, name)) is not int:
            raise TypeError(f"{name} is not an integer")
    for name in ("path", "window_dtype", "label_dtype"):
        if not isinstance(getattr(meta, name), str):
            raise TypeError(f"{name} is not a string")
    lists = [meta.window_shape, meta.label_shape, meta.layout]
    lists += [f.shape for f in meta.features.values()]
    if not all(isinstance(v, list) for v in lists):
        raise TypeError("a shape or the layout is not a list")
    for f in meta.features.values():
        if not (isinstance(f.name, str) and isinstance(f.params, dict)
                and type(f.windows) is int):
            raise TypeError("a feature entry is not valid")


class Keys:
    """The key names of one cache prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.files = f"{prefix}:files"
        self.events = f"{prefix}:events"

    def file(self, fid: str) -> str:
        return f"{self.prefix}:file:{fid}"

    def window(self, fid: str, gen: int, index: int) -> str:
        return f"{self.prefix}:w:{fid}:{gen}:{index}"

    def windows(self, fid: str, gen: int, indices: Sequence[int] | range) -> list[str]:
        head = f"{self.prefix}:w:{fid}:{gen}:"
        return [head + str(i) for i in indices]

    def labels(self, fid: str, gen: int) -> str:
        return f"{self.prefix}:l:{fid}:{gen}"

    def feature(self, fid: str, gen: int, fkey: str, index: int) -> str:
        return f"{self.prefix}:f:{fid}:{gen}:{fkey}:{index}"

    def features(self, fid: str, gen: int, fkey: str, indices: Sequence[int] | range) -> list[str]:
        head = f"{self.prefix}:f:{fid}:{gen}:{fkey}:"
        return [head + str(i) for i in indices]


class WindowCache:
    """Get and put windows, labels and features; statistics; events. Safe by construction."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX,
                 max_value_bytes: int = MAX_VALUE_BYTES) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.max_value_bytes = max_value_bytes
        self.unreadable: dict[str, str] = {}  # file id -> why its metadata did not parse
        self.bad_values = 0  # values that failed their length or checksum check (read as misses)

    # -- files ---------------------------------------------------------------------

    def file(self, ref: str) -> FileMeta | None:
        """The metadata of a cached file, by path or file id; None when it is not cached.

        Metadata that does not parse is also None (a miss), recorded in `unreadable`;
        the next warm pass writes it again."""
        fid = self.redis.hget(self.keys.files, str(ref))
        fid_text = fid.decode(errors="replace") if fid else str(ref)
        return self._parse(fid_text, self.redis.hgetall(self.keys.file(fid_text)))

    def _parse(self, fid: str, raw: Mapping[bytes, bytes]) -> FileMeta | None:
        if not raw:
            return None
        try:
            return FileMeta.from_hash(raw, self.max_value_bytes)
        except CacheError as exc:
            log.warning("cache metadata of file id %s is unreadable, treated as not cached "
                        "(%s)", fid, exc)
            self.unreadable[fid] = str(exc)
            return None

    def files(self) -> list[FileMeta]:
        """Every cached file's metadata (unreadable ones are left out, see `unreadable`)."""
        out = []
        for fid in sorted(set(self.redis.hvals(self.keys.files))):
            text = fid.decode(errors="replace")
            meta = self._parse(text, self.redis.hgetall(self.keys.file(text)))
            if meta is not None:
                out.append(meta)
        return out

    def register(self, name: str, window_shape: Sequence[int], window_dtype: str,
                 n_windows: int, label_dtype: str = "<f4") -> FileMeta:
        """Declare a window collection that new code fills itself (no HDF5 file behind it)."""
        dtype = check_dtype(np.dtype(window_dtype).str)
        check_shape(window_shape, dtype, self.max_value_bytes)
        fid = "n" + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
        old = self.file(fid)
        meta = FileMeta(fid, old.gen if old else 1, name, int(n_windows), list(window_shape),
                        dtype.str, [], check_dtype(np.dtype(label_dtype).str).str,
                        cached=old.cached if old else 0)
        self.write_meta(meta)
        return meta

    def write_meta(self, meta: FileMeta) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.file(meta.fid))  # no stray field of an older or broken hash stays
        pipe.hset(self.keys.file(meta.fid), mapping=meta.to_hash())
        pipe.hset(self.keys.files, meta.path, meta.fid)
        pipe.execute()

    def _meta(self, ref: FileMeta | str) -> FileMeta:
        if isinstance(ref, FileMeta):
            return ref
        meta = self.file(ref)
        if meta is None:
            raise KeyError(f"{ref} is not in the cache")
        return meta

    # -- windows -------------------------------------------------------------------

    def get_window(self, ref: FileMeta | str, index: int) -> np.ndarray | None:
        return self.get_windows(ref, [index])[0]

    def get_windows(self, ref: FileMeta | str, indices: Sequence[int]) -> list[np.ndarray | None]:
        """Windows by index with one MGET; None for each one not cached."""
        meta = self._meta(ref)
        if not indices:
            return []
        keys = self.keys.windows(meta.fid, meta.gen, indices)
        return self._decode_all(keys, self.redis.mget(keys), meta.dtype, meta.shape)

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

    def put_window(self, ref: FileMeta | str, index: int, array: np.ndarray) -> None:
        self.put_windows(ref, index, np.asarray(array)[None])

    def put_windows(self, ref: FileMeta | str, start: int, windows: np.ndarray) -> None:
        """Windows start..start+len-1 (shape and dtype must match the file's metadata)."""
        meta = self._meta(ref)
        windows = np.asarray(windows)
        if windows.shape[1:] != meta.shape or windows.dtype != meta.dtype:
            raise CacheError(f"windows of {windows.dtype} {list(windows.shape[1:])} do not match "
                             f"{meta.path}: {meta.window_dtype} {meta.window_shape}")
        if not 0 <= start <= start + len(windows) <= max(meta.n_windows, start + len(windows)):
            raise CacheError(f"window indices {start}.. are out of range")
        keys = self.keys.windows(meta.fid, meta.gen, range(start, start + len(windows)))
        self.redis.mset({k: seal(k, encode(w)) for k, w in zip(keys, windows)})

    def get_labels(self, ref: FileMeta | str) -> np.ndarray | None:
        meta = self._meta(ref)
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
        return self._decode_all(keys, self.redis.mget(keys), check_dtype(fm.dtype),
                                tuple(fm.shape))

    def put_features(self, ref: FileMeta | str, start: int, extractor: str,
                     values: np.ndarray) -> None:
        meta = self._meta(ref)
        fm = self.feature_meta(meta, extractor)
        values = np.asarray(values)
        if list(values.shape[1:]) != fm.shape or values.dtype != check_dtype(fm.dtype):
            raise CacheError(f"features of {values.dtype} {list(values.shape[1:])} do not match "
                             f"{fm.name}: {fm.dtype} {fm.shape}")
        fkey = feature_key(fm.name, fm.params)
        keys = self.keys.features(meta.fid, meta.gen, fkey, range(start, start + len(values)))
        self.redis.mset({k: seal(k, encode(v)) for k, v in zip(keys, values)})

    # -- statistics and events -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Coverage per file and overall, and Redis' own memory and hit counters."""
        info = self.redis.info("memory")
        counters = self.redis.info("stats")
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
        """Append a JSON event to the events stream (capped) and announce it on pub/sub."""
        body = json.dumps({"at": time.time(), **event}, default=str, separators=(",", ":"))
        event_id = send(self.redis, self.keys.events, [body])[0]
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    def subscribe(self, last_id: str = "$", block_ms: int = 1000,
                  stop: Any = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events after `last_id` ("0" for the retained history, "$" for new ones only).

        Yields `(id, event)`; pass the last id back in to resume without a gap. Stops
        when `stop()` returns true (checked every `block_ms`), else runs forever.
        """
        yield from tail(self.redis, self.keys.events, last_id, block_ms, stop=stop)
