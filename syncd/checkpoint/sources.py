"""Sources: which legacy file each source of a database mirrors (`source:<id>` documents).

A database holds any number of sources. A source is named by its id (default
`HOST:/resolved/path/metadata.db`, so two files on one host are two sources) and
its first sync records the file: the resolved path, the host, and a fingerprint
(device and inode numbers plus the SQLite header fields a legacy writer never
changes: page size, text encoding, application id). A source id that shows up
with another file is refused, naming both: syncing it would delete the first
file's documents. A file that really moved is adopted with `--adopt-file`.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.positions import forget_capture
from syncd.checkpoint.store import StateStore
from syncd.checkpoint.upgrade import upgrade
from syncd.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceRef:
    """The source as configured (syncd.api builds it): its id, its file (None: `syncd
    status` with no --sqlite), and whether the id was given (`named`: --source-id)
    rather than defaulted, so that it is never looked up."""

    source_id: str
    sqlite: Path | None = None
    named: bool = False


def identity(path: Path) -> str:
    """The file's identity: its resolved absolute path (symbolic links followed)."""
    return str(Path(path).resolve())


def fingerprint(path: Path) -> dict[str, Any]:
    """Cheap facts that tell one file from another at the same path.

    The inode survives every write, VACUUM and rename within a file system but not
    a restore or a re-creation; the header fields read are fixed when the database
    is made (bytes 16-17 page size, 56-59 text encoding, 68-71 application id).
    """
    stat = os.stat(path)
    out: dict[str, Any] = {"dev": stat.st_dev, "ino": stat.st_ino}
    try:
        with open(path, "rb") as f:
            head = f.read(100)
        if len(head) == 100 and head.startswith(b"SQLite format 3\0"):
            out["page_size"] = struct.unpack(">H", head[16:18])[0]
            out["encoding"], = struct.unpack(">I", head[56:60])
            out["application_id"], = struct.unpack(">i", head[68:72])
    except OSError:
        pass
    return out


def record(sqlite: Path) -> dict[str, Any]:
    """The `source` document's fields for the file `sqlite`."""
    return {"path": identity(sqlite), "host": socket.gethostname(),
            "fingerprint": fingerprint(sqlite)}


def store_for(db: Database, ref: SourceRef) -> StateStore:
    """The configured source's state in `db` (a database of an earlier version is upgraded
    first, and the source id resolved: see `resolve`)."""
    upgrade(db, ref.source_id)
    return StateStore(db, resolve(StateStore(db, ref.source_id), ref))


def resolve(store: StateStore, ref: SourceRef) -> str:
    """The source's id in `store`'s database: the configured one, except that with no
    explicit `--source-id` the id a source already has for this host and file is kept
    (a database made before ids named files keeps its old id); with no file either
    (`syncd status` alone), the database's only source, if it has one."""
    if ref.named:
        return ref.source_id
    if ref.sqlite is None:
        found = store.sources()
        found = found[0] if len(found) == 1 else None
    else:
        found = _same_file(store, ref.sqlite)
    return str(found["source_id"]) if found and found.get("source_id") else ref.source_id


def _same_file(store: StateStore, sqlite: Path) -> dict[str, Any] | None:
    """The source recorded for this host's file, if any."""
    return store.state.find_one({"kind": "source", "host": socket.gethostname(),
                                 "path": identity(sqlite)})


def _replace_file(store: StateStore, fields: dict[str, Any]) -> None:
    """Record another file as the source's. The saved change-log position counted in
    the old file's log (a backup's log reuses seqs already applied; another file's log
    is another sequence), so it is dropped first: the next `syncd run` reconciles
    every table instead of resuming there (a crash between the two reconciles too)."""
    forget_capture(store)
    store.record_source_file(fields, replace=True)


def check(store: StateStore, sqlite: Path | None, record_it: bool = False,
          adopt: bool = False, verb: str = "sync") -> None:
    """Refuse a file other than the one the source mirrors; record it if `record_it`.

    Called once per command (by syncd.api). `adopt` makes this file the mirrored one (a
    file that moved); `verb` names what the refused command would have done.
    """
    if sqlite is None:
        return
    fields = record(sqlite)
    path = fields["path"]
    recorded = store.source_file()
    if recorded is None and not adopt:
        twin = _same_file(store, sqlite)
        if twin is not None and twin.get("source_id") != store.source_id:
            raise ConfigError(
                f"--sqlite {sqlite}: this file is already source "
                f"{twin['source_id']!r} of database {store.db.name!r} (as {store.source_id!r} "
                f"it would be mirrored twice); pass --source-id {twin['source_id']}")
    if recorded is None and record_it:
        if store.record_source_file(fields):
            return
        recorded = store.source_file()  # another syncd recorded one first
    if recorded is None or recorded.get("path") == path:
        if recorded is not None and record_it and recorded.get("fingerprint") != \
                fields["fingerprint"]:
            log.warning("source %r: %s is not the file first synced at that path (restored "
                        "or re-created); reconciling it", store.source_id, path)
            _replace_file(store, fields)
        return
    old = recorded.get("path")
    if adopt:
        if record_it:
            _replace_file(store, fields)
            log.warning("source %r now mirrors %s (--adopt-file; it mirrored %s)",
                        store.source_id, path, old)
        return
    head = (f"--sqlite {sqlite}: source {store.source_id!r} of database "
            f"{store.db.name!r} mirrors another file, {old}")
    if verb == "verify":
        raise ConfigError(f"{head}, so there is nothing to compare {path} with; pass the "
                          "--source-id it was synced as; if the file moved, "
                          "syncd migrate --adopt-file records the new path")
    raise ConfigError(f"{head} (to {verb} {path} as that source would delete that file's "
                      "documents); give this file its own --source-id (or leave it unset: "
                      "the default names host and file); if the file moved, pass --adopt-file")
