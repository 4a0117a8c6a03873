"""The fleet view: every source of a database, read from its state documents alone."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from syncd.checkpoint.daemon_doc import daemon_status
from syncd.checkpoint.store import StateStore


def list_sources(db: Database) -> list[dict[str, Any]]:
    """One row per source: host, file, version, last heartbeat, lag, errors, stale.

    A source is stale when the daemon that followed it stopped or its heartbeat is old
    (`daemon_status` marks a daemon that stopped without a goodbye as not running); one that
    no daemon ever followed (migrated only) is "no daemon", not stale.
    """
    rows = []
    for doc in StateStore(db).sources():
        store = StateStore(db, doc["source_id"])
        meta = store.meta() or {}
        daemon = daemon_status(store)
        tables = (daemon or {}).get("tables") or []
        errors = [f"{t['table']}: {t['last_error']}" for t in tables if t.get("last_error")]
        if (daemon or {}).get("outage"):
            errors.append(f"outage: {daemon['outage'].get('message')}")
        rows.append({
            "source_id": doc["source_id"], "host": doc.get("host"), "path": doc.get("path"),
            "version": meta.get("version"),
            "heartbeat_at": (daemon or {}).get("heartbeat_at"),
            "running": bool(daemon and daemon.get("running")),
            "stale": bool(daemon and not daemon.get("running")),
            # live, stale (a daemon ran and has no fresh heartbeat), or no daemon (only
            # `syncd migrate` ever wrote this source: nothing stopped).
            "state": ("live" if daemon.get("running") else "stale") if daemon else "no daemon",
            # unknown (None) where no daemon ever followed: nothing measures a lag
            "lag_rows": sum(t.get("lag_rows") or 0 for t in tables) if daemon else None,
            "lag_seconds": max([t.get("lag_seconds") or 0.0 for t in tables], default=0.0)
            if daemon else None,
            "quarantined": store.quarantine_count(), "errors": errors,
        })
    return rows
