"""Index the HDF5 window caches into MongoDB and warm Redis with windows, labels and features.

One pass (`Hdf5Follower.scan_once`) does, for the configured `--hdf5-dir`s:

0. (first pass only) merge the records an earlier version kept per source into one
   per file (`identity`): a file's document is its host's and path's, whichever
   command (`warm`, `run` with any source) sees it;
1. find the files (`[hdf5] patterns`), and for each new or changed one wait until it
   is complete (stable over `debounce_seconds` and a consistent open), then index it
   into `hdf5_files`: a changed file gets a new generation, and the old
   generation's Redis keys are deleted (the pending deletion is recorded first, so
   a crash cannot leak them);
2. quarantine files that cannot be read, with their error, and carry on (a quarantined
   file is examined again when it changes or when `[hdf5] layouts` does);
3. plan the memory budget (`[cache] max_bytes`) over the files in warm order
   (`warm_first` globs, then newest first) and warm or trim each file to its share;
4. check what Redis still holds when it restarted, evicted keys, or every
   `verify_seconds`, so lost keys are warmed again; such a pass also reads values back
   and checks their checksums (`scrub_bytes` per pass, None: all of them), so a
   corrupted value is warmed again too (syncd.hdf5.warming).

`syncd warm` runs passes until no file is pending; `syncd run` calls `scan_once`
on file events and a timer. The settings are `options`, the documents `files`, the
budget `budget`, the warming of one file `warming`; `status.hdf5_status` is what
`syncd status` shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pymongo.database import Database
from pymongo.errors import PyMongoError

from legacy_adapters.hdf5 import BadFile, FileBusy, FileSig
from legacy_adapters.hdf5_index import FileInfo, inspect, list_files, matches, wait_stable
from syncd.checkpoint.hdf5 import record_hdf5_status
from syncd.checkpoint.store import StateStore
from syncd.connect.reasons import mongo_reason
from syncd.connect.redis_urls import server_info
from syncd.hdf5.budget import plan_budget
from syncd.hdf5.features import extractors_for, prepare_torch
from syncd.hdf5.files import Hdf5Files, doc_sig, meta_for, stale_record, under
from syncd.hdf5.identity import repair
from syncd.hdf5.options import Hdf5Config
from syncd.hdf5.report import ScanReport
from syncd.hdf5.warming import FileWarmer, Scrub
from syncd.progress import Progress
from syncd.redact import scrub
from syncd.sinks.cache import CacheWriter
from syncd.sinks.events import publish_event

log = logging.getLogger(__name__)

MIN_RETRY_SECONDS = 0.25  # a busy file is not reopened more often than this


class Hdf5Follower:
    """Indexes and warms the HDF5 caches; one `scan_once` per file event or timer tick.

    `config` is the checked settings (syncd.api.hdf5_options), `source_id` the source
    whose daemon or command indexes them, `db` the target database, `client` a Redis
    client (binary responses). The
    daemon watches `watch_paths()` (recursively) and calls `scan_once()` after events
    for paths where `wants(path)` is true, and again after `next_due()` seconds.
    """

    def __init__(self, config: Hdf5Config, source_id: str, db: Database, client: redis.Redis,
                 progress: Progress | None = None,
                 on_slab: Callable[[Path, int], None] | None = None,
                 scrub_bytes: int | None = None) -> None:
        self.config = config
        prepare_torch(self.config.features)  # fails now, in one clear line, if torch is missing
        self.db = db
        self.files = Hdf5Files(db, source_id, self.config.dirs, self.config.layouts)
        self.redis = client
        self.cache = CacheWriter(client, self.config.prefix, self.config.max_value_bytes,
                                 self.config.events_maxlen)
        self.keys = self.cache.keys
        self.progress = progress or Progress(enabled=False)
        self.on_slab = on_slab
        self.source_id = source_id
        self._seen: dict[Path, tuple[FileSig, float]] = {}
        self._pending_since: dict[Path, float] = {}
        self._redis_run_id: str | None = None
        self._evicted: int | None = None
        self._verified_at: float | None = None
        self._repaired = False  # duplicates an earlier version left (syncd.hdf5.identity)
        self.scrub = Scrub(scrub_bytes)

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
        report = ScanReport(budget_bytes=self.config.max_bytes,
                            workers=self.config.warm_workers)
        try:
            full_verify = self._redis_changed()
            if not self._repaired:
                self._repair()
            paths = list_files(self.config.dirs, self.config.patterns)
            report.files = len(paths)
            docs = self.files.by_path()
            for path in paths:
                self._index_one(path, docs, report)
            for doc in [d for d in docs.values() if d and d.get("stale_generations")]:
                self._drop_stale(doc)  # left pending by a crash or a Redis outage
                if doc.get("state") == "quarantined":
                    self.cache.forget(doc["fid"], doc["path"])
            self._remove_missing(set(map(str, paths)), docs, report)
            self._plan_and_warm(report, full_verify)
            record_hdf5_status(self.db, self.source_id, self.config.max_bytes, self.config.prefix,
                               self.config.dirs, report.used_bytes)
        except redis.RedisError as exc:
            report.redis_error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, redis.exceptions.OutOfMemoryError):
                report.redis_error = ("Redis is full (its maxmemory, and a policy that evicts "
                                      "nothing): set [cache] max_bytes below Redis' maxmemory, "
                                      "or raise it; " + report.redis_error)
            self._redis_run_id = None  # check everything again once it is back
            log.warning("Redis failed during the HDF5 pass (%s); the next pass carries on",
                        report.redis_error)
        except PyMongoError as exc:
            report.mongo_error = mongo_reason(exc)  # one line for the status; the log: all
            log.warning("MongoDB failed during the HDF5 pass (%s); the next pass carries on",
                        scrub(str(exc))[:2000])
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
        if doc is not None and doc_sig(doc) == sig and \
                not self.files.examined_with_other_layouts(doc):
            self._pending_since.pop(path, None)
            report.unchanged += 1
            return
        stable, sig = wait_stable(path, self.config.debounce, self._seen)
        if not stable:
            self._pending_since.setdefault(path, time.monotonic())
            return
        try:
            info = inspect(path, self.config.layouts, workers=self.config.warm_workers)
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
            docs[str(path)] = self.files.find(path) or {}
            return
        self._pending_since.pop(path, None)
        docs[str(path)] = self._store_index(info, doc, report)

    def _dir_of(self, path: Path) -> str:
        for d in self.config.dirs:
            if d in path.parents:
                return str(d)
        return str(path.parent)

    def _store_index(self, info: FileInfo, doc: dict[str, Any] | None,
                     report: ScanReport) -> dict[str, Any]:
        """Write the file's document; a new generation retires the old one's keys."""
        path = info.path
        new_doc, same_content = self.files.write_index(info, doc, self._dir_of(path), self._stale)
        meta = meta_for(new_doc)
        gen = meta.gen
        if same_content:
            # Only the stat moved (a touch, a copy of the same bytes): keep the keys.
            existing = self.cache.file(meta.fid)
            if existing is not None and existing.gen == gen:
                meta.cached = existing.cached
                meta.features = existing.features
            self.cache.write_meta(meta)
        else:
            self.cache.write_meta(meta)
            self._drop_stale(new_doc)
            report.indexed.append(str(path))
            self._publish({"type": "hdf5.indexed", "path": str(path), "generation": gen,
                           "windows": info.n_windows})
            log.info("indexed %s: %d windows %s %s, generation %d", path, info.n_windows,
                     info.window_dtype, info.window_shape, gen)
        return new_doc

    def _stale(self, doc: dict[str, Any]) -> dict[str, Any]:
        """`stale_record`, widened by what a warm that never finished wrote: the windows
        and features the Redis metadata records, and every configured extractor's keys."""
        record = stale_record(doc)
        features = set(record["features"]) | set(self._feature_plan(doc))
        meta = self.cache.file(doc["fid"]) if doc.get("fid") else None
        self.cache.unreadable.pop(doc.get("fid") or "", None)
        if meta is not None and meta.gen == record["generation"]:
            record["windows"] = max(record["windows"], meta.cached)
            features |= set(meta.features)
        record["features"] = sorted(features)
        return record

    def _drop_stale(self, doc: dict[str, Any]) -> None:
        """Delete the keys of retired generations, then forget them (crash-safe order)."""
        for stale in doc.get("stale_generations") or []:
            gen, n = int(stale["generation"]), int(stale.get("windows") or 0)
            self.cache.delete_values(doc["fid"], gen, 0, n, stale.get("features") or [])
            self.cache.delete_labels(doc["fid"], gen)
            self.files.pull_stale(doc, gen)

    def _quarantine(self, path: Path, sig: FileSig, error: str, doc: dict[str, Any] | None,
                    report: ScanReport) -> None:
        log.warning("quarantined %s: %s", path, error)
        new_doc = self.files.write_quarantine(path, self._dir_of(path), sig, error, doc,
                                              self._stale)
        if new_doc.get("n_windows") is not None:
            self._drop_stale(new_doc)
        self.cache.forget(str(new_doc.get("fid") or self.files.id_for(path)), str(path))
        report.quarantined.append({"path": str(path), "error": error})
        self._publish({"type": "hdf5.quarantined", "path": str(path), "error": error})

    def _publish(self, event: dict[str, Any]) -> None:
        publish_event(self.redis, self.keys.events, event, self.cache.events_maxlen)

    def _remove_missing(self, present: set[str], docs: dict[str, dict[str, Any]],
                        report: ScanReport) -> None:
        """Files that are gone from a watched directory lose their document and keys."""
        # A watched directory that is not there (an unmounted volume) removes nothing.
        dirs = [d for d in self.config.dirs if d.is_dir()]
        for path, doc in list(docs.items()):
            if path in present or not doc or not under(path, dirs):
                continue
            if Path(path).exists():  # e.g. renamed to a name the patterns no longer match
                continue
            if doc.get("generation") and doc.get("n_windows") is not None:
                self._drop_stale(self.files.push_stale(doc, self._stale(doc)))
            self.cache.forget(doc["fid"], path)
            self.files.delete(doc)
            docs.pop(path)
            self._pending_since.pop(Path(path), None)
            report.removed.append(path)
            self._publish({"type": "hdf5.removed", "path": path})

    def _repair(self) -> None:
        """Merge the records an earlier version kept per source into one per file, once."""
        hosts = {s["source_id"]: s["host"] for s in StateStore(self.db).sources()
                 if s.get("source_id") and s.get("host")}
        dropped = repair(self.files, self.cache, hosts, self._stale, self._drop_stale)
        if dropped:
            self._publish({"type": "hdf5.merged", "records_dropped": dropped})
        self._repaired = True

    def _redis_changed(self) -> bool:
        """True when Redis restarted, evicted keys, or the verify interval passed."""
        server = server_info(self.redis, "server")
        stats = server_info(self.redis, "stats")
        run_id, evicted = server.get("run_id"), int(stats.get("evicted_keys", 0))
        now = time.monotonic()
        changed = (run_id != self._redis_run_id or evicted != self._evicted
                   or self._verified_at is None
                   or now - self._verified_at >= self.config.verify_seconds)
        if run_id != self._redis_run_id:  # first pass, or another (restarted) server
            self._check_maxmemory()
        self._redis_run_id, self._evicted = run_id, evicted
        if changed:
            self._verified_at = now
        return changed

    def _check_maxmemory(self) -> None:
        """Warn once per server when its maxmemory is below the budget: Redis would evict
        windows that every verify pass warms again, a churn nothing else reports."""
        limit = int(server_info(self.redis, "memory").get("maxmemory") or 0)
        if 0 < limit < self.config.max_bytes:
            log.warning("Redis' maxmemory (%.1f MiB) is below [cache] max_bytes (%.1f MiB): "
                        "Redis will evict windows and syncd will warm them again every [hdf5] "
                        "verify_seconds; set max_bytes below maxmemory",
                        limit / 2**20, self.config.max_bytes / 2**20)

    def _feature_plan(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {ex.key: ex for ex in extractors_for(self.config.features, doc.get("attrs") or {})}

    def _plan_and_warm(self, report: ScanReport, full_verify: bool) -> None:
        """Share the budget (budget.plan_budget), then bring each file in line with its share."""
        files = [(doc, self._feature_plan(doc)) for doc in self.files.warmable()]
        plan = plan_budget(files, self.config.max_bytes, self.config.max_value_bytes,
                           self.config.warm_first)
        if full_verify:
            self.scrub.new_pass()
        warmer = FileWarmer(self.config, self.cache, self.files, self._quarantine,
                            self.progress, self.on_slab, self.scrub)
        # Every file's windows, also when Redis fails part way (a summary of the files warmed
        # so far would claim full coverage).
        report.windows_total += sum(int(p.doc["n_windows"]) for p in plan.files)
        for file_plan in plan.files:
            warmer.sync_file(file_plan, full_verify, report)
        report.used_bytes = plan.used_bytes
