"""How `syncd run` is doing, as others see it: per-table stats, outages, the heartbeat.

The heartbeat writes one status document to three places: MongoDB (the `daemon`
state document, syncd.checkpoint.daemon_doc), `daemon.json` beside the state (so
`syncd status` works while MongoDB is down) and systemd (sd_notify STATUS and
WATCHDOG lines; the watchdog is fed only while the loop is seen alive).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from legacy_adapters.feed import FeedStatus
from syncd.checkpoint.daemon_doc import save_daemon_doc
from syncd.checkpoint.lease import Lease
from syncd.checkpoint.store import StateStore, utcnow
from syncd.connect.reasons import mongo_reason, outage_line
from syncd.daemon.options import DaemonOptions
from syncd.daemon.sdnotify import notify, watchdog_seconds
from syncd.errors import MigrationError
from syncd.projection.model import TableMap
from syncd.redact import scrub

log = logging.getLogger(__name__)

JULIAN_UNIX_EPOCH = 2440587.5


@dataclass
class TableStats:
    """What the daemon did to one table (shown by `syncd status`)."""

    table: str
    collection: str
    applied: int = 0
    deleted: int = 0
    quarantined: int = 0
    last_applied_at: dt.datetime | None = None
    last_error: str | None = None
    errors: int = 0  # failed writes (each retried): syncd_apply_errors_total
    reconciled_at: dt.datetime | None = None


@dataclass
class Outage:
    """A store (MongoDB or the legacy database) the loop is waiting for."""

    what: str
    since: dt.datetime
    error: str
    retries: int = 0


@dataclass
class DaemonState:
    """Shared between the loop and the scheduler's threads (under `lock`)."""

    started_at: dt.datetime = field(default_factory=utcnow)
    ready: bool = False
    outage: Outage | None = None
    tables: dict[str, TableStats] = field(default_factory=dict)
    dropped: dict[str, dt.datetime] = field(default_factory=dict)
    not_mirrored: list[dict[str, Any]] = field(default_factory=list)  # NotMirrored.document()
    alive: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Snapshot:
    """What the rest of the daemon contributes to a status document."""

    feed: FeedStatus  # where the feed stands (a log seq or marks) and its lag
    reconcile_pending: list[str]
    events: dict[str, Any]
    hdf5_dirs: list[str]
    hdf5: dict[str, Any] | None


def first_line(exc: BaseException) -> str:
    """An error's first line, short enough for a status document (its type if empty)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


class Health:
    """The shared state, and the heartbeat that publishes it (any thread)."""

    def __init__(self, options: DaemonOptions, store: StateStore, lease: Lease,
                 snapshot: Callable[[], Snapshot],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.store, self.lease, self.options = store, lease, options
        self.mode: str = options.capture
        self.snapshot, self.on_fatal = snapshot, on_fatal
        self.http_url: str | None = None  # where the HTTP server listens, once it does
        self.state = DaemonState()
        self.status_file = Path(options.state_dir) / "daemon.json"
        # Why daemon.json (the status beside the state) could not be written, if it could not.
        self.local_status_error: str | None = None

    # -- what the loop reports ----------------------------------------------------------------

    def alive(self) -> float:
        """The loop is moving (the systemd watchdog is fed only while it does)."""
        self.state.alive = time.monotonic()
        return self.state.alive

    def track(self, pairs: list[tuple[Any, TableMap]]) -> None:
        with self.state.lock:
            for info, mapping in pairs:
                self.state.tables.setdefault(info.name, TableStats(info.name, mapping.collection))

    def applied(self, table: str, result: Any) -> None:
        with self.state.lock:
            stats = self.state.tables[table]
            stats.applied += len(result.upserted)
            stats.deleted += len(result.deleted)
            stats.quarantined += result.quarantined
            stats.last_applied_at = utcnow()
            stats.last_error = None

    def failed(self, table: str, exc: BaseException) -> None:
        with self.state.lock:
            stats = self.state.tables[table]
            stats.last_error = first_line(exc)
            stats.errors += 1

    def reconciled(self, table: str, report: Any) -> None:
        with self.state.lock:
            stats = self.state.tables[table]
            stats.reconciled_at = utcnow()
            stats.applied += report.written
            stats.deleted += report.deleted
            stats.quarantined += report.quarantined

    def dropped(self, table: str) -> None:
        with self.state.lock:
            self.state.dropped[table] = utcnow()

    def added(self, tables: list[str]) -> None:
        with self.state.lock:
            for table in tables:
                self.state.dropped.pop(table, None)

    def skipped(self, tables: list[Any]) -> None:
        """The tables syncd cannot mirror now (`NotMirrored`s): logged when new, shown."""
        docs = [t.document() for t in tables]
        with self.state.lock:
            known = {d["table"] for d in self.state.not_mirrored}
            self.state.not_mirrored = docs
        for table in tables:
            if table.table not in known:
                log.warning("%s", table.line)

    def ready(self) -> None:
        with self.state.lock:
            self.state.ready = True

    def note_outage(self, what: str, exc: BaseException, delay: float) -> None:
        # One short line for the status, /readyz and STATUS; the log has the whole error.
        message = mongo_reason(exc) if what == "MongoDB" else first_line(exc)
        with self.state.lock:
            outage, ready = self.state.outage, self.state.ready
            if outage is None or outage.what != what:
                self.state.outage = Outage(what, utcnow(), message)
                log.warning("%s; retrying with backoff", outage_line(what, message),
                            extra={"source": self.store.source_id, "outage": what})
                if (detail := scrub(str(exc))[:2000]) != message:
                    log.info("%s: %s", what, detail)
            else:
                outage.retries += 1
                outage.error = message
                log.debug("%s still unavailable (%s); next try in %.1f s", what, message,
                          delay)
        notify(f"STATUS={'' if ready else 'starting: '}waiting for {what}: {message}")

    def outage_over(self) -> None:
        if self.state.outage is None:
            return
        with self.state.lock:
            outage, self.state.outage = self.state.outage, None
        log.info("%s is back after %.0f s; caught up", outage.what,
                 (utcnow() - outage.since).total_seconds())

    # -- the status document ---------------------------------------------------------------

    def _table_status(self, snap: Snapshot) -> list[dict[str, Any]]:
        pending = snap.feed.lag
        now_julian = time.time() / 86400 + JULIAN_UNIX_EPOCH
        rows = []
        with self.state.lock:
            stats = {k: asdict(v) for k, v in self.state.tables.items()}
            dropped = dict(self.state.dropped)
        for table, entry in sorted(stats.items()):
            count, oldest = pending.get(table, (0, None))
            entry.update({
                "mode": self.mode,
                "checkpoint": snap.feed.checkpoint(table),
                "lag_rows": count,
                "lag_seconds": round(max(0.0, (now_julian - oldest) * 86400), 3)
                if oldest else 0.0,
                "dropped_at": dropped.get(table),
            })
            rows.append(entry)
        for table, at in dropped.items():
            if table not in stats:
                rows.append({"table": table, "mode": self.mode, "dropped_at": at})
        return rows

    def status_document(self, final: bool = False) -> dict[str, Any]:
        snap = self.snapshot()
        with self.state.lock:
            outage = asdict(self.state.outage) if self.state.outage else None
            ready = self.state.ready
            started = self.state.started_at
            quiet = time.monotonic() - self.state.alive
        now = utcnow()
        return {
            "pid": os.getpid(), "host": socket.gethostname(), "mode": self.mode,
            "sqlite": str(self.options.sqlite), "database": self.store.db.name,
            "target": self.options.target,
            "started_at": started, "uptime_seconds": round((now - started).total_seconds()),
            "heartbeat_at": now, "heartbeat_seconds": self.options.heartbeat_seconds,
            "running": not final, "ready": ready, "outage": outage,
            "seq": snap.feed.seq, "reconcile_pending": snap.reconcile_pending,
            "tables": self._table_status(snap), "events": snap.events,
            "not_mirrored": list(self.state.not_mirrored),
            "hdf5_dirs": snap.hdf5_dirs, "hdf5": snap.hdf5,
            # Seconds since the loop last moved (a backoff wait counts as moving): /healthz.
            "loop_seconds_ago": round(quiet, 3), "http": self.http_url,
        }

    # -- the heartbeat -----------------------------------------------------------------------

    def heartbeat(self, final: bool = False) -> None:
        """Publish the status; renew the lease; tell systemd how things are."""
        doc = self.status_document(final)
        error = write_local_status(self.status_file, doc)
        if error is not None and self.local_status_error is None:
            log.warning("%s; syncing goes on (status stays in MongoDB)", error)
        elif error is None and self.local_status_error is not None:
            log.info("the local status %s is written again", self.status_file)
        self.local_status_error = error
        doc["local_status_error"] = error
        try:
            save_daemon_doc(self.store, doc)
            if not final:
                self.lease.renew_idle()
        except MigrationError as exc:
            self.on_fatal(exc)
            return
        except Exception as exc:  # the loop reports MongoDB outages; stay quiet here
            log.debug("heartbeat could not reach MongoDB: %s", exc)
        if not final:
            self._notify_systemd(doc)

    def _notify_systemd(self, doc: dict[str, Any]) -> None:
        limit = watchdog_seconds()
        quiet = time.monotonic() - self.state.alive
        if not doc["ready"]:
            # A long first backfill: keep systemd's start timeout from running out while
            # the work moves (each chunk marks the loop alive).
            doing = (f"waiting for {doc['outage']['what']}" if doc["outage"]
                     else "bringing MongoDB up to date")
            if quiet < 60:
                extend = int(4 * self.options.heartbeat_seconds * 1_000_000)
                notify(f"EXTEND_TIMEOUT_USEC={extend}\nSTATUS=starting: {doing}")
            return
        stale = limit is not None and quiet > limit / 2
        lag = max((t.get("lag_seconds") or 0.0 for t in doc["tables"]), default=0.0)
        rows = sum(t.get("lag_rows") or 0 for t in doc["tables"])
        status = (f"STATUS=waiting for {doc['outage']['what']}" if doc["outage"]
                  else f"STATUS=in sync; lag {lag:.1f} s, {rows} rows")
        notify(status if stale else "WATCHDOG=1\n" + status)


def write_local_status(path: Path, doc: dict[str, Any]) -> str | None:
    """The daemon's status beside its state, readable when MongoDB is not.

    Returns why it could not be written (a full disk, a read-only state dir), or None:
    a status file must never stop the sync it describes.
    """
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, default=_iso, indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return f"cannot write the local status {path}: {exc.strerror or exc}"
    return None


def _iso(value: Any) -> str:
    """A time as syncd shows it everywhere (ISO 8601, UTC as Z, the milliseconds MongoDB
    keeps of the same document), not str()'s "2026-12-08 01:54:31.986218"."""
    if isinstance(value, dt.datetime):
        text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
        return text + ("Z" if value.tzinfo is None else "")
    return str(value)


def read_local_status(path: Path) -> dict[str, Any] | None:
    """What the daemon last wrote beside its state (None if there is nothing readable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
