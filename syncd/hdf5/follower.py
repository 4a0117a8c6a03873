"""Index the HDF5 window caches into MongoDB and warm Redis with windows, labels and features.

One pass (`Hdf5Follower.scan_once`) does, for the configured `--hdf5-dir`s:

1. find the files (`[hdf5] patterns`), and for each new or changed one wait until it
   is complete (stable over `debounce_seconds` and a consistent open), then index it
   into `hdf5_files`: a changed file gets a new generation, and the old
   generation's Redis keys are deleted (the pending deletion is recorded first, so
   a crash cannot leak them);
2. quarantine files that cannot be read, with their error, and carry on;
3. plan the memory budget (`[cache] max_bytes`) over the files in warm order
   (`warm_first` globs, then newest first) and warm or trim each file to its share;
4. check what Redis still holds when it restarted, evicted keys, or every
   `verify_seconds`, so lost keys are warmed again.

`syncd warm` runs passes until no file is pending; `syncd run` calls `scan_once`
on file events and a timer. `hdf5_status` is what `syncd status` shows.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from pymongo.database import Database
from pymongo.errors import PyMongoError

from legacy_adapters.hdf5 import (
    DEFAULT_LAYOUTS,
    DEFAULT_PATTERNS,
    BadFile,
    FileBusy,
    FileSig,
    Layout,
)
from legacy_adapters.hdf5_index import FileInfo, inspect, list_files, matches, wait_stable
from legacy_adapters.hdf5_slabs import SlabReader
from syncd.checkpoint.store import STATE, utcnow
from syncd.config import Settings, section
from syncd.errors import ConfigError
from syncd.hdf5.features import (
    FeatureConfig,
    compute,
    extractors_for,
    load_feature_config,
    prepare_torch,
)
from syncd.progress import Progress
from syncd.projection.ids import derive_id
from syncd.sinks.cache import KEY_OVERHEAD, MAX_VALUE_BYTES, FeatureMeta, FileMeta, WindowCache
from syncd.sinks.checksum import FORMAT, seal

log = logging.getLogger(__name__)

HDF5_FILES = "hdf5_files"
STATUS_ID = "hdf5"
META_BYTES = 1024  # the metadata hash and the files index entry, for the budget
MSET_BYTES = 16 << 20  # one MSET carries at most about this much
MIN_RETRY_SECONDS = 0.25  # a busy file is not reopened more often than this

HDF5_DEFAULTS: dict[str, Any] = {
    "layouts": [list(pair) for pair in DEFAULT_LAYOUTS],
    "patterns": list(DEFAULT_PATTERNS),
    "debounce_seconds": 2.0,
    "settle_seconds": 30.0,
    "workers": 2,
    "slab_mb": 8,
    "verify_seconds": 60.0,
}
CACHE_DEFAULTS: dict[str, Any] = {
    "max_bytes": 1 << 30,
    "prefix": "syncd",
    "warm_first": [],
    "max_value_mb": MAX_VALUE_BYTES >> 20,
}


@dataclass(frozen=True)
class Hdf5Config:
    """The validated `[hdf5]` and `[cache]` tables plus the directories."""

    dirs: tuple[Path, ...]
    layouts: tuple[Layout, ...]
    patterns: tuple[str, ...]
    debounce: float
    settle: float
    workers: int
    slab_bytes: int
    verify_seconds: float
    max_bytes: int
    prefix: str
    warm_first: tuple[str, ...]
    max_value_bytes: int
    features: FeatureConfig


def load_hdf5_config(settings: Settings, require_dirs: bool = True) -> Hdf5Config:
    """Check `--hdf5-dir`, `[hdf5]`, `[cache]` and `[features]`; a ConfigError names the problem."""
    h = section(settings, "hdf5", HDF5_DEFAULTS)
    c = section(settings, "cache", CACHE_DEFAULTS)
    where = f"--config {settings.config_file}"
    layouts = []
    for pair in h["layouts"]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and p
                                                                  for p in pair)):
            raise ConfigError(f"{where}: [hdf5] layouts: {pair!r} is not valid: expected "
                              '["windows dataset", "labels dataset"]')
        layouts.append(Layout(pair[0], pair[1]))
    if not layouts:
        raise ConfigError(f"{where}: [hdf5] layouts is empty")
    for key in ("debounce_seconds", "settle_seconds", "verify_seconds"):
        if h[key] < 0:
            raise ConfigError(f"{where}: [hdf5] {key} must not be negative")
    if h["workers"] < 1 or h["slab_mb"] < 1:
        raise ConfigError(f"{where}: [hdf5] workers and slab_mb must be at least 1")
    if c["max_bytes"] < 0:
        raise ConfigError(f"{where}: [cache] max_bytes must not be negative")
    if c["max_value_mb"] < 1:
        raise ConfigError(f"{where}: [cache] max_value_mb must be at least 1")
    prefix = c["prefix"]
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ConfigError(f"{where}: [cache] prefix must be a non-empty word")
    dirs = tuple(Path(d).absolute() for d in settings.hdf5_dirs)
    if require_dirs and not dirs:
        raise ConfigError("--hdf5-dir is not set: name the HDF5 cache directories "
                          "(repeatable, or SYNCD_HDF5_DIRS)")
    for d in dirs:
        if require_dirs and not d.is_dir():
            raise ConfigError(f"--hdf5-dir {d}: no such directory")
    features = load_feature_config(settings)
    return Hdf5Config(dirs, tuple(layouts), tuple(str(p) for p in h["patterns"]),
                      float(h["debounce_seconds"]), float(h["settle_seconds"]), int(h["workers"]),
                      int(h["slab_mb"]) << 20, float(h["verify_seconds"]), int(c["max_bytes"]),
                      prefix, tuple(str(g) for g in c["warm_first"]),
                      int(c["max_value_mb"]) << 20, features)


# -- the report of one pass -----------------------------------------------------------


@dataclass
class ScanReport:
    """What one pass did (also what `syncd warm --json` prints)."""

    files: int = 0
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    pending: list[str] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warmed: list[str] = field(default_factory=list)
    changed_while_warming: list[str] = field(default_factory=list)
    metadata_repaired: list[str] = field(default_factory=list)  # unreadable, written again
    windows_written: int = 0
    window_bytes: int = 0
    features_written: int = 0
    windows_trimmed: int = 0
    windows_cached: int = 0
    windows_total: int = 0
    budget_bytes: int = 0
    used_bytes: int = 0
    redis_error: str | None = None
    mongo_error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def merge(self, later: ScanReport) -> None:
        """Fold a later pass (of the same run) into this one."""
        for name in ("indexed", "quarantined", "removed", "warmed", "changed_while_warming",
                     "metadata_repaired"):
            getattr(self, name).extend(getattr(later, name))
        for name in ("windows_written", "window_bytes", "features_written", "windows_trimmed",
                     "seconds"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        for name in ("files", "unchanged", "pending", "windows_cached", "windows_total",
                     "budget_bytes", "used_bytes", "redis_error", "mongo_error"):
            setattr(self, name, getattr(later, name))


# -- documents ------------------------------------------------------------------------


def _safe_key(key: str) -> str:
    """An attribute name usable as a MongoDB field name (full-width stand-ins for . and $)."""
    key = key.replace(".", "\uff0e")
    return "\uff04" + key[1:] if key.startswith("$") else key


def _sig(doc: dict[str, Any]) -> FileSig | None:
    try:
        return FileSig(int(doc["size"]), int(doc["mtime_ns"]), int(doc["ino"]))
    except (KeyError, TypeError, ValueError):
        return None


def _per_window_bytes(doc: dict[str, Any], feature_shapes: dict[str, tuple[list[int], str]]) -> int:
    cost = int(doc["window_bytes"]) + KEY_OVERHEAD
    for shape, dtype in feature_shapes.values():
        cost += np.dtype(dtype).itemsize * int(np.prod(shape)) + KEY_OVERHEAD
    return cost


def _stale_record(doc: dict[str, Any]) -> dict[str, Any]:
    """What deleting a retired generation needs: its number, window count and feature keys."""
    return {"generation": int(doc["generation"]),
            "windows": max(int(doc.get("n_windows") or 0), int(doc.get("cached_windows") or 0)),
            "features": sorted((doc.get("features") or {}).keys())}


def _fixed_bytes(doc: dict[str, Any]) -> int:
    label_item = np.dtype(doc["label_dtype"]).itemsize * int(np.prod(doc["label_shape"] or [1]))
    return META_BYTES + KEY_OVERHEAD + int(doc["n_windows"]) * label_item


@dataclass
class _Plan:
    """One file's share of the budget: windows 0..target-1 and (if labels) its labels."""

    doc: dict[str, Any]
    extractors: dict[str, Any]
    shapes: dict[str, tuple[list[int], str]]
    target: int
    cost: int
    labels: bool


class Hdf5Follower:
    """Indexes and warms the HDF5 caches; one `scan_once` per file event or timer tick.

    `db` is the target database, `client` a Redis client (binary responses). The
    daemon watches `watch_paths()` (recursively) and calls `scan_once()` after events
    for paths where `wants(path)` is true, and again after `next_due()` seconds.
    """

    def __init__(self, settings: Settings, db: Database, client: redis.Redis,
                 progress: Progress | None = None,
                 on_slab: Callable[[Path, int], None] | None = None,
                 config: Hdf5Config | None = None) -> None:
        self.settings = settings
        self.config = config or load_hdf5_config(settings)
        prepare_torch(self.config.features)  # fails now, in one clear line, if torch is missing
        self.db = db
        self.coll = db[HDF5_FILES]
        self.redis = client
        self.cache = WindowCache(client, self.config.prefix, self.config.max_value_bytes)
        self.keys = self.cache.keys
        self.progress = progress or Progress(enabled=False)
        self.on_slab = on_slab
        self.source_id = settings.source_id
        self._seen: dict[Path, tuple[FileSig, float]] = {}
        self._pending_since: dict[Path, float] = {}
        self._redis_run_id: str | None = None
        self._evicted: int | None = None
        self._verified_at: float | None = None

    # -- what the daemon asks -------------------------------------------------------

    def watch_paths(self) -> list[Path]:
        """The directories to watch, recursively."""
        return list(self.config.dirs)

    def wants(self, path: str | Path) -> bool:
        """Whether a file event for `path` concerns the HDF5 caches."""
        p = Path(path)
        return matches(p.name, self.config.patterns) and any(
            p == d or d in p.parents for d in self.config.dirs)

    def next_due(self) -> float | None:
        """Seconds until a pending file's debounce window ends (None: nothing pending)."""
        if not self._pending_since:
            return None
        now = time.monotonic()
        wait = max(self.config.debounce, MIN_RETRY_SECONDS)
        return max(0.0, min(t + wait - now for t in self._pending_since.values()))

    # -- one pass -------------------------------------------------------------------

    def scan_once(self) -> ScanReport:
        """Index, quarantine, remove, plan and warm whatever changed; never raises for a file.

        A Redis or MongoDB outage ends the pass early with `redis_error` or
        `mongo_error` set; the next pass carries on from what MongoDB records (and
        re-checks Redis).
        """
        started = time.monotonic()
        report = ScanReport(budget_bytes=self.config.max_bytes)
        try:
            full_verify = self._redis_changed()
            paths = list_files(self.config.dirs, self.config.patterns)
            report.files = len(paths)
            docs = {d["path"]: d for d in self.coll.find({"source_id": self.source_id})}
            for path in paths:
                self._index_one(path, docs, report)
            for doc in [d for d in docs.values() if d and d.get("stale_generations")]:
                self._drop_stale(doc)  # left pending by a crash or a Redis outage
                if doc.get("state") == "quarantined":
                    self._forget_in_redis(doc["fid"], doc["path"])
            self._remove_missing(set(map(str, paths)), docs, report)
            self._plan_and_warm(report, full_verify)
            self._record_status(report)
        except redis.RedisError as exc:
            report.redis_error = f"{type(exc).__name__}: {exc}"
            self._redis_run_id = None  # check everything again once it is back
            log.warning("Redis failed during the HDF5 pass (%s); the next pass carries on",
                        report.redis_error)
        except PyMongoError as exc:
            report.mongo_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.warning("MongoDB failed during the HDF5 pass (%s); the next pass carries on",
                        report.mongo_error)
        report.pending = sorted(str(p) for p in self._pending_since)
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def warm(self, settle: float | None = None) -> ScanReport:
        """Passes until no file is pending, or `settle` seconds (`[hdf5] settle_seconds`)."""
        settle = self.config.settle if settle is None else settle
        deadline = time.monotonic() + settle
        report = self.scan_once()
        while report.pending and not (report.redis_error or report.mongo_error):
            due = self.next_due() or 0.0
            if time.monotonic() + due > deadline:
                break
            time.sleep(max(due, 0.05))
            report.merge(self.scan_once())
        return report

    # -- indexing -------------------------------------------------------------------

    def _index_one(self, path: Path, docs: dict[str, dict[str, Any]], report: ScanReport) -> None:
        doc = docs.get(str(path))
        try:
            sig = FileSig.of(path)
        except FileNotFoundError:
            return
        if doc is not None and _sig(doc) == sig:
            self._pending_since.pop(path, None)
            report.unchanged += 1
            return
        stable, sig = wait_stable(path, self.config.debounce, self._seen)
        if not stable:
            self._pending_since.setdefault(path, time.monotonic())
            return
        try:
            info = inspect(path, self.config.layouts, workers=self.config.workers)
        except FileBusy as exc:
            log.info("%s: not complete yet (%s)", path, exc)
            self._pending_since[path] = time.monotonic()  # look again a debounce later
            self._seen.pop(path, None)
            return
        except FileNotFoundError:
            return
        except BadFile as exc:
            self._pending_since.pop(path, None)
            self._quarantine(path, sig, str(exc), doc, report)
            docs[str(path)] = self.coll.find_one({"_id": self._id(path)}) or {}
            return
        self._pending_since.pop(path, None)
        docs[str(path)] = self._store_index(info, doc, report)

    def _id(self, path: Path) -> Any:
        return derive_id(self.source_id, HDF5_FILES, (str(path),))

    def _dir_of(self, path: Path) -> str:
        for d in self.config.dirs:
            if d in path.parents:
                return str(d)
        return str(path.parent)

    def _store_index(self, info: FileInfo, doc: dict[str, Any] | None,
                     report: ScanReport) -> dict[str, Any]:
        """Write the file's document; a new generation retires the old one's keys."""
        path = info.path
        _id = self._id(path)
        fid = str(_id)
        same_content = (
            doc is not None and doc.get("state") != "quarantined"
            and doc.get("fingerprint") == info.fingerprint
            and doc.get("window_shape") == info.window_shape
            and doc.get("window_dtype") == info.window_dtype
            and doc.get("n_windows") == info.n_windows
        )
        old_gen = int(doc.get("generation") or 0) if doc else 0
        gen = old_gen if same_content else old_gen + 1
        now = utcnow()
        fields: dict[str, Any] = {
            "source_id": self.source_id, "fid": fid, "path": str(path), "dir": self._dir_of(path),
            "name": path.name, **info.sig.document(),
            "mtime": dt.datetime.fromtimestamp(info.sig.mtime_ns / 1e9, dt.timezone.utc)
            .replace(tzinfo=None),
            "fingerprint": info.fingerprint,
            "layout": {"windows": info.layout.windows, "labels": info.layout.labels},
            "datasets": [{"name": n, **d.document()} for n, d in info.datasets.items()],
            "attrs": {_safe_key(k): v for k, v in info.attrs.items()},
            "n_windows": info.n_windows, "window_shape": info.window_shape,
            "window_dtype": info.window_dtype, "window_bytes": info.window_bytes,
            "label_shape": info.label_shape, "label_dtype": info.label_dtype,
            "generation": gen, "error": None, "indexed_at": now, "updated_at": now,
        }
        update: dict[str, Any] = {"$set": fields}
        if not same_content:
            fields.update(state="indexed", cached_windows=0, features={}, cache_bytes=0)
            if doc and old_gen and doc.get("state") != "quarantined":
                update["$push"] = {"stale_generations": self._stale(doc)}
        self.coll.update_one({"_id": _id}, update, upsert=True)
        new_doc = self.coll.find_one({"_id": _id}) or {}
        meta = self._meta_for(new_doc)
        if same_content:
            # Only the stat moved (a touch, a copy of the same bytes): keep the keys.
            existing = self.cache.file(fid)
            if existing is not None and existing.gen == gen:
                meta.cached = existing.cached
                meta.features = existing.features
            self.cache.write_meta(meta)
        else:
            self.cache.write_meta(meta)
            self._drop_stale(new_doc)
            report.indexed.append(str(path))
            self.cache.publish({"type": "hdf5.indexed", "path": str(path), "generation": gen,
                                "windows": info.n_windows})
            log.info("indexed %s: %d windows %s %s, generation %d", path, info.n_windows,
                     info.window_dtype, info.window_shape, gen)
        return new_doc

    def _stale(self, doc: dict[str, Any]) -> dict[str, Any]:
        """`_stale_record`, widened by what a warm that never finished wrote: the windows
        and features the Redis metadata records, and every configured extractor's keys."""
        record = _stale_record(doc)
        features = set(record["features"]) | set(self._feature_plan(doc))
        meta = self.cache.file(doc["fid"]) if doc.get("fid") else None
        self.cache.unreadable.pop(doc.get("fid") or "", None)
        if meta is not None and meta.gen == record["generation"]:
            record["windows"] = max(record["windows"], meta.cached)
            features |= set(meta.features)
        record["features"] = sorted(features)
        return record

    def _meta_for(self, doc: dict[str, Any]) -> FileMeta:
        return FileMeta(
            fid=doc["fid"], gen=int(doc["generation"]), path=doc["path"],
            n_windows=int(doc["n_windows"]), window_shape=list(doc["window_shape"]),
            window_dtype=doc["window_dtype"], label_shape=list(doc["label_shape"]),
            label_dtype=doc["label_dtype"], size=int(doc["size"]), mtime_ns=int(doc["mtime_ns"]),
            ino=int(doc["ino"]), cached=0,
            layout=[doc["layout"]["windows"], doc["layout"]["labels"]],
        )

    def _drop_stale(self, doc: dict[str, Any]) -> None:
        """Delete the keys of retired generations, then forget them (crash-safe order)."""
        for stale in doc.get("stale_generations") or []:
            gen, n = int(stale["generation"]), int(stale.get("windows") or 0)
            self._delete_range(doc["fid"], gen, 0, n, stale.get("features") or [])
            self.redis.unlink(self.keys.labels(doc["fid"], gen))
            self.coll.update_one({"_id": doc["_id"]},
                                 {"$pull": {"stale_generations": {"generation": gen}}})

    def _delete_range(self, fid: str, gen: int, start: int, stop: int,
                      fkeys: Iterable[str], windows: bool = True) -> None:
        """Unlink windows start..stop-1 (unless `windows` is false) and their `fkeys` features."""
        fkeys = list(fkeys)
        for a in range(start, stop, 2000):
            b = min(stop, a + 2000)
            keys = self.keys.windows(fid, gen, range(a, b)) if windows else []
            for fkey in fkeys:
                keys += self.keys.features(fid, gen, fkey, range(a, b))
            if keys:
                self.redis.unlink(*keys)

    def _quarantine(self, path: Path, sig: FileSig, error: str, doc: dict[str, Any] | None,
                    report: ScanReport) -> None:
        _id = self._id(path)
        fid = str(_id)
        log.warning("quarantined %s: %s", path, error)
        update: dict[str, Any] = {"$set": {
            "source_id": self.source_id, "fid": fid, "path": str(path),
            "dir": self._dir_of(path), "name": path.name, **sig.document(),
            "state": "quarantined", "error": error, "quarantined_at": utcnow(),
            "updated_at": utcnow(), "cached_windows": 0, "cache_bytes": 0, "features": {},
        }}
        if doc and doc.get("state") != "quarantined" and doc.get("generation"):
            update["$push"] = {"stale_generations": self._stale(doc)}
        self.coll.update_one({"_id": _id}, update, upsert=True)
        new_doc = self.coll.find_one({"_id": _id}) or {}
        if new_doc.get("n_windows") is not None:
            self._drop_stale(new_doc)
        self._forget_in_redis(fid, str(path))
        report.quarantined.append({"path": str(path), "error": error})
        self.cache.publish({"type": "hdf5.quarantined", "path": str(path), "error": error})

    def _forget_in_redis(self, fid: str, path: str) -> None:
        self.redis.unlink(self.keys.file(fid))
        self.redis.hdel(self.keys.files, path)

    def _remove_missing(self, present: set[str], docs: dict[str, dict[str, Any]],
                        report: ScanReport) -> None:
        """Files that are gone from a watched directory lose their document and keys."""
        # A watched directory that is not there (an unmounted volume) removes nothing.
        dirs = {str(d) for d in self.config.dirs if d.is_dir()}
        for path, doc in list(docs.items()):
            if path in present or not doc or doc.get("dir") not in dirs:
                continue
            if Path(path).exists():  # e.g. renamed to a name the patterns no longer match
                continue
            if doc.get("generation") and doc.get("n_windows") is not None:
                self.coll.update_one({"_id": doc["_id"]},
                                     {"$push": {"stale_generations": self._stale(doc)}})
                self._drop_stale(self.coll.find_one({"_id": doc["_id"]}) or doc)
            self._forget_in_redis(doc["fid"], path)
            self.coll.delete_one({"_id": doc["_id"]})
            docs.pop(path)
            self._pending_since.pop(Path(path), None)
            report.removed.append(path)
            self.cache.publish({"type": "hdf5.removed", "path": path})

    # -- budget and warming ---------------------------------------------------------

    def _redis_changed(self) -> bool:
        """True when Redis restarted, evicted keys, or the verify interval passed."""
        server = self.redis.info("server")
        stats = self.redis.info("stats")
        run_id, evicted = server.get("run_id"), int(stats.get("evicted_keys", 0))
        now = time.monotonic()
        changed = (run_id != self._redis_run_id or evicted != self._evicted
                   or self._verified_at is None
                   or now - self._verified_at >= self.config.verify_seconds)
        self._redis_run_id, self._evicted = run_id, evicted
        if changed:
            self._verified_at = now
        return changed

    def _warm_key(self, doc: dict[str, Any]) -> tuple[int, int, str]:
        for i, glob in enumerate(self.config.warm_first):
            if fnmatch.fnmatchcase(doc["path"], glob) or fnmatch.fnmatchcase(doc["name"], glob):
                return (i, 0, doc["path"])
        return (len(self.config.warm_first), -int(doc["mtime_ns"]), doc["path"])

    def _feature_plan(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {ex.key: ex for ex in extractors_for(self.config.features, doc.get("attrs") or {})}

    def _plan_and_warm(self, report: ScanReport, full_verify: bool) -> None:
        """Share the budget: every file's labels first, then windows in warm order."""
        docs = [d for d in self.coll.find({"source_id": self.source_id,
                                           "state": {"$in": ["indexed", "warming", "warm"]}})]
        docs.sort(key=self._warm_key)
        remaining = self.config.max_bytes
        plans = []
        for doc in docs:
            extractors = self._feature_plan(doc)
            shapes = {k: (ex.output_shape(doc["window_shape"]), "<f4")
                      for k, ex in extractors.items()}
            fixed = _fixed_bytes(doc)
            labels = remaining >= fixed
            if labels:
                remaining -= fixed
            plans.append(_Plan(doc, extractors, shapes, 0, fixed if labels else 0, labels))
        for plan in plans:
            per_window = _per_window_bytes(plan.doc, plan.shapes)
            if plan.labels and int(plan.doc["window_bytes"]) <= self.config.max_value_bytes:
                plan.target = min(int(plan.doc["n_windows"]), remaining // per_window)
                remaining -= plan.target * per_window
                plan.cost += plan.target * per_window
        for plan in plans:
            self._sync_file(plan, full_verify, report)
            report.windows_total += int(plan.doc["n_windows"])
        report.used_bytes = self.config.max_bytes - remaining

    def _present(self, keys: list[str]) -> int:
        """How many of `keys`, from the first, exist without a gap."""
        count = 0
        for a in range(0, len(keys), 1000):
            batch = keys[a:a + 1000]
            if self.redis.exists(*batch) == len(batch):
                count += len(batch)
                continue
            pipe = self.redis.pipeline(transaction=False)
            for k in batch:
                pipe.exists(k)
            for hit in pipe.execute():
                if not hit:
                    return count
                count += 1
            return count
        return count

    def _sync_file(self, plan: _Plan, full_verify: bool, report: ScanReport) -> None:
        doc, extractors, shapes, target = plan.doc, plan.extractors, plan.shapes, plan.target
        fid, gen = doc["fid"], int(doc["generation"])
        cached = int(doc.get("cached_windows") or 0)
        done = {k: int(v.get("windows") or 0) for k, v in (doc.get("features") or {}).items()}
        meta = self.cache.file(fid)
        if self.cache.unreadable.pop(fid, None) is not None:
            report.metadata_repaired.append(doc["path"])  # a miss; _warm_file writes it again
        if meta is not None and meta.format != FORMAT and meta.gen == gen:
            # Values of an older format (no checksum) read as misses: write them again.
            self._delete_range(fid, gen, 0, max(cached, meta.cached), list(done))
            cached, done, meta = 0, dict.fromkeys(done, 0), None
        if full_verify or doc.get("state") != "warm" or meta is None or meta.gen != gen:
            cached = self._present(self.keys.windows(fid, gen, range(cached)))
            for fkey in list(done):
                done[fkey] = self._present(self.keys.features(fid, gen, fkey, range(done[fkey])))
            if not self.redis.exists(self.keys.labels(fid, gen)):
                cached, done = 0, dict.fromkeys(done, 0)
        if not plan.labels:
            self.redis.unlink(self.keys.labels(fid, gen))
        # Extractors no longer configured: drop their keys, nothing else.
        for fkey in [k for k in done if k not in extractors]:
            self._delete_range(fid, gen, 0, done[fkey], [fkey], windows=False)
            done.pop(fkey)
        if cached > target:
            self._delete_range(fid, gen, target, cached, list(done))
            report.windows_trimmed += cached - target
            cached = target
        done = {k: min(done.get(k, 0), cached) for k in extractors}
        need_features = {k: n for k, n in done.items() if n < target}
        if cached >= target and not need_features and doc.get("state") == "warm" and \
                meta is not None and meta.gen == gen:
            report.windows_cached += cached
            if cached != int(doc.get("cached_windows") or 0) or \
                    doc.get("cache_bytes") != plan.cost:
                self._finish(doc, extractors, shapes, cached, done, plan.cost)
            return
        self._warm_file(plan, cached, done, report)

    def _warm_file(self, plan: _Plan, cached: int, done: dict[str, int],
                   report: ScanReport) -> None:
        doc, extractors, shapes, target = plan.doc, plan.extractors, plan.shapes, plan.target
        fid, gen, path = doc["fid"], int(doc["generation"]), Path(doc["path"])
        try:
            if FileSig.of(path) != _sig(doc):
                report.changed_while_warming.append(str(path))
                return  # the next pass re-indexes it as a new generation
        except FileNotFoundError:
            return
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {"state": "warming",
                                                            "updated_at": utcnow()}})
        meta = self._meta_for(doc)
        meta.cached = cached
        meta.features = {k: FeatureMeta(ex.name, ex.params, shapes[k][0], shapes[k][1], done[k])
                         for k, ex in extractors.items()}
        self.cache.write_meta(meta)
        start = min([cached, *done.values()]) if target else target
        task = self.progress.task(path.name, target - start) if target > start else None
        written = 0
        try:
            with SlabReader(path, Layout(*meta.layout), self.config.workers,
                            self.config.slab_bytes) as reader:
                if reader.n_windows != meta.n_windows:
                    raise FileBusy("the number of windows changed")
                if plan.labels:
                    labels = reader.labels()
                    key = self.keys.labels(fid, gen)
                    self.redis.set(key, seal(key, labels.data.cast("B")))
                if target > start:
                    for first, windows in reader.slabs(start, target):
                        written += self._write_slab(fid, gen, first, windows, cached, done,
                                                    extractors, report)
                        cached = max(cached, first + len(windows))
                        for k in done:
                            done[k] = max(done[k], first + len(windows))
                        self.redis.hset(self.keys.file(fid), "cached", str(cached))
                        if task is not None:
                            task.advance(len(windows))
                        if self.on_slab is not None:
                            self.on_slab(path, first + len(windows))
        except redis.RedisError:
            raise
        except Exception as exc:
            changed = self._changed(path, doc)
            if changed or isinstance(exc, FileBusy):
                log.info("%s changed while being warmed; the next pass re-indexes it", path)
                report.changed_while_warming.append(str(path))
                self.coll.update_one({"_id": doc["_id"]}, {"$set": {
                    "cached_windows": min(cached, target), "updated_at": utcnow()}})
                return
            error = exc.args[0] if isinstance(exc, BadFile) else \
                f"unreadable while warming: {type(exc).__name__}: {exc}"
            self._quarantine(path, _sig(doc) or FileSig.of(path), str(error)[:500], doc, report)
            return
        finally:
            if task is not None:
                task.finish()
        if self._changed(path, doc):
            report.changed_while_warming.append(str(path))
            return
        report.windows_cached += cached
        if written:
            report.warmed.append(str(path))
        self._finish(doc, extractors, shapes, cached, done, plan.cost)
        self.cache.publish({"type": "hdf5.warmed", "path": str(path), "generation": gen,
                            "cached": cached, "windows": int(doc["n_windows"])})

    @staticmethod
    def _changed(path: Path, doc: dict[str, Any]) -> bool:
        try:
            return FileSig.of(path) != _sig(doc)
        except FileNotFoundError:
            return True

    def _write_slab(self, fid: str, gen: int, first: int, windows: np.ndarray, cached: int,
                    done: dict[str, int], extractors: dict[str, Any],
                    report: ScanReport) -> int:
        """MSET the slab's uncached windows and compute the features still missing."""
        stop = first + len(windows)
        written = 0
        lo = max(first, cached)
        if lo < stop:
            rows = windows[lo - first:]
            per = max(1, MSET_BYTES // max(rows[0].nbytes, 1))
            for a in range(0, len(rows), per):
                part = rows[a:a + per]
                keys = self.keys.windows(fid, gen, range(lo + a, lo + a + len(part)))
                self.redis.mset({k: seal(k, w.data.cast("B")) for k, w in zip(keys, part)})
            written = stop - lo
            report.windows_written += written
            report.window_bytes += int(rows.nbytes)
        wanted = [(k, ex) for k, ex in extractors.items() if done[k] < stop]
        if wanted:
            flo = min(max(first, done[k]) for k, _ in wanted)
            batch = self.config.features.batch_windows
            for a in range(flo, stop, batch):
                b = min(stop, a + batch)
                values = compute([ex for _, ex in wanted], windows[a - first:b - first])
                mapping = {}
                for k, _ in wanted:
                    start = max(a, done[k])
                    if start >= b:
                        continue
                    keys = self.keys.features(fid, gen, k, range(start, b))
                    for key, v in zip(keys, values[k][start - a:]):
                        mapping[key] = seal(key, v.data.cast("B"))
                    report.features_written += b - start
                if mapping:
                    self.redis.mset(mapping)
        return written

    def _finish(self, doc: dict[str, Any], extractors: dict[str, Any],
                shapes: dict[str, tuple[list[int], str]], cached: int, done: dict[str, int],
                cost: int) -> None:
        features = {k: {"name": ex.name, "params": ex.params, "shape": shapes[k][0],
                        "dtype": shapes[k][1], "windows": min(done.get(k, 0), cached)}
                    for k, ex in extractors.items()}
        now = utcnow()
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {
            "state": "warm", "cached_windows": cached, "features": features,
            "cache_bytes": cost, "warmed_at": now, "updated_at": now}})
        meta = self._meta_for(doc)
        meta.cached = cached
        meta.features = {k: FeatureMeta(**f) for k, f in features.items()}
        self.cache.write_meta(meta)

    def _record_status(self, report: ScanReport) -> None:
        self.db[STATE].update_one({"_id": STATUS_ID}, {"$set": {
            "max_bytes": self.config.max_bytes, "prefix": self.config.prefix,
            "dirs": [str(d) for d in self.config.dirs], "last_scan_at": utcnow(),
            "used_bytes": report.used_bytes}}, upsert=True)


# -- status -----------------------------------------------------------------------------


def hdf5_status(db: Database, client: redis.Redis | None = None,
                limit: int = 50) -> dict[str, Any]:
    """Per-file states, coverage (windows cached/total), quarantined files with their
    errors, and the cache's memory against its budget. Reads MongoDB (and Redis if given)."""
    coll = db[HDF5_FILES]
    recorded = db[STATE].find_one({"_id": STATUS_ID}) or {}
    files, counts, total, cached, accounted = [], {}, 0, 0, 0
    quarantined = []
    fields = {"path": 1, "state": 1, "generation": 1, "n_windows": 1, "cached_windows": 1,
              "features": 1, "error": 1, "quarantined_at": 1, "cache_bytes": 1, "warmed_at": 1}
    for doc in coll.find({}, fields).sort("path", 1):
        state = doc.get("state", "?")
        counts[state] = counts.get(state, 0) + 1
        n, c = int(doc.get("n_windows") or 0), int(doc.get("cached_windows") or 0)
        if state != "quarantined":
            total += n
            cached += min(c, n)
            accounted += int(doc.get("cache_bytes") or 0)
        if state == "quarantined":
            quarantined.append({"path": doc["path"], "error": doc.get("error"),
                                "at": doc.get("quarantined_at")})
        if len(files) < limit:
            files.append({"path": doc["path"], "state": state,
                          "generation": doc.get("generation"), "windows": n, "cached": c,
                          "coverage": round(c / n, 4) if n else None,
                          "features": sorted((doc.get("features") or {}).keys()),
                          "warmed_at": doc.get("warmed_at")})
    out: dict[str, Any] = {
        "files": files, "files_total": sum(counts.values()), "states": counts,
        "windows_total": total, "windows_cached": cached,
        "coverage": round(cached / total, 4) if total else None,
        "quarantined": quarantined,
        "memory": {"used_bytes": accounted, "budget_bytes": recorded.get("max_bytes"),
                   "redis_used_memory": None},
        "last_scan_at": recorded.get("last_scan_at"),
    }
    if client is not None:
        try:
            out["memory"]["redis_used_memory"] = client.info("memory").get("used_memory")
        except redis.RedisError as exc:
            out["redis_error"] = f"{type(exc).__name__}: {exc}"
    return out
