"""The Redis window and feature cache: its key layout, its metadata, and its one writer.

Replaces the legacy pickle-based cache. Values are raw C-order array bytes with a
checksum trailer (syncd.sinks.checksum); the dtype and shape live beside them in the file's
metadata hash, are checked against a whitelist, and every value's length and
checksum are checked before it becomes an array (syncd.client.cache, the reader): a
value that fails is a miss (counted), never data. Metadata that does not parse is a
miss too (counted), and the next warm pass rewrites it. Nothing read from Redis is
ever unpickled or evaluated.

`Keys` owns every key pattern (and the events stream's name); `CacheWriter` is the
only code that writes or deletes cache keys, and it validates what it writes against
the file's metadata.

Key layout (prefix `cache.prefix`, default "syncd"):

    {p}:files                              hash  path -> file id
    {p}:file:{fid}                         hash  current generation, dtype, shape, stat, coverage
    {p}:w:{{tag}}:{fid}:{gen}:{i}          string  window i (raw bytes + checksum)
    {p}:l:{{fid}:{gen}}                    string  all labels of the file (raw bytes + checksum)
    {p}:f:{{tag}}:{fid}:{gen}:{fkey}:{i}   string  features of window i (raw bytes + checksum)
    {p}:events                             stream (and pub/sub channel) of JSON events

The literal braces are a Redis Cluster hash tag. Windows (and their features) go in
blocks of `BLOCK_WINDOWS`, one tag per block, the blocks spread evenly over the slots
(syncd.sinks.slots): a large file is spread over every master. That is cache format
4. Format 3 tagged all values of a file generation `{fid:gen}` (a file on one node:
`Format3Keys`), format 2 spelled them untagged (`Format2Keys`); their keys are misses
to readers and are deleted with the current ones (format 2's on one server only).

Keys carry the generation: when a file changes, its generation goes up, the
metadata hash points at the new one, and the old generation's keys are deleted,
so a reader never mixes windows of two versions of a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis

from syncd.connect.redis_urls import is_cluster
from syncd.sinks.checksum import CHECKSUM_BYTES, FORMAT, seal
from syncd.sinks.slots import BLOCK_WINDOWS, block_tag, block_tags

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "syncd"
MAX_VALUE_BYTES = 64 << 20
EVENTS_MAXLEN = 100_000  # the events stream is trimmed to about this many ([daemon] events_maxlen)
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
    """The key names of one cache prefix: the one place a `{prefix}:*` name is spelled."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.files = f"{prefix}:files"
        self.events = f"{prefix}:events"

    def file(self, fid: str) -> str:
        return f"{self.prefix}:file:{fid}"

    @staticmethod
    def tag(fid: str, gen: int) -> str:
        """The hash tag of one file generation (its labels' key)."""
        return f"{{{fid}:{gen}}}"

    def window(self, fid: str, gen: int, index: int) -> str:
        tag = block_tag(f"{fid}:{gen}", index // BLOCK_WINDOWS)
        return f"{self.prefix}:w:{{{tag}}}:{fid}:{gen}:{index}"

    def windows(self, fid: str, gen: int, indices: Sequence[int] | range) -> list[str]:
        return self._values("w", fid, gen, "", indices)

    def labels(self, fid: str, gen: int) -> str:
        return f"{self.prefix}:l:{self.tag(fid, gen)}"

    def features(self, fid: str, gen: int, fkey: str, indices: Sequence[int] | range) -> list[str]:
        return self._values("f", fid, gen, f"{fkey}:", indices)

    def _values(self, kind: str, fid: str, gen: int, part: str,
                indices: Sequence[int] | range) -> list[str]:
        """`{p}:{kind}:{{tag}}:{fid}:{gen}:{part}{i}`, the tag of the block holding i."""
        blocks = [i // BLOCK_WINDOWS for i in indices]
        distinct = list(dict.fromkeys(blocks))
        tags = dict(zip(distinct, block_tags(f"{fid}:{gen}", distinct)))
        tail = f":{fid}:{gen}:{part}"
        return [f"{self.prefix}:{kind}:{{{tags[b]}}}{tail}{i}" for b, i in zip(blocks, indices)]

    def values_pattern(self, fid: str, gen: int) -> str:
        """A SCAN pattern matching every window and feature key of one file generation."""
        return f"{self.prefix}:[wf]:{{*}}:{fid}:{gen}:*"


class Format3Keys(Keys):
    """The value keys of format 3, one hash tag per file generation: only ever deleted."""

    def window(self, fid: str, gen: int, index: int) -> str:
        return self._values("w", fid, gen, "", (index,))[0]

    def _values(self, kind: str, fid: str, gen: int, part: str,
                indices: Sequence[int] | range) -> list[str]:
        head = f"{self.prefix}:{kind}:{self.tag(fid, gen)}:{part}"
        return [head + str(i) for i in indices]


class Format2Keys(Format3Keys):
    """The value keys of formats 1 and 2, without a hash tag: only ever deleted."""

    @staticmethod
    def tag(fid: str, gen: int) -> str:
        return f"{fid}:{gen}"


class CacheWriter:
    """The only writer of cache keys: metadata, windows, labels and features, and their deletion.

    It reads metadata too (`file`), because a write must keep a file's generation and
    coverage; everything it writes is checked against the file's metadata first.
    """

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX,
                 max_value_bytes: int = MAX_VALUE_BYTES, events_maxlen: int = EVENTS_MAXLEN
                 ) -> None:
        self.redis, self.keys, self.events_maxlen = client, Keys(prefix), events_maxlen
        self.cluster = is_cluster(client)
        # Older layouts, deleted with the current one (format 2's only on a single server:
        # a cluster refused its untagged keys).
        self.old_layouts: tuple[Keys, ...] = (Format3Keys(prefix),) + \
            (() if self.cluster else (Format2Keys(prefix),))
        self.max_value_bytes = max_value_bytes
        self.unreadable: dict[str, str] = {}  # file id -> why its metadata did not parse

    # -- metadata ------------------------------------------------------------------

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

    def _meta(self, ref: FileMeta | str) -> FileMeta:
        if isinstance(ref, FileMeta):
            return ref
        meta = self.file(ref)
        if meta is None:
            raise KeyError(f"{ref} is not in the cache")
        return meta

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
        """The index entry first, then the metadata hash in one transaction (one key, so
        one slot on a cluster): a reader finds no hash, the old one or the new one."""
        self.redis.hset(self.keys.files, meta.path, meta.fid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.file(meta.fid))  # no stray field of an older or broken hash stays
        pipe.hset(self.keys.file(meta.fid), mapping=meta.to_hash())
        pipe.execute()

    def set_cached(self, fid: str, cached: int) -> None:
        """Record that windows 0..cached-1 are in Redis (as a warm advances)."""
        self.redis.hset(self.keys.file(fid), "cached", str(cached))

    # -- values --------------------------------------------------------------------

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
        self._mset({k: seal(k, encode(w)) for k, w in zip(keys, windows)})

    def put_labels(self, meta: FileMeta, labels: np.ndarray) -> None:
        """All labels of the file (dtype and shape must match its metadata)."""
        labels = np.asarray(labels)
        if labels.shape != (meta.n_windows, *meta.label_shape) or \
                labels.dtype != check_dtype(meta.label_dtype):
            raise CacheError(f"labels of {labels.dtype} {list(labels.shape)} do not match "
                             f"{meta.path}: {meta.label_dtype} "
                             f"{[meta.n_windows, *meta.label_shape]}")
        key = self.keys.labels(meta.fid, meta.gen)
        self.redis.set(key, seal(key, encode(labels)))

    def put_features(self, meta: FileMeta, rows: Mapping[str, tuple[int, np.ndarray]]) -> None:
        """Feature rows of several extractors in one MSET: `{feature key: (first index,
        values)}`; each extractor must be in the metadata, with its shape and dtype."""
        mapping = {}
        for fkey, (start, values) in rows.items():
            fm = meta.features.get(fkey)
            values = np.asarray(values)
            if fm is None or list(values.shape[1:]) != fm.shape or \
                    values.dtype != check_dtype(fm.dtype):
                raise CacheError(f"features {fkey} of {values.dtype} {list(values.shape[1:])} "
                                 f"do not match the metadata of {meta.path}")
            keys = self.keys.features(meta.fid, meta.gen, fkey, range(start, start + len(values)))
            for key, v in zip(keys, values):
                mapping[key] = seal(key, encode(v))
        if mapping:
            self._mset(mapping)

    def _mset(self, mapping: Mapping[str, bytes]) -> None:
        """One MSET; on a cluster one per slot, pipelined per node (values of one file
        span many slots)."""
        if self.cluster:
            self.redis.mset_nonatomic(mapping)
        else:
            self.redis.mset(mapping)

    # -- deletion ------------------------------------------------------------------

    def delete_values(self, fid: str, gen: int, start: int, stop: int, fkeys: Iterable[str],
                      windows: bool = True) -> None:
        """Unlink windows start..stop-1 (unless `windows` is false) and their `fkeys` features."""
        fkeys = list(fkeys)
        for a in range(start, stop, 2000):
            b = min(stop, a + 2000)
            keys: list[str] = []
            for layout in (self.keys, *self.old_layouts):
                keys += layout.windows(fid, gen, range(a, b)) if windows else []
                for fkey in fkeys:
                    keys += layout.features(fid, gen, fkey, range(a, b))
            if keys:
                self.redis.unlink(*keys)

    def delete_labels(self, fid: str, gen: int) -> None:
        self.redis.unlink(*{k.labels(fid, gen) for k in (self.keys, *self.old_layouts)})

    def forget(self, fid: str, path: str) -> None:
        """Drop a file's metadata and its entry in the files index (its values go separately)."""
        self.redis.unlink(self.keys.file(fid))
        self.redis.hdel(self.keys.files, path)
