"""`run`: the daemon's wiring (source, MongoDB waited for, Redis, events, HDF5 follower)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from legacy_adapters.base import Source
from syncd.api.local_tier import local_tier_options
from syncd.api.shared import migration_files, open_source, where
from syncd.config import Settings
from syncd.connect.mongo import MongoTarget, TargetUnreachable, open_target
from syncd.connect.redis import daemon_redis
from syncd.errors import ConfigError

if TYPE_CHECKING:
    from pymongo.database import Database

    from syncd.daemon.options import DaemonOptions
    from syncd.daemon.runner import Daemon
    from syncd.hdf5.follower import Hdf5Follower
    from syncd.sinks.events import EventPublisher

log = logging.getLogger("syncd")


def daemon_options(settings: Settings, capture: str | None = None) -> DaemonOptions:
    """The `[daemon]` settings, checked, with the shared settings the daemon reads;
    `capture` (the --capture flag) wins."""
    from syncd.api.feeds import RECONCILE_SECONDS
    from syncd.config import section
    from syncd.daemon.options import DEFAULTS, MODES, DaemonOptions

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
    if raw["batch"] <= 0:
        raise ConfigError(f"[daemon] batch = {raw['batch']}: must be positive")
    if not raw["reconcile_seconds"]:
        raw["reconcile_seconds"] = RECONCILE_SECONDS[raw["capture"]]
    return DaemonOptions(sqlite=settings.sqlite, source_id=settings.source_id,
                         state_dir=settings.state_dir, chunk_size=settings.chunk_size, **raw)


def build_daemon(settings: Settings, options: DaemonOptions, source: Source, db: Database,
                 publisher: EventPublisher, hdf5: Hdf5Follower | None = None, *,
                 migrations: list[Any] | None = None) -> Daemon:
    """The daemon over `source` and `db`, following the feed `options.capture` names
    (`migrations`: those already loaded, else the configured ones)."""
    from syncd.api.feeds import feed_factory
    from syncd.daemon.runner import Daemon, Stores
    from syncd.engine.migrator import Migrator
    from syncd.progress import Progress

    progress = Progress(enabled=True)
    if migrations is None:
        migrations = migration_files(settings)
    migrator = Migrator(settings, source, db, migrations, progress)
    return Daemon(options, Stores(source, db, migrator, progress), publisher,
                  feed_factory(options, source), hdf5)


@contextlib.contextmanager
def _waited_target(settings: Settings) -> Iterator[MongoTarget]:
    """The MongoDB target for `syncd run`, waited for (with backoff) while unreachable.

    SIGTERM or SIGINT before the daemon takes its signals over (while waiting, while an
    embedded server starts) is a requested stop: everything started is stopped, exit 0.
    """
    from syncd.daemon.sdnotify import notify
    from syncd.embedded.interrupts import Interrupted, raising, stop_requested
    from syncd.retry import Backoff

    backoff = Backoff(base=1.0, cap=30.0)
    with raising():
        try:
            while True:
                stack = contextlib.ExitStack()
                try:
                    target = stack.enter_context(open_target(settings))
                    break
                except TargetUnreachable as exc:
                    stack.close()
                    delay = backoff.next()
                    log.warning("%s; trying again in %.0f s", exc, delay)
                    notify(f"STATUS=waiting for MongoDB: {exc}")
                    time.sleep(delay)
            with stack:
                yield target
        except (Interrupted, KeyboardInterrupt) as exc:
            if not stop_requested(exc):
                raise
            log.info("stop requested before syncd run started following; stopped cleanly")
            raise SystemExit(0) from None


def _serve(settings: Settings, options: Any, sock: Any, daemon: Any,
           redis: Any) -> contextlib.AbstractContextManager[Any]:
    """The HTTP server over the daemon's live status (a no-op when it is off)."""
    if sock is None:
        return contextlib.nullcontext()
    from syncd.http.app import build_app
    from syncd.http.context import HttpContext
    from syncd.http.server import HttpServer

    ctx = HttpContext(settings, daemon.db, redis, daemon.health.status_document,
                      local_tier_options(settings))
    server = HttpServer(build_app(ctx, options), options, sock)
    daemon.health.http_url = server.url
    return server


def run(settings: Settings, capture: str | None = None, adopt_file: bool = False,
        http: str | None = None) -> int:
    """Follow the legacy database until stopped (SIGTERM/SIGINT); the exit code.

    `capture` is "triggers" or "scan" (default: [daemon] capture); `http` the
    listen address (default: [http] listen; "" turns the server off). A stop
    requested before the daemon starts following raises SystemExit(0).
    """
    from legacy_adapters.errors import SourceReadOnly
    from syncd.api.feeds import read_only_error
    from syncd.checkpoint import sources
    from syncd.daemon.options import lower_priority
    from syncd.http.options import http_options
    from syncd.http.server import bind
    from syncd.sinks.events import EventPublisher

    options = daemon_options(settings, capture)
    lower_priority(options.nice)  # before the embedded servers start: they inherit it
    migrations = migration_files(settings)
    served = http_options(settings, http)
    # Bound now: a port in use is a start-up error, before any server starts.
    sock = bind(served.host, served.port) if served.host is not None else None
    # Closed on any way out (the server closes it too).
    with contextlib.closing(sock) if sock else contextlib.nullcontext(), \
            open_source(settings) as source, _waited_target(settings) as target, \
            daemon_redis(settings, needed=bool(settings.hdf5_dirs)) as (client, events):
        sources.check(sources.store_for(target.db, settings), settings, record_it=True,
                      adopt=adopt_file)
        log.info("syncd run: %s -> %s (%s mode)", settings.sqlite, where(settings, target),
                 options.capture)
        publisher = EventPublisher(events, settings.source_id, None,
                                   maxlen=options.events_maxlen)
        follower = None
        if settings.hdf5_dirs:
            from syncd.hdf5.follower import Hdf5Follower

            follower = Hdf5Follower(settings, target.db, client)
        daemon = build_daemon(settings, options, source, target.db, publisher, follower,
                              migrations=migrations)
        with _serve(settings, served, sock, daemon, client or events):
            try:
                return daemon.run()
            except SourceReadOnly as exc:  # triggers capture on a read-only database
                raise read_only_error(exc) from None
