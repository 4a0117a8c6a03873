"""The `hdf5_files` collection: one document per HDF5 file on a host, and its only writer.

A file has one identity, its host and absolute path (`host`, `path`), whichever
command saw it (`syncd warm` alone, or `syncd run --sqlite ...` as a source of its
own): the document is found by those two, never by the source. A document records
the file's stat and fingerprint, its datasets and attributes, its state (`indexed`,
`warming`, `warm`, `quarantined`), its generation, what is cached of it
(`cached_windows`, `features`, `cache_bytes`), the layout settings it was examined
with (`layouts_key`: a quarantined file is examined again when they change), the
source that wrote it last (`source_id`) and the retired generations whose Redis keys
are still to be deleted (`stale_generations`, recorded before the deletion so a
crash cannot leak them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from legacy_adapters.hdf5 import FileSig, Layout
from legacy_adapters.hdf5_index import FileInfo
from syncd.checkpoint.store import utcnow
from syncd.projection.ids import derive_id
from syncd.sinks.cache import FileMeta

HDF5_FILES = "hdf5_files"
WARMABLE = ("indexed", "warming", "warm")

Stale = Callable[[dict[str, Any]], dict[str, Any]]


def next_generation(old: int) -> int:
    """The generation after `old`: at least the time now in milliseconds, so a path never
    gets a generation it had before, not even after its document was deleted (the file
    removed, then written again) or lost. Keys and checksums are named by the generation:
    a Redis that lost writes (restarted from an older snapshot, failed over to a lagging
    replica) may still hold the old content's values, and they must not be this one's."""
    return max(old + 1, time.time_ns() // 1_000_000)


def _safe_key(key: str) -> str:
    """An attribute name usable as a MongoDB field name (full-width stand-ins for . and $)."""
    key = key.replace(".", "\uff0e")
    return "\uff04" + key[1:] if key.startswith("$") else key


def doc_sig(doc: dict[str, Any]) -> FileSig | None:
    """The stat a document recorded (None if it has none)."""
    try:
        return FileSig(int(doc["size"]), int(doc["mtime_ns"]), int(doc["ino"]))
    except (KeyError, TypeError, ValueError):
        return None


def stale_record(doc: dict[str, Any]) -> dict[str, Any]:
    """What deleting a retired generation needs: its number, window count and feature keys."""
    return {"generation": int(doc["generation"]),
            "windows": max(int(doc.get("n_windows") or 0), int(doc.get("cached_windows") or 0)),
            "features": sorted((doc.get("features") or {}).keys())}


def meta_for(doc: dict[str, Any]) -> FileMeta:
    """The Redis metadata of a document's current generation (nothing cached yet)."""
    return FileMeta(
        fid=doc["fid"], gen=int(doc["generation"]), path=doc["path"],
        n_windows=int(doc["n_windows"]), window_shape=list(doc["window_shape"]),
        window_dtype=doc["window_dtype"], label_shape=list(doc["label_shape"]),
        label_dtype=doc["label_dtype"], size=int(doc["size"]), mtime_ns=int(doc["mtime_ns"]),
        ino=int(doc["ino"]), cached=0,
        layout=[doc["layout"]["windows"], doc["layout"]["labels"]],
    )


def layouts_key(layouts: Sequence[Layout]) -> str:
    """A digest of the `[hdf5] layouts` setting (in its order): what a file was examined with."""
    blob = json.dumps([[lay.windows, lay.labels] for lay in layouts])
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def paths_matching(db: Database, query: Mapping[str, Any]) -> list[str]:
    """The paths of the files matching a filter, in path order, quarantined ones left out
    (each path once, should a database still hold two records of one file)."""
    wanted = {"$and": [dict(query), {"state": {"$ne": "quarantined"}}]}
    found = (d["path"] for d in db[HDF5_FILES].find(wanted, {"path": 1}).sort("path", 1))
    return list(dict.fromkeys(found))


def under(path: str, dirs: Iterable[Path]) -> bool:
    """Whether `path` lies in one of `dirs` (at any depth)."""
    parents = Path(path).parents
    return any(d in parents for d in dirs)


class Hdf5Files:
    """The documents of this host's files under `dirs` (the follower's directories):
    reads, and every write. `source_id` is recorded as the last writer."""

    def __init__(self, db: Database, source_id: str, dirs: Iterable[Path] = (),
                 layouts: Sequence[Layout] = (), host: str | None = None) -> None:
        self.coll = db[HDF5_FILES]
        self.source_id = source_id
        self.host = host or socket.gethostname()
        self.dirs = tuple(dirs)
        self.layouts_key = layouts_key(layouts)

    def id_for(self, path: Path) -> Any:
        """A new document's id (and file id): the host and path. A database made before
        identities were per host keeps the id its surviving record had."""
        return derive_id(self.host, HDF5_FILES, (str(path),))

    def _where(self, path: Path | str) -> dict[str, Any]:
        return {"host": self.host, "path": str(path)}

    def mine(self) -> list[dict[str, Any]]:
        """This host's documents of files under the directories."""
        return [d for d in self.coll.find({"host": self.host}) if under(d["path"], self.dirs)]

    def by_path(self) -> dict[str, dict[str, Any]]:
        return {d["path"]: d for d in self.mine()}

    def get(self, _id: Any) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": _id})

    def find(self, path: Path | str) -> dict[str, Any] | None:
        """The document of the file at `path` on this host."""
        return self.coll.find_one(self._where(path))

    def warmable(self) -> list[dict[str, Any]]:
        """The documents whose files can be warmed (indexed, warming or warm)."""
        return [d for d in self.mine() if d.get("state") in WARMABLE]

    def examined_with_other_layouts(self, doc: dict[str, Any]) -> bool:
        """A quarantined file examined with other `[hdf5] layouts` than now: examine it again
        (a layout added for it must not wait for the file to be touched)."""
        return doc.get("state") == "quarantined" and doc.get("layouts_key") != self.layouts_key

    @staticmethod
    def same_content(doc: dict[str, Any] | None, info: FileInfo) -> bool:
        """Whether a file's new index describes the bytes the document already has."""
        return (
            doc is not None and doc.get("state") != "quarantined"
            and doc.get("fingerprint") == info.fingerprint
            and doc.get("window_shape") == info.window_shape
            and doc.get("window_dtype") == info.window_dtype
            and doc.get("n_windows") == info.n_windows
        )

    def write_index(self, info: FileInfo, doc: dict[str, Any] | None, directory: str,
                    stale: Stale) -> tuple[dict[str, Any], bool]:
        """Write a complete file's document; returns it and whether its content is the same.

        New content is a new generation: the old one (if it was cached) is recorded in
        `stale_generations`, as `stale(doc)` describes it, for its keys to be deleted."""
        path = info.path
        same_content = self.same_content(doc, info)
        old_gen = int(doc.get("generation") or 0) if doc else 0
        gen = old_gen if same_content else next_generation(old_gen)
        now = utcnow()
        fields: dict[str, Any] = {
            "source_id": self.source_id, "host": self.host, "path": str(path),
            "dir": directory, "name": path.name, **info.sig.document(),
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
            "layouts_key": self.layouts_key,
        }
        update: dict[str, Any] = {"$set": fields, "$setOnInsert": self._new_ids(path)}
        if not same_content:
            fields.update(state="indexed", cached_windows=0, features={}, cache_bytes=0)
            if doc and old_gen and doc.get("state") != "quarantined":
                update["$push"] = {"stale_generations": stale(doc)}
        self._upsert(path, update)
        return self.find(path) or {}, same_content

    def _upsert(self, path: Path, update: dict[str, Any]) -> None:
        """Update the file's document, or insert it with its `_id`. `syncd warm` and
        `syncd run` may insert the same new file at the same moment: the loser's insert
        is a duplicate `_id`, and its second try updates the winner's document."""
        try:
            self.coll.update_one(self._where(path), update, upsert=True)
        except DuplicateKeyError:
            self.coll.update_one(self._where(path), update, upsert=True)

    def _new_ids(self, path: Path) -> dict[str, Any]:
        _id = self.id_for(path)
        return {"_id": _id, "fid": str(_id)}

    def write_quarantine(self, path: Path, directory: str, sig: FileSig, error: str,
                         doc: dict[str, Any] | None, stale: Stale) -> dict[str, Any]:
        """Mark a file quarantined with its error; a cached generation becomes stale."""
        update: dict[str, Any] = {"$set": {
            "source_id": self.source_id, "host": self.host, "path": str(path),
            "dir": directory, "name": path.name, **sig.document(),
            "state": "quarantined", "error": error, "quarantined_at": utcnow(),
            "updated_at": utcnow(), "cached_windows": 0, "cache_bytes": 0, "features": {},
            "layouts_key": self.layouts_key,
        }, "$setOnInsert": self._new_ids(path)}
        if doc and doc.get("state") != "quarantined" and doc.get("generation"):
            update["$push"] = {"stale_generations": stale(doc)}
        self._upsert(path, update)
        return self.find(path) or {}

    def push_stale(self, doc: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """Retire the document's generation (a removed file); returns the document now."""
        self.coll.update_one({"_id": doc["_id"]}, {"$push": {"stale_generations": record}})
        return self.get(doc["_id"]) or doc

    def pull_stale(self, doc: dict[str, Any], gen: int) -> None:
        """Forget a retired generation once its keys are deleted."""
        self.coll.update_one({"_id": doc["_id"]},
                             {"$pull": {"stale_generations": {"generation": gen}}})

    def mark_warming(self, doc: dict[str, Any]) -> None:
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {"state": "warming",
                                                            "updated_at": utcnow()}})

    def record_partial(self, doc: dict[str, Any], cached: int) -> None:
        """How far a warm got before the file changed under it."""
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {
            "cached_windows": cached, "updated_at": utcnow()}})

    def record_warm(self, doc: dict[str, Any], cached: int, features: dict[str, Any],
                    cost: int) -> None:
        now = utcnow()
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {
            "state": "warm", "cached_windows": cached, "features": features,
            "cache_bytes": cost, "warmed_at": now, "updated_at": now}})

    def delete(self, doc: dict[str, Any]) -> None:
        self.coll.delete_one({"_id": doc["_id"]})

    # -- records of earlier versions (syncd.hdf5.identity) ------------------------------

    def without_host(self) -> list[dict[str, Any]]:
        """Documents written before files had one identity per host (no `host`)."""
        return list(self.coll.find({"host": {"$exists": False}}))

    def adopt(self, docs: Iterable[dict[str, Any]]) -> None:
        """Record this host on earlier documents of its files (their ids are kept)."""
        ids = [d["_id"] for d in docs]
        if ids:
            self.coll.update_many({"_id": {"$in": ids}}, {"$set": {"host": self.host}})
        self.coll.create_index([("host", 1), ("path", 1)])
