"""`syncd run`: keep MongoDB in sync with metadata.db while the legacy scripts write it.

Start-up brings the target to the latest migration (a backfill, a resumed one, or
a reconcile), then the loop follows every committed change through one
`ChangeFeed` (legacy_adapters/feed.py), chosen once by syncd/api/feeds.py:

- `TriggerFeed` (feed_triggers.py, `triggers` mode, the default): triggers log each
  changed row's key inside the writer's transaction; the feed reads the log in
  order, checkpoints its position in MongoDB after the write, and prunes applied
  entries in the background.
- `ScanFeed` (feed_scan.py, `scan` mode, writes nothing to metadata.db): new rows by
  a per-table high-water mark; updates and deletes by a periodic chunked reconcile.

Each step of the loop is explicit: schema drift (schema.py), then the feed's new
changes applied (follow.py), then the reconciles that are due (reconcile.py). The
loop wakes on file events (watchdog) or every `poll_seconds`. Periodic work
(heartbeat, pruning, reconcile requests) runs on APScheduler. Failures of MongoDB
or SQLite are retried with capped, jittered backoff; nothing is checkpointed past
what was written. SIGTERM/SIGINT set the stop token (syncd/cancel.py): the loop
checks it between steps, long work at each chunk; the process exits 0. SIGKILL at
any moment loses and doubles nothing.

The parts, one module each: options.py (`DaemonOptions`), startup.py (the start-up
sync), follow.py (rounds), the feeds, schema.py (drift), reconcile.py (reconciles),
health.py (status, heartbeat, watchdog); this module wires them and owns the
lifecycle: the loop, signals, the scheduler, outages and backoff, the HDF5 thread.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from pymongo.database import Database

from legacy_adapters.base import Source, SourceBusy
from legacy_adapters.feed import ChangeFeed
from syncd.cancel import Cancelled, CancelToken
from syncd.checkpoint.lease import Lease
from syncd.checkpoint.resync import PendingReconciles
from syncd.checkpoint.store import StateStore
from syncd.daemon.follow import FeedParts, Follower, Synced
from syncd.daemon.health import Health, Snapshot
from syncd.daemon.history import VersionRecorder
from syncd.daemon.options import DaemonOptions
from syncd.daemon.pace import Pacer
from syncd.daemon.reconcile import Reconciler, Writing
from syncd.daemon.schema import SchemaWatch
from syncd.daemon.sdnotify import notify
from syncd.daemon.startup import Migrating, StartUp, start_up_outage
from syncd.daemon.wake import Waker
from syncd.engine.migrator import Migrator
from syncd.errors import FAILURES, MigrationError
from syncd.progress import Progress
from syncd.retry import Backoff, mongo_unavailable
from syncd.sinks.eventing import EventingSink
from syncd.sinks.events import EventPublisher
from syncd.sinks.mongo import MongoSink

if TYPE_CHECKING:
    from syncd.hdf5.follower import Hdf5Follower

log = logging.getLogger(__name__)
# After a Redis or MongoDB failure the HDF5 pass is tried again this soon, not at the
# next slow rescan: the cache is warm again shortly after the outage ends.
OUTAGE_RETRY_SECONDS = 5.0
# How often versions past `[history] keep` are removed (and once at start).
HISTORY_PRUNE_SECONDS = 3600.0

# Makes the feed the daemon follows, from the parts every feed is given (syncd.api
# picks the kind once: syncd/api/feeds.py).
FeedFactory = Callable[[FeedParts], ChangeFeed]


@dataclass(frozen=True)
class Stores:
    """Where the daemon reads and writes: the legacy source, the target database, the
    source's state there (its id resolved), the migrations' planner over both (built by
    syncd.api), and the progress display."""

    source: Source
    db: Database
    state: StateStore
    migrator: Migrator
    progress: Progress


class Daemon:
    """One `syncd run`: the start-up sync, then the follow loop until stopped.

    Its parts are public: `feed`, `startup`, `follower`, `reconciler`, `schema`,
    `health`, `synced` (what is synced now); tests may drive them one by one.
    """

    def __init__(self, options: DaemonOptions, stores: Stores, publisher: EventPublisher,
                 make_feed: FeedFactory, hdf5: Hdf5Follower | None = None) -> None:
        self.options, self.publisher = options, publisher
        self.source, self.db = stores.source, stores.db
        self.store = stores.state
        self.resync = PendingReconciles(self.store)
        self.stop = CancelToken()
        self.wake = threading.Event()
        self.pacer = Pacer(options.min_step_seconds, options.busy_commits_per_second)
        self.fatal: BaseException | None = None
        # Long work renews the lease at every chunk: it notes the daemon alive there,
        # and the lease ends the work when the stop token is set.
        self.lease = Lease(self.store, "run", stop=self.stop)
        self.health = Health(options, self.store, self.lease, self._snapshot, self.fail)
        self.lease.on_renew = self.health.alive
        by_collection: dict[str, str] = {}
        self.sink = EventingSink(MongoSink(stores.db), publisher, by_collection)
        self.synced = Synced(self.health, by_collection)
        self.history = VersionRecorder(stores.db, self.store.source_id, options.history)
        parts = FeedParts(self.source, self.store, self.resync, self.synced, options,
                          self.history)
        self.feed = make_feed(parts)
        self.follower = Follower(self.feed, parts, self.health, self.stop, self.wake)
        writing = Writing(self.sink, self.lease, stores.progress)
        self.reconciler = Reconciler(parts, writing, self.follower, self.health)
        self.schema = SchemaWatch(parts, self.feed, self.health, self.reconciler)
        self.startup = StartUp(parts, self.feed, self.follower, self.reconciler, self.schema,
                               Migrating(stores.migrator, publisher, writing))
        self.scheduler: BackgroundScheduler | None = None
        # The HDF5 caches are followed on a thread of their own: warming a large file
        # must not hold up the metadata.db changes.
        self.hdf5 = hdf5
        self.hdf5_wake = threading.Event()
        self.hdf5_report: dict[str, Any] | None = None
        self._hdf5_thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self.stop.set()
        self.wake.set()

    def request_reconcile(self) -> None:
        """Reconcile every table at the next step (SIGUSR1, the periodic job)."""
        self.reconciler.request()
        self.wake.set()

    def _busy(self, message: str) -> None:
        self.health.note_outage("the legacy database", SourceBusy(message), 0.0)

    def fail(self, exc: BaseException) -> None:
        """End the run with `exc`, from any thread (the heartbeat finding the lease lost,
        an embedded MongoDB that keeps dying): `run` raises it once stopped."""
        self.fatal = exc
        self.request_stop()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGUSR1, lambda *_: self.request_reconcile())

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            feed=self.feed.status(), reconcile_pending=sorted(self.resync.pending),
            events=self.publisher.status(),
            hdf5_dirs=[str(d) for d in self.hdf5.watch_paths()] if self.hdf5 else [],
            hdf5=self.hdf5_report)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        """Sync, follow until stopped; returns the exit code."""
        self._install_signals()
        self.source.on_busy = self._busy  # a writer's lock is an outage from its start
        try:
            self._waited(self.lease.acquire)
        except Cancelled as exc:  # nothing started yet: nothing to shut down
            log.info("%s", exc)
            if self.fatal is None:
                return 0
            raise self.fatal from None  # stopped by a failure (fail): not a clean exit
        self.publisher.start()
        waker = None
        try:
            notify("STATUS=starting: bringing MongoDB up to date")
            self._start_scheduler()  # heartbeats (and systemd start-timeout extensions) now
            self._waited(self.startup.run)  # again from the top after an outage
            if self.options.watch:
                files = [self.options.sqlite]
                dirs = self.hdf5.watch_paths() if self.hdf5 else []
                waker = Waker(files, self.wake, dirs, self.hdf5_wake,
                              self.hdf5.wants if self.hdf5 else None, self.pacer.note)
                waker.start()
                self.wake.set()  # a commit between the start-up sync and the watch
            if self.hdf5 is not None:
                self._hdf5_thread = threading.Thread(target=self._hdf5_loop, name="hdf5",
                                                     daemon=True)
                self._hdf5_thread.start()
            self.health.ready()
            notify("READY=1\nSTATUS=following " + str(self.options.sqlite))
            self.health.heartbeat()
            log.info("following %s in %s mode (Ctrl-C or SIGTERM to stop)",
                     self.options.sqlite, self.feed.mode,
                     extra={"source": self.store.source_id, "mode": self.feed.mode})
            self._loop()
        except Cancelled as exc:
            log.info("%s", exc)
        finally:
            self._shut_down(waker)
        if self.fatal is not None:
            raise self.fatal
        log.info("stopped cleanly")
        return 0

    def _waited(self, work: Callable[[], None]) -> None:
        """Start-up `work`, a MongoDB outage or a writer's lock waited out as the loop
        waits them (startup.start_up_outage); a stop meanwhile is a clean exit."""
        backoff, what = Backoff(cap=self.options.backoff_max_seconds), None
        while True:
            try:
                if what == "MongoDB":  # back: said now, not after a long resumed migration
                    self.db.command("ping")
                    self.health.outage_over()
                work()
            except Exception as exc:
                what = start_up_outage(exc)
                if what is None:
                    raise
                delay = backoff.next()
                self.health.note_outage(what, exc, delay)
                self._wait_alive(delay)
                if self.stop.is_set():
                    raise Cancelled(f"stopped while starting, waiting for {what}") from None
                continue
            self.health.outage_over()
            return

    def _shut_down(self, waker: Waker | None) -> None:
        notify("STOPPING=1")
        with contextlib.suppress(Exception):
            self.feed.save(force=True)
        self.hdf5_wake.set()
        if waker is not None:
            waker.stop()
        if self._hdf5_thread is not None:
            self._hdf5_thread.join(timeout=60)
        try:
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=True)
            self.publisher.close()
            with contextlib.suppress(Exception):
                self.health.heartbeat(final=True)
            with contextlib.suppress(Exception):
                self.lease.release()
        finally:
            self.feed.close()  # its SQLite connections, whatever failed before

    def _loop(self) -> None:
        backoff = Backoff(cap=self.options.backoff_max_seconds)
        self.follower.live = True
        while not self.stop.is_set():
            woke = self.wake.wait(self.options.poll_seconds)
            # A commit is applied at once; under load (writers committing faster than
            # busy_commits_per_second) steps start min_step_seconds apart and one step
            # applies a burst together (fewer reads of metadata.db, fewer MongoDB commits).
            rest = self.pacer.delay()
            if woke and rest > 0:
                self.stop.wait(rest)
            self.wake.clear()
            if self.stop.is_set():
                break
            self.pacer.stepped(self.health.alive())
            try:
                self.step(woke)
                self.feed.save()  # a position held back by checkpoint_seconds
            except Cancelled:
                raise
            except MigrationError as exc:  # e.g. the lease was lost: never write twice
                self.fatal = exc
                break
            except Exception as exc:
                what = self._transient(exc)
                if what is None:
                    raise
                delay = backoff.next()
                self.health.note_outage(what, exc, delay)
                self._wait_alive(delay)
                self.wake.set()  # retry at once after the delay
                continue
            self.health.outage_over()
            backoff.reset()

    def _wait_alive(self, seconds: float) -> None:
        """Wait out a backoff delay; waiting on purpose is healthy (systemd watchdog)."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - self.health.alive()
            if left <= 0:
                return
            self.stop.wait(min(1.0, left))

    def _transient(self, exc: BaseException) -> str | None:
        """Which store a retryable failure came from, or None if it is not retryable."""
        if mongo_unavailable(exc):
            return "MongoDB"
        if isinstance(exc, (sqlite3.Error, *FAILURES)):
            self.schema.forget()  # re-read the schema: drift is a common cause
            return "the legacy database"
        return None

    # -- one step of the loop ----------------------------------------------------------------

    def step(self, woke: bool = True) -> None:
        """One round: schema drift, then new changes, then a reconcile when due.

        The round's first reads (schema and data versions, the change log or the new
        rows, the changed rows) share one read transaction. Without a file event
        (`woke` false: a poll timeout, or a filesystem without inotify), `PRAGMA
        data_version` says whether anyone committed since the last round.
        """
        follower = self.follower
        self.resync.check_resets()  # a restarted target may have lost what it acknowledged
        with self.source.read_transaction():
            drift = self.source.schema_version() != self.schema.version
            moved = follower.committed(self.source.data_version())
            read = not drift and (woke or moved)
            counters = self.source.sequences() if read else None  # syncd.daemon.counters
            first = follower.read_round() if read else None
        if drift:
            self.schema.check()
        # recorded before the round: caught up means recorded; a whole batch first: the
        # counters are compared at the next step, once the rounds after it are read
        if counters is not None and self.history.check_counters(self.source, counters,
                                                                first) is None:
            self.wake.set()
        if drift or (read and first is not None):  # a round that found nothing is not re-read
            follower.follow(first)
        self.reconciler.when_due()
        self.reconciler.pending()
        self.reconciler.serve_request()

    # -- periodic work (scheduler threads) -------------------------------------------------

    def _start_scheduler(self) -> None:
        scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
        opts = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
        scheduler.add_job(self.health.heartbeat, "interval",
                          seconds=self.options.heartbeat_seconds, id="heartbeat", **opts)
        scheduler.add_job(self.feed.prune, "interval",
                          seconds=self.options.prune_seconds, id="prune", **opts)
        scheduler.add_job(self.request_reconcile, "interval",
                          seconds=self.options.reconcile_seconds, id="reconcile", **opts)
        scheduler.add_job(self._poll_requests, "interval",
                          seconds=self.options.heartbeat_seconds, id="requests", **opts)
        if self.options.history.keep_seconds is not None:
            scheduler.add_job(self._prune_history, "interval", seconds=HISTORY_PRUNE_SECONDS,
                              id="history", next_run_time=datetime.now(UTC), **opts)
        scheduler.start()
        self.scheduler = scheduler

    def _prune_history(self) -> None:
        """`[history] keep`: housekeeping, never fatal (an outage retries next time)."""
        try:
            self.history.prune()
        except Exception as exc:
            log.warning("could not prune the history: %s", exc)

    def _poll_requests(self) -> None:
        try:
            self.resync.poll_request()
        except Exception as exc:  # the loop reports MongoDB outages
            log.debug("could not look for reconcile requests: %s", exc)
            return
        self.wake.set()

    # -- the HDF5 caches (own thread) ------------------------------------------------------

    def _hdf5_loop(self) -> None:
        """Index and warm the HDF5 caches on file events, debounce timers and a slow tick."""
        assert self.hdf5 is not None
        while not self.stop.is_set():
            try:
                report = self.hdf5.scan_once()
                summary = report.to_dict()
                with self.health.state.lock:
                    self.hdf5_report = summary
            except Exception:  # never let the cache stop the metadata sync
                log.exception("the HDF5 pass failed; trying again later")
            due = self.hdf5.next_due()
            if self.hdf5_report and (self.hdf5_report.get("redis_error")
                                     or self.hdf5_report.get("mongo_error")):
                due = OUTAGE_RETRY_SECONDS if due is None else min(due, OUTAGE_RETRY_SECONDS)
            rescan = self.options.hdf5_rescan_seconds
            timeout = rescan if due is None else min(max(due, 0.05), rescan)
            self.hdf5_wake.wait(timeout)
            self.hdf5_wake.clear()
