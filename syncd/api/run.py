"""`run`: the daemon's wiring (source, MongoDB waited for, Redis, events, HDF5 follower)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from syncd.api.shared import migration_files, open_source, where
from syncd.config import Settings
from syncd.connect.mongo import MongoTarget, TargetUnreachable, open_target
from syncd.connect.redis import daemon_redis

log = logging.getLogger("syncd")


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

    ctx = HttpContext(settings, daemon.db, redis, daemon.health.status_document)
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
    from syncd.checkpoint import sources
    from syncd.daemon.options import daemon_options, lower_priority
    from syncd.daemon.runner import Daemon
    from syncd.http.options import http_options
    from syncd.http.server import bind
    from syncd.sinks.events import EventPublisher

    options = daemon_options(settings, capture)
    lower_priority(options["nice"])  # before the embedded servers start: they inherit it
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
                 options["capture"])
        publisher = EventPublisher(events, settings.source_id, None,
                                   maxlen=options["events_maxlen"])
        follower = None
        if settings.hdf5_dirs:
            from syncd.hdf5.follower import Hdf5Follower

            follower = Hdf5Follower(settings, target.db, client)
        daemon = Daemon(settings, source, target.db, migrations, options, publisher, follower)
        with _serve(settings, served, sock, daemon, client or events):
            return daemon.run()
