"""`syncd run`'s wiring: the settings checked into options, then the source, MongoDB
(waited for), Redis, events, the HDF5 follower, the daemon and its HTTP server.

It imports the daemon's whole stack (SQLAlchemy, APScheduler, watchdog, numpy,
Starlette, uvicorn), so syncd.api.run imports it only when `syncd run` starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from socket import socket
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from legacy_adapters.base import Source
from legacy_adapters.errors import SourceReadOnly
from syncd.api.feeds import feed_factory, read_only_error
from syncd.api.http_options import http_context, http_options
from syncd.api.local_tier import local_tier_options
from syncd.api.options import (
    check_source_file,
    endpoints,
    migrate_options,
    state_store,
    target_label,
)
from syncd.api.shared import history_options, migration_files, open_source, where
from syncd.checkpoint.store import StateStore
from syncd.config import Settings, section
from syncd.connect.mongo import MongoTarget, TargetUnreachable, open_target
from syncd.connect.reasons import REFUSED_CODES, mongo_reason
from syncd.connect.redis import daemon_redis
from syncd.daemon.options import (
    DEFAULTS,
    MODES,
    RECONCILE_SECONDS,
    DaemonOptions,
    lower_priority,
)
from syncd.daemon.runner import Daemon, Stores
from syncd.daemon.sdnotify import notify
from syncd.embedded.endpoints import Endpoints
from syncd.embedded.interrupts import Interrupted, raising, stop_requested
from syncd.embedded.supervise import GiveUp
from syncd.engine.migrator import Migrator
from syncd.errors import ConfigError
from syncd.http.app import build_app
from syncd.http.context import HttpContext
from syncd.http.options import HttpOptions
from syncd.http.server import HttpServer, bind
from syncd.progress import Progress
from syncd.retry import Backoff, mongo_unavailable
from syncd.sinks.events import EventPublisher

# h5py and numpy (syncd.hdf5.*, hdf5_options): only a run that follows HDF5 caches
# imports them, inside `run`.
if TYPE_CHECKING:
    from syncd.hdf5.follower import Hdf5Follower

log = logging.getLogger("syncd")
T = TypeVar("T")


def daemon_options(settings: Settings, capture: str | None = None) -> DaemonOptions:
    """The `[daemon]` settings, checked, with the shared settings the daemon reads;
    `capture` (the --capture flag) wins."""
    raw = section(settings, "daemon", DEFAULTS)
    if capture:
        raw["capture"] = capture
    if raw["capture"] not in MODES:
        raise ConfigError(f"[daemon] capture = {raw['capture']!r}: use one of "
                          f"{', '.join(MODES)}")
    for key in ("poll_seconds", "prune_seconds", "heartbeat_seconds", "backoff_max_seconds",
                "hdf5_rescan_seconds", "log_retention_seconds"):
        if raw[key] <= 0:
            raise ConfigError(f"[daemon] {key} = {raw[key]}: must be positive")
    for key in ("min_step_seconds", "checkpoint_seconds", "busy_commits_per_second"):
        if raw[key] < 0:
            raise ConfigError(f"[daemon] {key} = {raw[key]}: must not be negative")
    if not 0 <= raw["nice"] <= 19:
        raise ConfigError(f"[daemon] nice = {raw['nice']}: use 0 (as started) to 19")
    for key in ("batch", "events_maxlen"):  # (an events stream of 0 keeps nothing)
        if raw[key] <= 0:
            raise ConfigError(f"[daemon] {key} = {raw[key]}: must be positive")
    if not raw["reconcile_seconds"]:
        raw["reconcile_seconds"] = RECONCILE_SECONDS[raw["capture"]]
    return DaemonOptions(sqlite=settings.sqlite, state_dir=settings.state_dir,
                         chunk_size=settings.chunk_size, history=history_options(settings),
                         target=target_label(settings), **raw)



def build_daemon(settings: Settings, options: DaemonOptions, source: Source, db: Database,
                 publisher: EventPublisher, hdf5: Hdf5Follower | None = None, *,
                 migrations: list[Any] | None = None, state: StateStore | None = None
                 ) -> Daemon:
    """The daemon over `source` and `db`, following the feed `options.capture` names
    (`migrations`: those already loaded, else the configured ones; `state`: the source's
    state, its id already resolved, else resolved here)."""
    progress = Progress(enabled=True)
    if migrations is None:
        migrations = migration_files(settings)
    state = state or state_store(db, settings)
    migrator = Migrator(migrate_options(settings, state.source_id), source, db, migrations,
                        progress)
    return Daemon(options, Stores(source, db, state, migrator, progress), publisher,
                  feed_factory(options, source), hdf5)


def _wait_said(reason: str, detail: str, backoff: Backoff) -> None:
    """One try of `syncd run`'s start failed on MongoDB: say so (the log, systemd's
    STATUS) and wait the daemon's backoff (a stop signal raises out of the sleep)."""
    delay = backoff.next()
    log.warning("%s; trying again in %.0f s", detail, delay)
    notify(f"STATUS=starting: waiting for MongoDB: {reason}")
    time.sleep(delay)


@contextlib.contextmanager
def _waited_target(ends: Endpoints, give_up: GiveUp, backoff: Backoff
                   ) -> Iterator[MongoTarget]:
    """The MongoDB target for `syncd run`, waited for (with `backoff`, the daemon's)
    while unreachable; a server that refuses syncd (bad credentials) fails at once.

    SIGTERM or SIGINT before the daemon takes its signals over (while waiting, while an
    embedded server starts) is a requested stop: everything started is stopped, exit 0.
    """
    with raising():
        try:
            while True:
                stack = contextlib.ExitStack()
                try:
                    target = stack.enter_context(open_target(ends, give_up))
                    backoff.reset()
                    break
                except TargetUnreachable as exc:
                    stack.close()
                    _wait_said(exc.reason or str(exc), str(exc), backoff)
            with stack:
                yield target
        except (Interrupted, KeyboardInterrupt) as exc:
            if not stop_requested(exc):
                raise
            log.info("stop requested before syncd run started following; stopped cleanly")
            raise SystemExit(0) from None


def _until_reachable(work: Callable[[], T], shown: str, backoff: Backoff,
                     give_up: GiveUp) -> T:
    """`work` (the MongoDB calls between the first connection and the daemon's start),
    tried again while MongoDB is out (a restart, a primary stepping down) as the
    daemon's start-up does; a refusal (no or bad credentials, a user without the
    roles) is a configuration error at once, as at the first connection, and an
    embedded MongoDB given up (`give_up`: it will not come back) ends the run."""
    while True:
        try:
            return work()
        except PyMongoError as exc:
            if isinstance(exc, OperationFailure) and exc.code in REFUSED_CODES:
                raise ConfigError(f"--mongo-url {shown}: the server refused syncd "
                                  f"({mongo_reason(exc).removeprefix('MongoDB: ')})") from None
            if not mongo_unavailable(exc):
                raise
            if give_up.error is not None:
                raise give_up.error from None
            _wait_said(mongo_reason(exc), mongo_reason(exc), backoff)


def _busy_at_start(message: str) -> None:
    """A writer's lock met by the first read: the log and systemd's STATUS say so at once."""
    log.warning("%s", message)
    notify(f"STATUS=starting: waiting for the legacy database: {message}")


def _serve(ctx: HttpContext, options: HttpOptions, sock: socket | None,
           daemon: Daemon) -> contextlib.AbstractContextManager[Any]:
    """The HTTP server over the daemon's live status (a no-op when it is off)."""
    if sock is None:
        return contextlib.nullcontext()
    server = HttpServer(build_app(ctx, options), options, sock)
    daemon.health.http_url = server.url
    return server


def run(settings: Settings, capture: str | None = None, adopt_file: bool = False,
        http: str | None = None) -> int:
    """syncd.api.run's work (see there)."""
    # Every setting is checked before any server starts.
    options = daemon_options(settings, capture)
    lower_priority(options.nice)  # before the embedded servers start: they inherit it
    migrations = migration_files(settings)
    served = http_options(settings, http)
    hdf5 = None
    if settings.hdf5_dirs:
        from syncd.api.hdf5_options import load_hdf5_config

        hdf5 = load_hdf5_config(settings)
    ends = endpoints(settings)
    # Bound now: a port in use is a start-up error, before any server starts.
    sock = bind(served.host, served.port) if served.host is not None else None
    # An embedded MongoDB that keeps dying ends the run (the daemon, once built, hears it).
    give_up = GiveUp()
    backoff = Backoff(cap=options.backoff_max_seconds)  # the daemon's, for its outages
    # Closed on any way out (the server closes it too).
    with contextlib.closing(sock) if sock else contextlib.nullcontext(), \
            open_source(settings, wait_busy=True, on_busy=_busy_at_start) as source, \
            _waited_target(ends, give_up, backoff) as target, \
            daemon_redis(ends, hdf5 is not None, supervise=True) as (client, events):
        def checked() -> StateStore:
            state = state_store(target.db, settings)
            check_source_file(state, settings, record_it=True, adopt=adopt_file)
            return state

        state = _until_reachable(checked, target.shown_url, backoff, give_up)
        log.info("syncd run: %s -> %s (%s mode)", settings.sqlite, where(settings, target),
                 options.capture)
        publisher = EventPublisher(events, state.source_id, None,
                                   maxlen=options.events_maxlen)
        follower = None
        if hdf5 is not None:
            from syncd.hdf5.follower import Hdf5Follower
            from syncd.hdf5.warming import SCRUB_BYTES

            follower = Hdf5Follower(hdf5, state.source_id, target.db, client,
                                    scrub_bytes=SCRUB_BYTES)
        daemon = build_daemon(settings, options, source, target.db, publisher, follower,
                              migrations=migrations, state=state)
        give_up.bind(daemon.fail)
        ctx = http_context(settings, target.db, client or events,
                           daemon.health.status_document, state.source_id,
                           local_tier_options(settings))
        with _serve(ctx, served, sock, daemon):
            try:
                return daemon.run()
            except SourceReadOnly as exc:  # triggers capture on a read-only database
                raise read_only_error(exc) from None
