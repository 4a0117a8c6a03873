"""Warming one file to its planned share: windows, labels and features into Redis.

A `FileWarmer` serves one pass of `Hdf5Follower`: for each file of the budget plan
it checks what Redis still holds (all of it after a Redis restart, an eviction, or
every `verify_seconds`), trims what is over the file's share, and reads the rest
from the file in slabs, computing the features as it goes. Every key is written or
deleted through `CacheWriter`; the file's document through `Hdf5Files`.

A pass that checks everything (`full_verify`) also reads the values back and checks
their checksums (`Scrub`: all of them for `syncd warm`, a share per pass for `syncd
run`, taking up where the last pass stopped), and the file's metadata against what the
warm recorded: a value that fails, and the windows after it, are written again (so is
bad metadata), rather than left for every reader to skip.
"""

from __future__ import annotations

import collections
import json
import logging
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import redis

from legacy_adapters.hdf5 import BadFile, FileBusy, FileSig, Layout
from legacy_adapters.hdf5_slabs import SlabReader
from syncd.hdf5.budget import FilePlan
from syncd.hdf5.features import compute
from syncd.hdf5.files import Hdf5Files, doc_sig, meta_for
from syncd.hdf5.options import Hdf5Config
from syncd.hdf5.report import ScanReport
from syncd.progress import Progress
from syncd.sinks.cache import CacheWriter, FeatureMeta, FileMeta, check_dtype
from syncd.sinks.checksum import FORMAT, unseal
from syncd.sinks.events import publish_event

log = logging.getLogger(__name__)

MSET_BYTES = 16 << 20  # one MSET carries at most about this much
WRITE_AHEAD = 1  # slabs handed to the writer thread and not yet written

# Quarantines a file: (path, its stat, the error, its document, the pass's report).
Quarantine = Callable[[Path, FileSig, str, "dict[str, Any] | None", ScanReport], None]
SCRUB_BYTES = 64 << 20  # values `syncd run` reads back per full pass (`Scrub`): a
# 16 GiB cache is read back in about 4 h at the default 60 s, a small load on Redis


class Scrub:
    """Where the checksum check of the cached values got to, and what this pass may still
    read (`budget` None: everything, every full pass). With a budget, the check goes
    round: values read to their end are skipped until every file's have been (a pass
    that ends with budget left over ends the round), so no file waits on another."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget, self.left = budget, budget
        self.at: dict[str, int] = {}  # a file generation's windows or features -> next index
        self.finished: set[str] = set()  # read to their end in this round

    def new_pass(self) -> None:
        if self.left is None or self.left > 0:
            self.finished.clear()
        self.left = self.budget


class FileWarmer:
    """Brings each planned file's keys in line with its share of the budget (one pass)."""

    def __init__(self, config: Hdf5Config, cache: CacheWriter, files: Hdf5Files,
                 quarantine: Quarantine, progress: Progress,
                 on_slab: Callable[[Path, int], None] | None = None,
                 scrub: Scrub | None = None) -> None:
        self.config, self.cache, self.files = config, cache, files
        self.redis, self.keys = cache.redis, cache.keys
        self.quarantine = quarantine
        self.progress, self.on_slab = progress, on_slab
        self.scrub = scrub or Scrub()

    def _sound(self, keys: list[str], size: int, name: str, path: str,
               after: str = " and the windows after it") -> int:
        """The index of the first of `keys` whose value is not `size` bytes with its
        checksum holding, else len(keys); checks from where the last pass stopped, as
        far as the pass's budget goes."""
        scrub = self.scrub
        if scrub.budget is not None and name in scrub.finished:
            return len(keys)
        start = scrub.at.get(name, 0) if scrub.budget is not None else 0
        start = start if start < len(keys) else 0
        per = max(1, (16 << 20) // max(size, 1))
        mget = self.redis.mget_nonatomic if self.cache.cluster else self.redis.mget
        at = start
        while at < len(keys) and (scrub.left is None or scrub.left > 0):
            n = per if scrub.left is None else min(per, -(-scrub.left // max(size, 1)))
            batch = keys[at:at + n]
            for i, (key, value) in enumerate(zip(batch, mget(batch)), start=at):
                try:
                    unseal(key, value, size)
                except ValueError as exc:
                    log.warning("%s: the cached value under %s is bad (%s); writing it%s "
                                "again", path, key, exc, after)
                    scrub.at.pop(name, None)
                    return i
            at += len(batch)
            if scrub.left is not None:
                scrub.left -= len(batch) * size
        if at < len(keys):
            scrub.at[name] = at
        else:
            scrub.at.pop(name, None)
            scrub.finished.add(name)
        return len(keys)

    def _scrub(self, plan: FilePlan, cached: int, done: dict[str, int]
               ) -> tuple[int, dict[str, int], bool]:
        """`cached` and `done` cut at the first value that fails its checksum, and whether
        the labels must be written again."""
        doc = plan.doc
        fid, gen, path = doc["fid"], int(doc["generation"]), doc["path"]
        meta = meta_for(doc)
        cached = self._sound(self.keys.windows(fid, gen, range(cached)), meta.window_bytes,
                             f"{fid}:{gen}:w", path)
        for fkey in list(done):
            shape, dtype = plan.shapes.get(fkey) or ((), "")
            if not dtype:
                continue
            size = check_dtype(dtype).itemsize * math.prod(shape)
            done[fkey] = self._sound(self.keys.features(fid, gen, fkey, range(done[fkey])),
                                     size, f"{fid}:{gen}:f:{fkey}", path,
                                     " and the feature rows after it")
        labels = check_dtype(meta.label_dtype).itemsize * math.prod(
            [meta.n_windows, *meta.label_shape])
        relabel = bool(cached) and self._sound([self.keys.labels(fid, gen)], labels,
                                               f"{fid}:{gen}:l", path, "") == 0
        return cached, done, relabel

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

    def sync_file(self, plan: FilePlan, full_verify: bool, report: ScanReport) -> None:
        """Check, trim or warm one file to its plan (`full_verify`: check every key)."""
        doc, extractors, shapes, target = plan.doc, plan.extractors, plan.shapes, plan.target
        fid, gen = doc["fid"], int(doc["generation"])
        cached = int(doc.get("cached_windows") or 0)
        done = {k: int(v.get("windows") or 0) for k, v in (doc.get("features") or {}).items()}
        meta = self.cache.file(fid)
        if self.cache.unreadable.pop(fid, None) is not None:
            report.metadata_repaired.append(doc["path"])  # a miss; _warm_file writes it again
        if meta is not None and meta.gen < gen:
            # Metadata of a generation the document has moved past and no longer retires
            # (Redis came back from an older snapshot, or lost a deletion): delete the
            # values it records. Never a newer one: another syncd may have indexed it.
            self.cache.delete_values(fid, meta.gen, 0, meta.cached, list(meta.features))
            self.cache.delete_labels(fid, meta.gen)
        if meta is not None and meta.format != FORMAT and meta.gen == gen:
            # Values of an older format (no checksum, or no hash tag) read as misses: delete
            # them (under either layout) and write them again.
            self.cache.delete_values(fid, gen, 0, max(cached, meta.cached), list(done))
            self.cache.delete_labels(fid, gen)
            cached, done, meta = 0, dict.fromkeys(done, 0), None
        if full_verify or doc.get("state") != "warm" or meta is None or meta.gen != gen:
            cached = self._present(self.keys.windows(fid, gen, range(cached)))
            for fkey in list(done):
                done[fkey] = self._present(self.keys.features(fid, gen, fkey, range(done[fkey])))
            if not self.redis.exists(self.keys.labels(fid, gen)):
                cached, done = 0, dict.fromkeys(done, 0)
        relabel = False
        if full_verify:
            cached, done, relabel = self._scrub(plan, cached, done)
        if not plan.labels:
            self.cache.delete_labels(fid, gen)
        # Extractors no longer configured: drop their keys, nothing else.
        for fkey in [k for k in done if k not in extractors]:
            self.cache.delete_values(fid, gen, 0, done[fkey], [fkey], windows=False)
            done.pop(fkey)
        if cached > target:
            self.cache.delete_values(fid, gen, target, cached, list(done))
            report.windows_trimmed += cached - target
            cached = target
        done = {k: min(done.get(k, 0), cached) for k in extractors}
        need_features = {k: n for k, n in done.items() if n < target}
        if cached >= target and not need_features and doc.get("state") == "warm" and \
                meta is not None and meta.gen == gen and not relabel:
            report.windows_cached += cached
            if cached != int(doc.get("cached_windows") or 0) or \
                    doc.get("cache_bytes") != plan.cost or \
                    (full_verify and not self._meta_holds(meta, doc, extractors, shapes,
                                                          cached, done)):
                self._finish(doc, extractors, shapes, cached, done, plan.cost)
            return
        self._warm_file(plan, cached, done, report)

    def _warm_file(self, plan: FilePlan, cached: int, done: dict[str, int],
                   report: ScanReport) -> None:
        doc, extractors, shapes, target = plan.doc, plan.extractors, plan.shapes, plan.target
        fid, gen, path = doc["fid"], int(doc["generation"]), Path(doc["path"])
        try:
            if FileSig.of(path) != doc_sig(doc):
                report.changed_while_warming.append(str(path))
                return  # the next pass re-indexes it as a new generation
        except FileNotFoundError:
            return
        self.files.mark_warming(doc)
        meta = meta_for(doc)
        meta.cached = cached
        meta.features = {k: FeatureMeta(ex.name, ex.params, shapes[k][0], shapes[k][1], done[k])
                         for k, ex in extractors.items()}
        self.cache.write_meta(meta)
        start = min([cached, *done.values()]) if target else target
        task = self.progress.task(path.name, target - start) if target > start else None
        written = 0
        try:
            with SlabReader(path, Layout(*meta.layout), self.config.warm_workers,
                            self.config.slab_bytes) as reader:
                if reader.n_windows != meta.n_windows:
                    raise FileBusy("the number of windows changed")
                if plan.labels:
                    self.cache.put_labels(meta, reader.labels())
                if target > start:
                    # One thread writes slab k to Redis while this one reads slab k+1 (and
                    # the reader's workers inflate the ones after); taken in order, so the
                    # recorded coverage only ever counts windows already written.
                    pending: collections.deque[tuple[int, int, Future[int]]] = \
                        collections.deque()

                    def written_one() -> int:
                        nonlocal cached
                        lo, hi, fut = pending.popleft()
                        count = fut.result()
                        cached = max(cached, hi)
                        for k in done:
                            done[k] = max(done[k], hi)
                        self.cache.set_cached(fid, cached)
                        if task is not None:
                            task.advance(hi - lo)
                        if self.on_slab is not None:
                            self.on_slab(path, hi)
                        return count

                    before, done_before = cached, dict(done)
                    with ThreadPoolExecutor(1, thread_name_prefix="syncd-write") as writer:
                        for first, windows in reader.slabs(start, target):
                            pending.append((first, first + len(windows), writer.submit(
                                self._write_slab, meta, first, windows, before, done_before,
                                extractors, report)))
                            while len(pending) > WRITE_AHEAD:
                                written += written_one()
                        while pending:
                            written += written_one()
        except redis.RedisError:
            raise
        except Exception as exc:
            changed = self._changed(path, doc)
            if changed or isinstance(exc, FileBusy):
                log.info("%s changed while being warmed; the next pass re-indexes it", path)
                report.changed_while_warming.append(str(path))
                self.files.record_partial(doc, min(cached, target))
                return
            error = exc.args[0] if isinstance(exc, BadFile) else \
                f"unreadable while warming: {type(exc).__name__}: {exc}"
            self.quarantine(path, doc_sig(doc) or FileSig.of(path), str(error)[:500], doc, report)
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
        publish_event(self.redis, self.keys.events, {
            "type": "hdf5.warmed", "path": str(path), "generation": gen, "cached": cached,
            "windows": int(doc["n_windows"])}, self.cache.events_maxlen)

    @staticmethod
    def _changed(path: Path, doc: dict[str, Any]) -> bool:
        try:
            return FileSig.of(path) != doc_sig(doc)
        except FileNotFoundError:
            return True

    def _write_slab(self, meta: FileMeta, first: int, windows: np.ndarray, cached: int,
                    done: dict[str, int], extractors: dict[str, Any],
                    report: ScanReport) -> int:
        """Write the slab's uncached windows and compute the features still missing."""
        stop = first + len(windows)
        written = 0
        lo = max(first, cached)
        if lo < stop:
            rows = windows[lo - first:]
            per = max(1, MSET_BYTES // max(rows[0].nbytes, 1))
            for a in range(0, len(rows), per):
                part = rows[a:a + per]
                self.cache.put_windows(meta, lo + a, part)
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
                rows = {}
                for k, _ in wanted:
                    start = max(a, done[k])
                    if start >= b:
                        continue
                    rows[k] = (start, values[k][start - a:])
                    report.features_written += b - start
                self.cache.put_features(meta, rows)  # one MSET for every extractor
        return written

    def _meta_holds(self, meta: FileMeta, doc: dict[str, Any], extractors: dict[str, Any],
                    shapes: dict[str, tuple[list[int], str]], cached: int,
                    done: dict[str, int]) -> bool:
        """Whether Redis' metadata (and the files index's entry) is what `_finish` writes."""
        _, want = _final(doc, extractors, shapes, cached, done)
        if json.dumps(asdict(meta), sort_keys=True) == json.dumps(asdict(want), sort_keys=True) \
                and self.redis.hget(self.keys.files, doc["path"]) == doc["fid"].encode():
            return True
        log.warning("%s: the cache's metadata is not what the warm recorded; writing it "
                    "again", doc["path"])
        return False

    def _finish(self, doc: dict[str, Any], extractors: dict[str, Any],
                shapes: dict[str, tuple[list[int], str]], cached: int, done: dict[str, int],
                cost: int) -> None:
        features, meta = _final(doc, extractors, shapes, cached, done)
        self.files.record_warm(doc, cached, features, cost)
        self.cache.write_meta(meta)


def _final(doc: dict[str, Any], extractors: dict[str, Any],
           shapes: dict[str, tuple[list[int], str]], cached: int,
           done: dict[str, int]) -> tuple[dict[str, Any], FileMeta]:
    """A warmed file's features (as its document records them) and its Redis metadata."""
    features = {k: {"name": ex.name, "params": ex.params, "shape": shapes[k][0],
                    "dtype": shapes[k][1], "windows": min(done.get(k, 0), cached)}
                for k, ex in extractors.items()}
    meta = meta_for(doc)
    meta.cached = cached
    meta.features = {k: FeatureMeta(**f) for k, f in features.items()}
    return features, meta
