"""`syncd status`: where the target stands, read from the target alone (no legacy access)."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from syncd.checkpoint.daemon_doc import daemon_status
from syncd.checkpoint.lease import current_lease
from syncd.checkpoint.positions import position_document
from syncd.checkpoint.store import STAGE_PREFIX, StateStore
from syncd.projection.unmirrored import newest


def _position(value: Any) -> Any:
    if isinstance(value, list):
        return [v if isinstance(v, (int, float, str)) or v is None else str(v) for v in value]
    return value


def collect_status(db: Database, source_id: str = "") -> dict[str, Any]:
    """Source `source_id`'s migration version, changelog, document counts, last run and
    checkpoints; and every source of the database (`sources`)."""
    from syncd.engine.fleet import list_sources

    return {"database": db.name, "source_id": source_id, "sources": list_sources(db),
            **source_status(db, source_id)}


def collect_fleet(db: Database) -> dict[str, Any]:
    """Every source of the database (`sources`) and, under `source_details`, each one's
    status as `collect_status` gives it alone: for a status that names no source in a
    database of several (`source_id` None: none is "this" source)."""
    from syncd.engine.fleet import list_sources

    rows = list_sources(db)
    return {"database": db.name, "source_id": None, "sources": rows,
            "source_details": {r["source_id"]: source_status(db, r["source_id"])
                               for r in rows}}


def source_status(db: Database, source_id: str) -> dict[str, Any]:
    """One source's part of `collect_status` (all but the database and the fleet)."""
    store = StateStore(db, source_id)
    meta = store.meta() or {}
    applied = store.applied()
    collections = []
    for name in meta.get("collections", []):
        collections.append({"collection": name,
                            "documents": db[name].count_documents({"_source": source_id})})
    job = store.job()
    checkpoint = None
    if job:
        checkpoint = {
            "target_version": job.get("version"), "phase": job.get("phase"),
            "started_at": job.get("started_at"),
            "tables": [{"table": t["table"], "collection": t["collection"],
                        "position": _position(t.get("position")), "rows": t.get("rows", 0),
                        "done": t.get("done", False)} for t in job.get("tables", [])],
        }
    lease = current_lease(store)
    # Runs recorded by earlier syncd versions carry the plan's kind in "kind".
    last = store.last_run("migrate", "rebuild", "reconcile", "resume")
    quarantine = store.quarantine_samples(5)
    daemon = daemon_status(store)
    capture = position_document(store)
    return {
        "version": meta.get("version"),
        "params": meta.get("params"),
        "updated_at": meta.get("updated_at"),
        "changelog": [{"version": e["version"], "file": e.get("file"),
                       "description": e.get("description"),
                       "checksum": (e.get("checksum") or "")[:12],
                       "applied_at": e.get("applied_at"), "seconds": e.get("seconds")}
                      for e in applied],
        "collections": collections,
        "staging": sorted(n for n in db.list_collection_names() if n.startswith(STAGE_PREFIX)),
        "checkpoint": checkpoint,
        "lease": {"owner": lease.get("owner"), "what": lease.get("what"),
                  "expires_at": lease.get("expires_at")} if lease else None,
        "last_run": None if last is None else {
            **{k: last.get(k) for k in ("at", "from_version", "to_version", "rows", "written",
                                        "deleted", "quarantined", "flagged", "seconds",
                                        "rows_per_second", "sqlite")},
            "kind": last.get("plan", last.get("kind"))},
        "daemon": daemon,
        "capture": capture,
        "not_mirrored": newest(daemon, meta),
        "quarantined": store.quarantine_count(),
        "quarantine_samples": quarantine,
    }
