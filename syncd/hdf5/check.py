"""`syncd verify`'s check of the cache: Redis holds what the warm wrote of each HDF5 file.

For this host's files under `--hdf5-dir` (their `hdf5_files` documents, the index):

- every file the patterns match is indexed, and is as it was indexed (size, mtime,
  inode): else the cache holds an older version of it (a warm indexes it again);
- Redis' metadata of the file parses, the files index points to it, and it says what
  the document says (`meta_for`: generation, cache format, window and label dtype and
  shape, stat, layout; the windows and features cached);
- every window, feature row and the labels the document counts as cached hold a value
  of the right length whose checksum holds (syncd.sinks.checksum: seeded with the key's
  name, so a value swapped with another key's fails too).

Each value that fails is one line naming the file and the window. The values are not
read again from the files: the checksum proves each is what the warm wrote. A
quarantined file is named in a note (readers read it from the file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import redis
from pymongo.database import Database

from legacy_adapters.hdf5 import FileSig
from legacy_adapters.hdf5_index import list_files
from syncd.connect.redis_urls import is_cluster
from syncd.hdf5.files import Hdf5Files, doc_sig, meta_for
from syncd.hdf5.options import Hdf5Config
from syncd.sinks.cache import CacheError, FeatureMeta, FileMeta, Keys, check_dtype
from syncd.sinks.checksum import FORMAT, unseal

LINES = 20  # differences shown one per line; the rest are counted
BATCH_BYTES = 16 << 20  # values read per MGET, about
REPAIR = ("syncd warm writes the bad or missing values again (a running syncd run does, at "
          "the [hdf5] verify_seconds pass that reads them back)")


@dataclass
class CacheCheck:
    """What the check found: counts, the first differences (one line each), notes."""

    files: int = 0
    values: int = 0
    differences: int = 0
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rewarm: bool = False  # a value is bad or missing: a warm writes it again

    @property
    def ok(self) -> bool:
        return not self.differences

    def differ(self, line: str, rewarm: bool = True) -> None:
        self.differences += 1
        self.rewarm = self.rewarm or rewarm
        if len(self.lines) < LINES:
            self.lines.append(line)

    def shown(self) -> list[str]:
        """The lines `syncd verify` prints: each difference, the notes, a summary."""
        more = self.differences - len(self.lines)
        return ([f"cache: {line}" for line in self.lines]
                + ([f"cache: ... and {more} more"] if more else [])
                + [f"cache note: {note}" for note in self.notes]
                + [f"cache: {self.files} file(s), {self.values} value(s) checked: "
                   + ("each as written" if self.ok else f"{self.differences} difference(s)")])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "files": self.files, "values": self.values,
                "differences": self.differences, "lines": self.lines, "notes": self.notes}


def check_cache(config: Hdf5Config, db: Database, client: Any, source_id: str) -> CacheCheck:
    """Check this host's indexed files under `config.dirs` against Redis (see the module)."""
    out = CacheCheck()
    keys = Keys(config.prefix)
    docs = Hdf5Files(db, source_id, config.dirs, config.layouts).by_path()
    on_disk = {str(p) for p in list_files(config.dirs, config.patterns)}
    for path in sorted(on_disk - set(docs)):
        out.differ(f"{path}: not indexed (syncd warm or syncd run indexes it)", rewarm=False)
    try:
        for path, doc in sorted(docs.items()):
            if doc.get("state") == "quarantined":
                out.notes.append(f"{path}: quarantined ({doc.get('error')}); readers read "
                                 "it from the file")
                continue
            if path not in on_disk:
                out.differ(f"{path}: indexed, but the file is gone", rewarm=False)
                continue
            out.files += 1
            _check_file(out, client, keys, path, doc)
    except redis.RedisError as exc:
        out.differ(f"Redis failed during the check ({type(exc).__name__}: {exc}): the cache "
                   "is not verified", rewarm=False)
    if out.rewarm:
        out.notes.append(REPAIR)
    return out


def _check_file(out: CacheCheck, client: Any, keys: Keys, path: str,
                doc: dict[str, Any]) -> None:
    try:
        if FileSig.of(path) != doc_sig(doc):
            out.differ(f"{path}: changed since it was indexed (generation "
                       f"{doc.get('generation')}): the cache holds the older version; a "
                       "warm indexes it again", rewarm=False)
            return
    except FileNotFoundError:
        out.differ(f"{path}: indexed, but the file is gone", rewarm=False)
        return
    if doc.get("generation") is None or doc.get("n_windows") is None:
        return  # indexed without windows to cache (nothing in Redis to compare)
    want = meta_for(doc)
    cached = int(doc.get("cached_windows") or 0)
    features = {k: FeatureMeta(**f) for k, f in (doc.get("features") or {}).items()}
    if not cached and not any(f.windows for f in features.values()):
        return
    meta = _metadata(out, client, keys, path, want)
    if meta is None:
        return
    # A warm counts in Redis first, then in the document: equal once the file is warm.
    behind = meta.cached != cached if doc.get("state") == "warm" else meta.cached < cached
    if behind or meta.features != features:
        out.differ(f"{path}: Redis' metadata says {meta.cached} window(s) and features "
                   f"{_shown(meta.features)} cached, the index (hdf5_files) {cached} and "
                   f"{_shown(features)}; a warm writes both again", rewarm=False)
    size = want.window_bytes
    _values(out, client, path, keys.windows(want.fid, want.gen, range(cached)), size,
            lambda i: f"window {i}")
    labels = check_dtype(want.label_dtype).itemsize * math.prod([want.n_windows,
                                                                 *want.label_shape])
    _values(out, client, path, [keys.labels(want.fid, want.gen)], labels, lambda i: "labels")
    for fkey, f in sorted(features.items()):
        fsize = check_dtype(f.dtype).itemsize * math.prod(f.shape)
        _values(out, client, path, keys.features(want.fid, want.gen, fkey, range(f.windows)),
                fsize, lambda i, k=fkey: f"window {i} features {k}")


def _metadata(out: CacheCheck, client: Any, keys: Keys, path: str,
              want: FileMeta) -> FileMeta | None:
    """Redis' metadata of the file, if it is what the document says (else a line, None)."""
    indexed = client.hget(keys.files, path)
    if indexed is None or indexed.decode(errors="replace") != want.fid:
        out.differ(f"{path}: the cache's files index does not point to its metadata "
                   f"({keys.file(want.fid)}): readers miss every window")
    raw = client.hgetall(keys.file(want.fid))
    if not raw:
        out.differ(f"{path}: no metadata in Redis ({keys.file(want.fid)}): readers miss "
                   "every window")
        return None
    try:
        meta = FileMeta.from_hash(raw)
    except CacheError as exc:
        out.differ(f"{path}: metadata in Redis: {exc}")
        return None
    wrong = [name for name in ("gen", "path", "n_windows", "window_shape", "window_dtype",
                               "label_shape", "label_dtype", "size", "mtime_ns", "ino",
                               "layout") if getattr(meta, name) != getattr(want, name)]
    if meta.format != FORMAT:
        wrong.append("format")
    if wrong:
        out.differ(f"{path}: Redis' metadata and the index (hdf5_files) disagree on "
                   + ", ".join(f"{n} (Redis {getattr(meta, n)!r}, index {getattr(want, n)!r})"
                               for n in wrong) + "; a warm writes Redis' from the index",
                   rewarm=False)
        return None
    return meta


def _values(out: CacheCheck, client: Any, path: str, names: list[str], size: int,
            what: Any) -> None:
    """Check each value under `names` (the i-th named `what(i)`): there, `size` bytes and
    its checksum holding."""
    per = max(1, BATCH_BYTES // max(size, 1))
    mget = client.mget_nonatomic if is_cluster(client) else client.mget
    for a in range(0, len(names), per):
        batch = names[a:a + per]
        for i, (key, value) in enumerate(zip(batch, mget(batch)), start=a):
            out.values += 1
            if value is None:
                out.differ(f"{path} {what(i)}: not in Redis ({key})")
                continue
            try:
                unseal(key, value, size)
            except ValueError as exc:
                out.differ(f"{path} {what(i)}: {exc} ({key})")


def _shown(features: dict[str, FeatureMeta]) -> str:
    return "{" + ", ".join(f"{k}: {f.windows}" for k, f in sorted(features.items())) + "}"
