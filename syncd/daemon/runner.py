"""`syncd run`: keep MongoDB in sync with metadata.db while the legacy scripts write it.

Start-up brings the target to the latest migration (a backfill, a resumed one, or
a reconcile), then the loop follows every committed change:

- `triggers` mode (default): triggers log each changed row's key inside the
  writer's transaction (legacy_adapters/sqlite_capture.py); the loop reads the log
  in order, applies the rows' current state, checkpoints the log position in
  MongoDB after the write, and prunes applied entries in the background.
- `scan` mode (writes nothing to metadata.db): new rows by a per-table high-water
  mark; updates and deletes by a periodic chunked reconcile.

The loop wakes on file events (watchdog) or every `poll_seconds`. Schema drift is
handled on the fly: new tables start syncing, changed tables are reconciled,
dropped tables are reported. Periodic work (heartbeat, pruning, reconcile) runs on
APScheduler. Failures of MongoDB or SQLite are retried with capped, jittered
backoff; nothing is checkpointed past what was written. SIGTERM/SIGINT finish the
current batch and exit 0; SIGKILL at any moment loses and doubles nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from apscheduler.schedulers.background import BackgroundScheduler
from pymongo import ReturnDocument
from pymongo.database import Database

from legacy_adapters.base import Chunk, TableInfo
from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import CONSUMER_REFRESH_SECONDS, Capture, capturable
from syncd.checkpoint.lease import Lease
from syncd.checkpoint.resync import Resync
from syncd.checkpoint.store import StateStore, durable, utcnow
from syncd.config import Settings, section
from syncd.daemon.sdnotify import notify, watchdog_seconds
from syncd.daemon.wake import Waker
from syncd.engine.apply import Applier, group_keys
from syncd.engine.backfill import Engine, encode_position
from syncd.engine.migration_files import Migration
from syncd.engine.migrator import Migrator
from syncd.errors import FAILURES, ConfigError, MigrationError, SyncdError
from syncd.faults import crashpoint
from syncd.progress import Progress
from syncd.projection.model import Model, TableMap
from syncd.retry import Backoff, mongo_unavailable
from syncd.sinks.eventing import EventingSink
from syncd.sinks.events import MAXLEN as EVENTS_MAXLEN
from syncd.sinks.events import EventPublisher
from syncd.sinks.mongo import MongoSink

if TYPE_CHECKING:
    from syncd.hdf5.follower import Hdf5Follower

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "capture": "triggers",
    "poll_seconds": 0.5,
    # Steps start at least this far apart: a burst of commits is applied in one step.
    "min_step_seconds": 0.05,
    # The applied position is saved at most this often (applying is idempotent: a
    # crash re-applies at most this much; the log is pruned only up to what is saved).
    "checkpoint_seconds": 1.0,
    "batch": 2000,
    "reconcile_seconds": 0.0,  # 0: the mode's default (scan 300 s, triggers 3600 s)
    "prune_seconds": 5.0,
    "heartbeat_seconds": 5.0,
    "backoff_max_seconds": 30.0,
    "events_maxlen": EVENTS_MAXLEN,
    "watch": True,
    "hdf5_rescan_seconds": 60.0,
    # Another consumer of the change log (a `syncd run` into another database) keeps
    # its unapplied entries this long while it is stopped; one gone longer reconciles.
    "log_retention_seconds": 86400.0,
    # CPU niceness (and lowest best-effort I/O priority when > 0) of syncd and its
    # embedded servers: the legacy writers get the machine first.
    "nice": 0,
}
MODES = ("triggers", "scan")
JULIAN_UNIX_EPOCH = 2440587.5


class Stopping(SyncdError):
    """Raised inside long work when a stop was requested (the checkpoint is safe)."""

    exit_code = 0


def lower_priority(nice: int) -> None:
    """Yield the CPU and the disk to the legacy writers (children inherit both)."""
    if nice <= 0:
        return
    with contextlib.suppress(OSError):
        os.nice(nice)
    with contextlib.suppress(Exception):  # Linux only; psutil comes with the embedded extra
        import psutil

        psutil.Process().ionice(psutil.IOPRIO_CLASS_BE, value=7)


def daemon_options(settings: Settings, capture: str | None = None) -> dict[str, Any]:
    """The `[daemon]` settings, checked; `capture` (the --capture flag) wins."""
    options = section(settings, "daemon", DEFAULTS)
    if capture:
        options["capture"] = capture
    if options["capture"] not in MODES:
        raise ConfigError(f"[daemon] capture = {options['capture']!r}: use one of "
                          f"{', '.join(MODES)}")
    for key in ("poll_seconds", "prune_seconds", "heartbeat_seconds", "backoff_max_seconds",
                "hdf5_rescan_seconds", "log_retention_seconds"):
        if options[key] <= 0:
            raise ConfigError(f"[daemon] {key} = {options[key]}: must be positive")
    for key in ("min_step_seconds", "checkpoint_seconds"):
        if options[key] < 0:
            raise ConfigError(f"[daemon] {key} = {options[key]}: must not be negative")
    if not 0 <= options["nice"] <= 19:
        raise ConfigError(f"[daemon] nice = {options['nice']}: use 0 (as started) to 19")
    if options["batch"] <= 0:
        raise ConfigError(f"[daemon] batch = {options['batch']}: must be positive")
    if not options["reconcile_seconds"]:
        options["reconcile_seconds"] = 300.0 if options["capture"] == "scan" else 3600.0
    return options


class RoundItem(NamedTuple):
    """One table's part of a round: its rows, in triggers mode the changed keys, and
    the keys of rows that are probably new (first logged as an INSERT; in scan mode
    every row past the high-water mark)."""

    table: str
    info: TableInfo
    mapping: TableMap
    chunk: Chunk
    keys: set[Any] | None = None
    inserted: set[Any] | Literal[True] | None = None


@dataclass
class Round:
    """What one round reads: per table its rows (and the changed keys, triggers mode)
    and the log position it reaches (None in scan mode)."""

    items: list[RoundItem]
    seq: int | None
    full: bool = False  # a whole batch: more may be waiting right now


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
    reconciled_at: dt.datetime | None = None


@dataclass
class Outage:
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
    alive: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Daemon:
    """One `syncd run`: the start-up sync, then the follow loop until stopped."""

    def __init__(self, settings: Settings, source: SQLiteSource, db: Database,
                 migrations: list[Migration], options: dict[str, Any],
                 publisher: EventPublisher, follower: Hdf5Follower | None = None,
                 progress: Progress | None = None) -> None:
        self.settings, self.source, self.db = settings, source, db
        self.migrations, self.options, self.publisher = migrations, options, publisher
        self.mode: str = options["capture"]
        self.progress = progress or Progress(enabled=True)
        self.store = StateStore(db)
        self.resync = Resync(self.store.state)
        self.consumer: str | None = None  # this target's name in the change log's registry
        self.state = DaemonState()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.fatal: BaseException | None = None
        self.lease = Lease(self.store, "run")
        self.lease.on_renew = self._on_renew
        self.tables_by_collection: dict[str, str] = {}
        self.sink = EventingSink(MongoSink(db), publisher, self.tables_by_collection)
        self.pairs: dict[str, tuple[TableInfo, TableMap]] = {}
        self.model: Model | None = None
        self.applier: Applier | None = None
        triggers = self.mode == "triggers"
        # The loop reads the change log on the source's own connection: one read
        # transaction per round covers the log and the changed rows.
        self.capture = Capture(settings.sqlite, source=source) if triggers else None
        # Scheduler threads get connections of their own (sqlite3 connections are not
        # for concurrent use).
        self._pruner = Capture(settings.sqlite) if triggers else None
        self._status_capture = Capture(settings.sqlite) if triggers else None
        self.seq = 0  # the log position applied
        self.saved_seq = 0  # ... and saved in MongoDB (pruning never passes it)
        self._saved_at = 0.0
        self._following = False  # long work may interleave follow steps (after start-up)
        self._between_at = 0.0
        self.install_id: str | None = None
        self.hwm: dict[str, Any] = {}
        self.schema_version: int | None = None
        self.data_version: int | None = None
        self.last_reconcile = time.monotonic()
        self.reconcile_requested = False
        self._open_request: dict[str, Any] | None = None
        self._recorded: tuple[int, float] = (-1, 0.0)  # consumer position last recorded
        self.status_file = Path(settings.state_dir) / "daemon.json"
        self.scheduler: BackgroundScheduler | None = None
        # The HDF5 caches are followed on a thread of their own: warming a large file
        # must not hold up the metadata.db changes.
        self.follower = follower
        self.hdf5_wake = threading.Event()
        self.hdf5_report: dict[str, Any] | None = None
        self._hdf5_thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self.stop_event.set()
        self.wake.set()

    def _on_renew(self) -> None:
        self.state.alive = time.monotonic()
        if self.stop_event.is_set():
            raise Stopping("stopped during long work; the next start resumes from the "
                           "checkpoint")

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGUSR1, lambda *_: self._request_reconcile())

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        """Sync, follow until stopped; returns the exit code."""
        self._install_signals()
        self.lease.acquire()
        self.publisher.start()
        waker = None
        try:
            notify("STATUS=starting: bringing MongoDB up to date")
            self._start_scheduler()  # heartbeats (and systemd start-timeout extensions) now
            self._start_sync()
            if self.options["watch"]:
                files = [Path(self.settings.sqlite)]
                dirs = self.follower.watch_paths() if self.follower else []
                waker = Waker(files, self.wake, dirs, self.hdf5_wake,
                              self.follower.wants if self.follower else None)
                waker.start()
                self.wake.set()  # a commit between the start-up sync and the watch
            if self.follower is not None:
                self._hdf5_thread = threading.Thread(target=self._hdf5_loop, name="hdf5",
                                                     daemon=True)
                self._hdf5_thread.start()
            with self.state.lock:
                self.state.ready = True
            notify("READY=1\nSTATUS=following " + str(self.settings.sqlite))
            self._heartbeat()
            log.info("following %s in %s mode (Ctrl-C or SIGTERM to stop)",
                     self.settings.sqlite, self.mode)
            self._loop()
        except Stopping as exc:
            log.info("%s", exc)
        finally:
            notify("STOPPING=1")
            if self.capture is not None and self.seq != self.saved_seq:
                with contextlib.suppress(Exception):
                    self._save_capture_checkpoint()
            self.hdf5_wake.set()
            if waker is not None:
                waker.stop()
            if self._hdf5_thread is not None:
                self._hdf5_thread.join(timeout=60)
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=True)
            self.publisher.close()
            with contextlib.suppress(Exception):
                self._heartbeat(final=True)
            with contextlib.suppress(Exception):
                self.lease.release()
            if self._pruner is not None and self.consumer is not None:
                with contextlib.suppress(Exception):
                    self._pruner.record_consumer(self.consumer, self._consumer_label(),
                                                 self.saved_seq, running=False)
            for closable in (self.capture, self._pruner, self._status_capture):
                if closable is not None:
                    closable.close()
        if self.fatal is not None:
            raise self.fatal
        log.info("stopped cleanly")
        return 0

    def _loop(self) -> None:
        backoff = Backoff(cap=self.options["backoff_max_seconds"])
        gap = self.options["min_step_seconds"]
        last_step = float("-inf")
        self._following = True
        while not self.stop_event.is_set():
            woke = self.wake.wait(self.options["poll_seconds"])
            # Coalesce: legacy writers commit in bursts; one step applies them together
            # (fewer reads of metadata.db, fewer MongoDB commits).
            rest = last_step + gap - time.monotonic()
            if woke and rest > 0:
                self.stop_event.wait(rest)
            self.wake.clear()
            if self.stop_event.is_set():
                break
            last_step = self.state.alive = time.monotonic()
            try:
                self._step(woke)
                if self.capture is not None:
                    self._save_capture_checkpoint(force=False)
            except Stopping:
                raise
            except MigrationError as exc:  # e.g. the lease was lost: never write twice
                self.fatal = exc
                break
            except Exception as exc:
                what = self._transient(exc)
                if what is None:
                    raise
                delay = backoff.next()
                self._note_outage(what, exc, delay)
                self._wait_alive(delay)
                self.wake.set()  # retry at once after the delay
                continue
            if self.state.outage is not None:
                with self.state.lock:
                    outage, self.state.outage = self.state.outage, None
                log.info("%s is back after %.0f s; caught up", outage.what,
                         (utcnow() - outage.since).total_seconds())
            backoff.reset()

    def _wait_alive(self, seconds: float) -> None:
        """Wait out a backoff delay; waiting on purpose is healthy (systemd watchdog)."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set():
            self.state.alive = time.monotonic()
            left = deadline - self.state.alive
            if left <= 0:
                return
            self.stop_event.wait(min(1.0, left))

    def _transient(self, exc: BaseException) -> str | None:
        """Which store a retryable failure came from, or None if it is not retryable."""
        if mongo_unavailable(exc):
            return "MongoDB"
        if isinstance(exc, (sqlite3.Error, *FAILURES)):
            self.schema_version = None  # re-read the schema: drift is a common cause
            return "the legacy database"
        return None

    def _note_outage(self, what: str, exc: BaseException, delay: float) -> None:
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        with self.state.lock:
            outage = self.state.outage
            if outage is None or outage.what != what:
                self.state.outage = Outage(what, utcnow(), message)
                log.warning("%s unavailable (%s); retrying with backoff", what, message)
            else:
                outage.retries += 1
                outage.error = message
                log.debug("%s still unavailable (%s); next try in %.1f s", what, message,
                          delay)
        notify(f"STATUS=waiting for {what}: {message}")

    # -- the HDF5 caches (own thread) ------------------------------------------------------

    def _hdf5_loop(self) -> None:
        """Index and warm the HDF5 caches on file events, debounce timers and a slow tick."""
        assert self.follower is not None
        while not self.stop_event.is_set():
            try:
                report = self.follower.scan_once()
                summary = report.to_dict()
                with self.state.lock:
                    self.hdf5_report = summary
            except Exception:  # never let the cache stop the metadata sync
                log.exception("the HDF5 pass failed; trying again later")
            due = self.follower.next_due()
            timeout = self.options["hdf5_rescan_seconds"] if due is None else \
                min(max(due, 0.05), self.options["hdf5_rescan_seconds"])
            self.hdf5_wake.wait(timeout)
            self.hdf5_wake.clear()

    # -- start-up sync ---------------------------------------------------------------------

    def _start_sync(self) -> None:
        # The schema version is read before anything is reflected: a change committed
        # while the start-up work runs shows as a new version at the first step.
        version = self.source.schema_version()
        migrator = Migrator(self.settings, self.source, self.db, self.migrations,
                            self.progress)
        plan = migrator.plan(None)
        for note in plan.notes:
            log.info("%s", note)
        self.model = plan.model
        self.applier = Applier(self.source, self.sink, self.store, plan.params)
        self.publisher.version = plan.target
        self._set_pairs(plan.pairs)
        left = self.resync.load()
        if left:
            log.info("a reconcile of %s was left unfinished: doing it", ", ".join(sorted(left)))
        infos = [info for info, _ in plan.pairs]
        migrating = plan.kind in ("rebuild", "resume")
        if self.capture is not None:
            wide = [i.name for i in infos if not capturable(i)]
            if wide:
                log.warning("tables with more than 8 key columns are followed by the "
                            "periodic reconcile only: %s", ", ".join(wide))
            checkpoint = self.store.state.find_one({"_id": "capture"}) or {}
            known = checkpoint.get("install_id")
            if not migrating and known is not None and known == self.capture.install_id():
                # Changes to these tables before their triggers exist were never logged.
                self.resync.add([i.name for i in self.capture.missing(infos)
                                 if i.name in self.pairs], "capture triggers were missing")
            newly = self.capture.install(infos)
            if newly:
                log.info("capture triggers installed on %s", ", ".join(newly))
            self.install_id = self.capture.install_id()
            if not migrating and known is not None and known == self.install_id:
                self.resync.add([t for t in newly if t in self.pairs],
                                "capture triggers were missing")
            self.consumer = self._consumer_id()
            start = self.capture.last_seq()
            if migrating:
                self._migrate(migrator, plan)
                self.seq = start
            elif known != self.install_id:
                log.info("no checkpoint for this change log yet: reconciling every table")
                self._reconcile(list(self.pairs))
                self.seq = start
            else:
                self.seq = int(checkpoint["seq"])
            self._save_capture_checkpoint()
            self._record_consumer(force=True)
            self._follow()
        else:
            marks = {name: self.source.high_water(info) for name, (info, _) in
                     self.pairs.items()}
            if migrating:
                self._migrate(migrator, plan)
            else:
                self._reconcile(list(self.pairs))
            self.hwm = marks
            self._save_scan_checkpoint()
            self.data_version = self.source.data_version()
        self._reconcile_pending()
        self.schema_version = version

    def _migrate(self, migrator: Migrator, plan: Any) -> None:
        log.info("migrating to version %d (%s) before following changes", plan.target,
                 plan.kind)
        self.resync.touched |= set(self.pairs)
        report = migrator.run(plan, self.sink, self.lease)
        log.info("migration done: %d rows, %d documents written in %.1f s",
                 report.total("rows"), report.total("written"), report.seconds)
        self.publisher.announce_migrated(plan.target)

    def _set_pairs(self, pairs: list[tuple[TableInfo, TableMap]]) -> None:
        self.pairs = {info.name: (info, mapping) for info, mapping in pairs}
        self.tables_by_collection.clear()
        self.tables_by_collection.update({m.collection: i.name for i, m in pairs})
        with self.state.lock:
            for info, mapping in pairs:
                self.state.tables.setdefault(info.name, TableStats(info.name, mapping.collection))

    # -- one step of the loop ----------------------------------------------------------------

    def _step(self, woke: bool = True) -> None:
        """One round: schema drift, then new changes, then a reconcile when due.

        The round's first reads (schema and data versions, the change log or the new
        rows, the changed rows) share one read transaction. Without a file event
        (`woke` false: a poll timeout, or a filesystem without inotify), `PRAGMA
        data_version` says whether anyone committed since the last round.
        """
        self.resync.check_resets()  # a restarted target may have lost what it acknowledged
        with self.source.read_transaction():
            schema = self.source.schema_version()
            data = self.source.data_version()
            read = schema == self.schema_version and (woke or data != self.data_version)
            first = self._read_round() if read else None
        if schema != self.schema_version:
            self._check_schema()
            read, woke = False, True
        if read or woke or data != self.data_version:
            self.data_version = data
            if first is not None or not read:  # a round that found nothing is not re-read
                self._follow(first)
        due = time.monotonic() - self.last_reconcile >= self.options["reconcile_seconds"]
        if due or self.reconcile_requested:
            self.reconcile_requested = False
            self._reconcile(list(self.pairs))
        self._reconcile_pending()
        self._serve_request()

    def _reconcile_pending(self) -> None:
        """Reconcile what Resync holds (left by a failure, a gap, a reset, a restart)."""
        self.resync.forget([t for t in self.resync.pending if t not in self.pairs])
        if self.resync.pending:
            self._reconcile(sorted(self.resync.pending))

    def _serve_request(self) -> None:
        """A `syncd reconcile` handed over through MongoDB: do it, then answer."""
        request = self._open_request or self.resync.take_request()
        if request is None:
            return
        self._open_request = request  # kept until answered: a failure retries it
        wanted = list(request.get("tables") or self.pairs)
        reports = self._reconcile([t for t in wanted if t in self.pairs])
        reports.update({t: {"error": "not a synced table"} for t in wanted
                        if t not in self.pairs})
        self.resync.finish_request(request, reports)
        self._open_request = None

    def _check_schema(self) -> None:
        """Follow a schema change: new tables sync, changed or re-created ones reconcile.

        The version is read first and recorded only once the tables to reconcile are
        saved (Resync): a change committed while this runs is seen by the next step,
        and a reconcile that fails is retried, also after a restart.
        """
        version = self.source.schema_version()
        if version == self.schema_version:
            return
        assert self.model is not None
        pairs = self.model.resolve(self.source.schema())
        new = {i.name: (i, m) for i, m in pairs}
        added = [t for t in new if t not in self.pairs]
        dropped = [t for t in self.pairs if t not in new]
        changed = [t for t in new if t in self.pairs and new[t] != self.pairs[t]]
        todo = set(added) | set(changed)
        recreated = False
        if self.capture is not None:
            todo |= {i.name for i in self.capture.missing([i for i, _ in pairs])}
            if self.capture.install_id() != self.install_id:
                # The log itself was removed (capture uninstall) and made anew: its seqs
                # start again, and what changed meanwhile was never logged.
                recreated, todo = True, set(new)
        self.resync.add(sorted(todo), "the legacy schema changed" if not recreated
                        else "the change log was recreated")
        self.resync.forget(dropped)
        for table in dropped:
            log.warning("legacy table %s was dropped; its collection %s keeps its documents "
                        "(syncd migrate reconciles it)", table, self.pairs[table][1].collection)
            with self.state.lock:
                self.state.dropped[table] = utcnow()
        if self.capture is not None:
            # A table re-created since `missing` was read gets its triggers here: it
            # needs the reconcile too (the next step sees the newer schema version).
            newly = self.capture.install([i for i, _ in pairs])
            self.resync.add([t for t in newly if t in new], "capture triggers were missing")
            if recreated:
                self.install_id, self.seq = self.capture.install_id(), 0
                self._save_capture_checkpoint()
        self._set_pairs(pairs)
        with self.state.lock:
            for table in added:
                self.state.dropped.pop(table, None)
        if self.capture is None:
            for table in added:
                self.hwm.setdefault(table, None)
        self.schema_version = version
        self._reconcile_pending()

    def _follow(self, first: Round | None = None) -> None:
        """Read a round (in one read transaction), write it, until nothing is left.

        Triggers mode drains the log: it reads again only after a full batch. A
        shorter round read everything committed before it, and whatever commits
        later wakes the loop (or changes `data_version`), so an extra read that would
        find nothing is skipped: each read is a SHARED lock a committing legacy
        writer may have to wait for. Scan mode does one round and, if it found rows,
        wakes the loop for another, so schema checks and stops come in between.
        """
        round_ = first
        while not self.stop_event.is_set():
            if round_ is None:
                with self.source.read_transaction():
                    round_ = self._read_round()
            if round_ is None:
                return
            self._write_round(round_)
            if self.capture is None:
                self.wake.set()  # rows came: there may be more (a full batch)
                return
            if not round_.full:
                return
            round_ = None

    def _read_round(self) -> Round | None:
        """What one round applies: logged changes with their rows' current state, or
        (scan mode) one batch of new rows per table, round robin, so that a table
        written faster than a batch is applied (epoch_history while a run trains) does
        not hold back the tables after it."""
        assert self.applier is not None
        batch = self.options["batch"]
        items: list[RoundItem] = []
        if self.capture is not None:
            changes = self.capture.read(self.seq, batch)
            if not changes:
                return None
            if changes[0].seq != self.seq + 1:
                # Seqs are contiguous: entries after the checkpoint were pruned by
                # another consumer (or while this one was away past the retention).
                self.resync.add(list(self.pairs), f"the change log has a gap after entry "
                                f"{self.seq} (the next kept is {changes[0].seq})")
            tables = {name: info for name, (info, _) in self.pairs.items()}
            grouped = group_keys(((c.table, c.op, c.rowid, c.key) for c in changes), tables)
            for table, ops in grouped.items():
                info, mapping = self.pairs[table]
                keys = set(ops)
                inserted = {k for k, op in ops.items() if op == "i"}
                items.append(RoundItem(table, info, mapping, self.applier.fetch(info, keys),
                                       keys, inserted))
            return Round(items, changes[-1].seq, full=len(changes) >= batch)
        for table, (info, mapping) in self.pairs.items():
            chunk = self.source.scan(info, self.hwm.get(table), batch)
            if chunk.rows:
                # Rows past the high-water mark are new (the sink still replaces any
                # whose document exists: a crash re-apply, a reused rowid).
                items.append(RoundItem(table, info, mapping, chunk, inserted=True))
        return Round(items, None) if items else None

    def _write_round(self, round_: Round) -> None:
        """Apply a round to MongoDB, then move (and lazily save) the position."""
        assert self.applier is not None
        for item in round_.items:
            self._apply(item.table, lambda item=item: self.applier.write(  # type: ignore[union-attr]
                item.info, item.mapping, item.chunk, item.keys, item.inserted))
            if item.keys is None:
                self.hwm[item.table] = item.chunk.last
        crashpoint("daemon.after_apply")
        if round_.seq is not None:
            self.seq = round_.seq
            self._save_capture_checkpoint(force=False)
        else:
            self._save_scan_checkpoint()

    def _apply(self, table: str, action: Callable[[], Any]) -> None:
        try:
            result = action()
        except Exception as exc:
            with self.state.lock:
                self.state.tables[table].last_error = str(exc).splitlines()[0][:300]
            raise
        with self.state.lock:
            stats = self.state.tables[table]
            stats.applied += len(result.upserted)
            stats.deleted += len(result.deleted)
            stats.quarantined += result.quarantined
            stats.last_applied_at = utcnow()
            stats.last_error = None
        if result.upserted or result.deleted:
            self.resync.touched.add(table)

    def _reconcile(self, tables: list[str]) -> dict[str, dict[str, int]]:
        """Reconcile `tables` one by one; each leaves Resync's pending set when done."""
        assert self.model is not None and self.applier is not None
        reports: dict[str, dict[str, int]] = {}
        engine = Engine(self.source, self.db, self.sink, self.store, self.applier.params,
                        self.settings.chunk_size, self.progress, self.lease,
                        between=self._follow_between)
        for table in tables:
            if table not in self.pairs:
                continue
            info, mapping = self.pairs[table]
            report = engine.reconcile_table(info, mapping, self.model)
            with self.state.lock:
                stats = self.state.tables[table]
                stats.reconciled_at = utcnow()
                stats.applied += report.written
                stats.deleted += report.deleted
                stats.quarantined += report.quarantined
            if report.written or report.deleted:
                log.info("reconciled %s: %d written, %d deleted, %d unchanged", table,
                         report.written, report.deleted, report.unchanged)
            self.resync.done(table, wrote=bool(report.written or report.deleted))
            reports[table] = {"written": report.written, "deleted": report.deleted,
                              "unchanged": report.unchanged, "rows": report.rows}
        if set(tables) >= set(self.pairs):
            self.last_reconcile = time.monotonic()
        return reports

    def _follow_between(self) -> None:
        """During long work (a reconcile), apply new changes every so often."""
        now = time.monotonic()
        if not self._following or now - self._between_at < 0.25:
            return
        self._between_at = now
        self._follow()

    # -- checkpoints -----------------------------------------------------------------------

    def _save_capture_checkpoint(self, force: bool = True) -> None:
        """Save the applied log position (at most every `checkpoint_seconds` unless forced).

        Only the loop's thread saves, so `saved_seq` is exactly what MongoDB holds.
        """
        if self.seq == self.saved_seq and not force:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < self.options["checkpoint_seconds"]:
            return
        seq = self.seq
        durable(self.store.state).replace_one(
            {"_id": "capture"},
            {"mode": "triggers", "install_id": self.install_id, "seq": seq,
             "updated_at": utcnow()}, upsert=True)
        self.saved_seq, self._saved_at = seq, now

    def _save_scan_checkpoint(self) -> None:
        self.store.state.replace_one(
            {"_id": "scan"},
            {"mode": "scan", "hwm": [[t, encode_position(p)] for t, p in self.hwm.items()],
             "updated_at": utcnow()}, upsert=True)

    # -- periodic work (scheduler threads) -------------------------------------------------

    def _start_scheduler(self) -> None:
        scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
        opts = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
        scheduler.add_job(self._heartbeat, "interval",
                          seconds=self.options["heartbeat_seconds"], id="heartbeat", **opts)
        if self._pruner is not None:
            scheduler.add_job(self._prune, "interval", seconds=self.options["prune_seconds"],
                              id="prune", **opts)
        scheduler.add_job(self._request_reconcile, "interval",
                          seconds=self.options["reconcile_seconds"], id="reconcile", **opts)
        scheduler.add_job(self._poll_requests, "interval",
                          seconds=self.options["heartbeat_seconds"], id="requests", **opts)
        scheduler.start()
        self.scheduler = scheduler

    def _request_reconcile(self) -> None:
        self.reconcile_requested = True
        self.wake.set()

    def _poll_requests(self) -> None:
        try:
            self.resync.poll_request()
        except Exception as exc:  # the loop reports MongoDB outages
            log.debug("could not look for reconcile requests: %s", exc)
            return
        self.wake.set()

    def _consumer_id(self) -> str:
        """This target's stable name in the change log's consumer registry."""
        doc = self.store.state.find_one_and_update(
            {"_id": "consumer"}, {"$setOnInsert": {"consumer": uuid.uuid4().hex,
                                                   "created_at": utcnow()}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return str(doc["consumer"])

    def _consumer_label(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()} -> database {self.db.name}"

    def _record_consumer(self, force: bool = False) -> None:
        """Tell other consumers of the log how far this one has saved (they never prune
        past it); at most every CONSUMER_REFRESH_SECONDS when nothing moved."""
        capture = self.capture if force else self._pruner  # the caller's thread's connection
        if capture is None or self.consumer is None:
            return
        now = time.monotonic()
        seq = self.saved_seq
        if not force and seq == self._recorded[0] and \
                now - self._recorded[1] < CONSUMER_REFRESH_SECONDS:
            return
        if capture.record_consumer(self.consumer, self._consumer_label(), seq):
            self._recorded = (seq, now)

    def _prune(self) -> None:
        assert self._pruner is not None
        try:
            self._record_consumer()
            bound = self._pruner.prune_bound(self.saved_seq,
                                             self.options["log_retention_seconds"])
            removed = self._pruner.prune(bound)
            if removed:
                log.debug("pruned %d applied changes from the log", removed)
        except Exception as exc:  # pruning is housekeeping: never fatal
            log.warning("could not prune the change log: %s", exc)

    def _table_status(self) -> list[dict[str, Any]]:
        pending: dict[str, tuple[int, float | None]] = {}
        if self._status_capture is not None:
            with contextlib.suppress(Exception):
                pending = self._status_capture.pending(self.seq)
        now_julian = time.time() / 86400 + JULIAN_UNIX_EPOCH
        rows = []
        with self.state.lock:
            stats = {k: asdict(v) for k, v in self.state.tables.items()}
            dropped = dict(self.state.dropped)
        for table, entry in sorted(stats.items()):
            count, oldest = pending.get(table, (0, None))
            entry.update({
                "mode": self.mode,
                "checkpoint": ({"seq": self.seq} if self.capture is not None
                               else {"hwm": encode_position(self.hwm.get(table))}),
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
        with self.state.lock:
            outage = asdict(self.state.outage) if self.state.outage else None
            ready = self.state.ready
            started = self.state.started_at
        now = utcnow()
        return {
            "pid": os.getpid(), "host": socket.gethostname(), "mode": self.mode,
            "sqlite": str(self.settings.sqlite), "database": self.db.name,
            "started_at": started, "uptime_seconds": round((now - started).total_seconds()),
            "heartbeat_at": now, "heartbeat_seconds": self.options["heartbeat_seconds"],
            "running": not final, "ready": ready, "outage": outage,
            "seq": self.seq if self.capture is not None else None,
            "reconcile_pending": sorted(self.resync.pending),
            "tables": self._table_status(), "events": self.publisher.status(),
            "hdf5_dirs": [str(d) for d in self.follower.watch_paths()] if self.follower else [],
            "hdf5": self.hdf5_report,
        }

    # Why daemon.json (the status beside the state) could not be written, if it could not.
    local_status_error: str | None = None

    def _heartbeat(self, final: bool = False) -> None:
        doc = self.status_document(final)
        error = write_local_status(self.status_file, doc)
        if error is not None and self.local_status_error is None:
            log.warning("%s; syncing goes on (status stays in MongoDB)", error)
        elif error is None and self.local_status_error is not None:
            log.info("the local status %s is written again", self.status_file)
        self.local_status_error = error
        doc["local_status_error"] = error
        try:
            self.store.state.replace_one({"_id": "daemon"}, doc, upsert=True)
            if not final:
                self.lease.renew_idle()
        except MigrationError as exc:
            self.fatal = exc
            self.request_stop()
            return
        except Exception as exc:  # the loop reports MongoDB outages; stay quiet here
            log.debug("heartbeat could not reach MongoDB: %s", exc)
        if final:
            return
        limit = watchdog_seconds()
        quiet = time.monotonic() - self.state.alive
        if not doc["ready"]:
            # A long first backfill: keep systemd's start timeout from running out while
            # the work moves (each chunk marks the loop alive).
            if quiet < 60:
                extend = int(4 * self.options["heartbeat_seconds"] * 1_000_000)
                notify(f"EXTEND_TIMEOUT_USEC={extend}\nSTATUS=starting: bringing MongoDB "
                       "up to date")
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
        tmp.write_text(json.dumps(doc, default=str, indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return f"cannot write the local status {path}: {exc.strerror or exc}"
    return None


def read_local_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
