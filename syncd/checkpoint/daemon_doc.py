"""The running daemon's heartbeat: the `_syncd_state` document `daemon:<source id>`.

`syncd run` replaces it at every heartbeat (syncd.daemon.health builds it) and
once more, `running: false`, when it stops. Other commands read it to learn
whether a daemon follows this database right now: a document whose heartbeat is
older than three intervals belongs to a daemon that died without a goodbye.
"""

from __future__ import annotations

from typing import Any

from syncd.checkpoint.store import StateStore, utcnow

DAEMON_ID = "daemon"
STALE_BEATS = 3  # heartbeats missed before a daemon counts as gone


def save_daemon_doc(store: StateStore, doc: dict[str, Any]) -> None:
    """Replace the source's heartbeat document with `doc` (a status document)."""
    store.state.replace_one({"_id": store.key(DAEMON_ID)},
                            {**doc, "kind": DAEMON_ID, "source_id": store.source_id},
                            upsert=True)


def _age(doc: dict[str, Any]) -> float:
    return (utcnow() - doc["heartbeat_at"]).total_seconds()


def _limit(doc: dict[str, Any]) -> float:
    return STALE_BEATS * float(doc.get("heartbeat_seconds", 5))


def live_daemon(store: StateStore) -> dict[str, Any] | None:
    """The heartbeat document of the source's daemon running now (fresh), else None."""
    daemon = store.state.find_one({"_id": store.key(DAEMON_ID)}) or {}
    fresh = daemon.get("heartbeat_at") is not None and _age(daemon) < _limit(daemon)
    return daemon if daemon.get("running") and fresh else None


def live_daemons(store: StateStore) -> list[dict[str, Any]]:
    """The heartbeat documents of every source's daemon running now."""
    return [d for d in store.state.find({"kind": DAEMON_ID})
            if d.get("running") and d.get("heartbeat_at") is not None
            and _age(d) < _limit(d)]


def daemon_status(store: StateStore) -> dict[str, Any] | None:
    """The source's last heartbeat document for `syncd status`, with its age; a stale
    one is shown as not running, with a note."""
    return describe(store.state.find_one({"_id": store.key(DAEMON_ID)}))


def describe(daemon: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored heartbeat document as shown: its age, and a stale one marked."""
    if not daemon:
        return None
    for name in ("_id", "kind"):
        daemon.pop(name, None)
    age = _age(daemon)
    daemon["heartbeat_age_seconds"] = round(age, 1)
    if daemon.get("running") and age > _limit(daemon):
        daemon["running"] = False  # no heartbeat: it died without a goodbye
        daemon["note"] = "no heartbeat: not running (or cannot reach MongoDB)"
    return daemon


def forget_daemon_doc(store: StateStore, dry_run: bool) -> dict[str, int]:
    """The source's heartbeat document, when the source is removed."""
    return store.forget_kinds((DAEMON_ID,), dry_run)
