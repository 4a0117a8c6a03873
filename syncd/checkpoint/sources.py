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
from pathlib import Path
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.store import StateStore
from syncd.checkpoint.upgrade import upgrade
from syncd.config import Settings
from syncd.errors import ConfigError

log = logging.getLogger(__name__)


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


def record(settings: Settings) -> dict[str, Any]:
    """The `source` document's fields for the configured file."""
    assert settings.sqlite is not None
    return {"path": identity(settings.sqlite), "host": socket.gethostname(),
            "fingerprint": fingerprint(settings.sqlite)}


def store_for(db: Database, settings: Settings) -> StateStore:
    """The configured source's state in `db` (a database of an earlier version is upgraded
    first, and the source id resolved: see `resolve`)."""
    upgrade(db, settings.source_id)
    store = StateStore(db, settings.source_id)
    resolve(store, settings)
    return store


def resolve(store: StateStore, settings: Settings) -> None:
    """With no explicit `--source-id`, keep the id a source already has for this host and
    file (a database made before ids named files keeps its old id); with no file
    either (`syncd status` alone), the database's only source, if it has one."""
    if "source_id" in settings.explicit:
        return
    if settings.sqlite is None:
        found = store.sources()
        found = found[0] if len(found) == 1 else None
    else:
        found = _same_file(store, settings)
    if found and found.get("source_id"):
        settings.source_id = found["source_id"]
    store.source_id = settings.source_id


def _same_file(store: StateStore, settings: Settings) -> dict[str, Any] | None:
    """The source recorded for this host's file, if any."""
    assert settings.sqlite is not None
    return store.state.find_one({"kind": "source", "host": socket.gethostname(),
                                 "path": identity(settings.sqlite)})


def check(store: StateStore, settings: Settings, record_it: bool = False,
          adopt: bool = False, verb: str = "sync") -> None:
    """Refuse a file other than the one the source mirrors; record it if `record_it`.

    `adopt` makes this file the mirrored one (a file that moved); `verb` names what
    the refused command would have done, for the message.
    """
    if settings.sqlite is None:
        return
    fields = record(settings)
    path = fields["path"]
    recorded = store.source_file()
    if recorded is None and not adopt:
        twin = _same_file(store, settings)
        if twin is not None and twin.get("source_id") != store.source_id:
            raise ConfigError(
                f"--sqlite {settings.sqlite}: this file is already source "
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
            store.record_source_file(fields, replace=True)
        return
    old = recorded.get("path")
    if adopt:
        if record_it:
            store.record_source_file(fields, replace=True)
            log.warning("source %r now mirrors %s (--adopt-file; it mirrored %s)",
                        store.source_id, path, old)
        return
    head = (f"--sqlite {settings.sqlite}: source {store.source_id!r} of database "
            f"{store.db.name!r} mirrors another file, {old}")
    if verb == "verify":
        raise ConfigError(f"{head}, so there is nothing to compare {path} with; pass the "
                          "--source-id it was synced as; if the file moved, "
                          "syncd migrate --adopt-file records the new path")
    raise ConfigError(f"{head} (to {verb} {path} as that source would delete that file's "
                      "documents); give this file its own --source-id (or leave it unset: "
                      "the default names host and file); if the file moved, pass --adopt-file")
