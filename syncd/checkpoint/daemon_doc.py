"""The running daemon's heartbeat: the `_syncd_state` document `daemon`.

`syncd run` replaces it at every heartbeat (syncd.daemon.health builds it) and
once more, `running: false`, when it stops. Other commands read it to learn
whether a daemon follows this database right now: a document whose heartbeat is
older than three intervals belongs to a daemon that died without a goodbye.
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

from syncd.checkpoint.store import utcnow

DAEMON_ID = "daemon"
STALE_BEATS = 3  # heartbeats missed before a daemon counts as gone


def save_daemon_doc(state: Collection, doc: dict[str, Any]) -> None:
    """Replace the heartbeat document with `doc` (a status document)."""
    state.replace_one({"_id": DAEMON_ID}, doc, upsert=True)


def _age(doc: dict[str, Any]) -> float:
    return (utcnow() - doc["heartbeat_at"]).total_seconds()


def _limit(doc: dict[str, Any]) -> float:
    return STALE_BEATS * float(doc.get("heartbeat_seconds", 5))


def live_daemon(state: Collection) -> dict[str, Any] | None:
    """The heartbeat document of a daemon running now (fresh heartbeat), else None."""
    daemon = state.find_one({"_id": DAEMON_ID}) or {}
    fresh = daemon.get("heartbeat_at") is not None and _age(daemon) < _limit(daemon)
    return daemon if daemon.get("running") and fresh else None


def daemon_status(state: Collection) -> dict[str, Any] | None:
    """The last heartbeat document for `syncd status`, with its age; a stale one is
    shown as not running, with a note."""
    daemon = state.find_one({"_id": DAEMON_ID})
    if not daemon:
        return None
    daemon.pop("_id", None)
    age = _age(daemon)
    daemon["heartbeat_age_seconds"] = round(age, 1)
    if daemon.get("running") and age > _limit(daemon):
        daemon["running"] = False  # no heartbeat: it died without a goodbye
        daemon["note"] = "no heartbeat: not running (or cannot reach MongoDB)"
    return daemon
