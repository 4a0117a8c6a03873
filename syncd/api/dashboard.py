"""`dashboard`: the read-only web dashboard on its own, against the configured stores.

The same app and server as inside `syncd run` (syncd.http.app, syncd.http.server),
so the `[http]` rules hold here too: loopback by default, and any other address
needs a token (`[http] token` or SYNCD_HTTP_TOKEN) or basic-auth credentials.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any

from syncd.api.http_options import http_context, http_options
from syncd.api.local_tier import local_tier_options
from syncd.api.options import endpoints
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.connect.redis import running_redis

# Beside `syncd run`'s server (9187), so both can run on one host.
DEFAULT_LISTEN = "127.0.0.1:9108"


def dashboard(settings: Settings, listen: str | None = None,
              started: Callable[[str], Any] | None = None) -> None:
    """Serve the dashboard until SIGINT or SIGTERM. Reads MongoDB (configured or
    embedded) and the Redis `syncd run` publishes to, if one runs; writes nothing."""
    # Starlette, uvicorn and prometheus_client: only the commands that serve load them.
    from syncd.http.app import build_app
    from syncd.http.server import HttpServer

    options = http_options(settings, listen or DEFAULT_LISTEN)  # refusals before any server
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ends = endpoints(settings)
    with open_target(ends) as target, running_redis(ends) as client:
        app = build_app(http_context(settings, target.db, client,
                                       local_tier=local_tier_options(settings)), options)
        with HttpServer(app, options) as server:
            if started is not None:
                started(server.url + "/")
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a clean stop
                stop.wait()
