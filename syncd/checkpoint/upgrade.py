"""Upgrading a database made before sources: one source, unkeyed state documents.

Earlier versions kept one source per database: `_syncd_state` documents with plain
ids (`meta`, `lease`, `capture`, ...), changelog entries keyed by version alone,
and documents without `_source`/`_v`. The first run of this version converts
that in place, under the source id the database already names (its documents'
`_id`s are hashed from it, so nothing is rewritten but two fields). The plain
`meta` document goes last: a crash midway simply upgrades again.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.store import CHANGELOG, QUARANTINE, RUNS, STATE, utcnow
from syncd.errors import ConfigError

log = logging.getLogger(__name__)

OLD_KINDS = ("source_file", "job", "lease", "capture", "scan", "consumer", "resync",
             "reconcile_request", "reconcile_done", "daemon", "hdf5", "meta")
SOURCE_FIELD, VERSION_FIELD = "_source", "_v"


def upgrade(db: Database, default_source: str) -> str | None:
    """Convert a single-source database in place; the source id it had (None: nothing to do)."""
    state = db[STATE]
    meta = state.find_one({"_id": "meta"})
    if meta is None:
        return None
    old = ((meta.get("params") or {}).get("source_id")
           or (state.find_one({"_id": "source_file"}) or {}).get("source_id") or default_source)
    lease = state.find_one({"_id": "lease"})
    if lease and lease.get("expires_at") and lease["expires_at"] > utcnow():
        raise ConfigError(f"database {db.name!r} is in use by an older syncd "
                          f"({lease.get('owner', '?')}); stop it before running this version")
    version = meta.get("version")
    for name in meta.get("collections", []):
        db[name].update_many({SOURCE_FIELD: {"$exists": False}},
                             {"$set": {SOURCE_FIELD: old, VERSION_FIELD: version}})
    for entry in list(db[CHANGELOG].find({"source_id": {"$exists": False}})):
        number = int(entry["_id"])
        db[CHANGELOG].replace_one({"_id": f"{number}:{old}"},
                                  {**entry, "_id": f"{number}:{old}", "version": number,
                                   "source_id": old}, upsert=True)
        db[CHANGELOG].delete_one({"_id": entry["_id"]})
    for name in (RUNS, QUARANTINE):
        db[name].update_many({"source_id": {"$exists": False}}, {"$set": {"source_id": old}})
    for kind in OLD_KINDS:
        doc = state.find_one({"_id": kind})
        if doc is None:
            continue
        new_kind = "source" if kind == "source_file" else kind
        moved: dict[str, Any] = {**doc, "_id": f"{new_kind}:{old}", "kind": new_kind,
                                 "source_id": old}
        if new_kind == "source":
            moved.setdefault("host", socket.gethostname())
        if kind != "lease":
            state.replace_one({"_id": moved["_id"]}, moved, upsert=True)
        state.delete_one({"_id": kind})
    log.warning("database %r: upgraded in place to keep many sources; its source is %r",
                db.name, old)
    return old
