"""`dashboard`: the read-only web dashboard on its own, against the configured stores."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from syncd.config import Settings

TOKEN_ENV = "SYNCD_HTTP_TOKEN"


def dashboard_token(settings: Settings) -> str | None:
    """The token a dashboard off loopback requires: SYNCD_HTTP_TOKEN, else [http] token."""
    http = settings.extra.get("http") or {}
    token = os.environ.get(TOKEN_ENV) or http.get("token")
    return str(token) if token else None


def dashboard(settings: Settings, listen: str | None = None,
              started: Callable[[str], Any] | None = None) -> None:
    """Serve the dashboard until interrupted. Reads MongoDB (configured or embedded) and
    the Redis `syncd run` publishes to, if one runs; writes nothing."""
    from syncd.connect.mongo import open_target
    from syncd.connect.redis import running_redis
    from syncd.http.context import HttpContext
    from syncd.http.dashboard.standalone import (
        DEFAULT_LISTEN,
        parse_listen,
        require_token_off_loopback,
        serve,
    )

    listen = listen or DEFAULT_LISTEN
    token = dashboard_token(settings)
    require_token_off_loopback(parse_listen(listen)[0], token)  # before any server starts
    with open_target(settings) as target, running_redis(settings) as client:
        serve(HttpContext(settings, target.db, client), listen, token, started)
