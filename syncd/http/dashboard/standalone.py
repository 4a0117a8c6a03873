"""`syncd dashboard` on its own: a minimal Starlette app around `routes(ctx)`, on uvicorn.

Inside `syncd run` the dashboard's routes are mounted by the daemon's HTTP server
instead; this module only serves them when no daemon does (and in tests). It
binds loopback by default; on any other address it refuses to start without a
token (`[http] token` or SYNCD_HTTP_TOKEN), which every request must then carry
(HTTP basic auth with the token as password, or `Authorization: Bearer TOKEN`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from syncd.errors import ConfigError
from syncd.http.context import HttpContext
from syncd.http.dashboard import routes

DEFAULT_LISTEN = "127.0.0.1:9108"


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) -> (host, port)."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {listen!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_off_loopback(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise ConfigError(f"--listen {host}: the dashboard binds only loopback without a "
                          "token; set [http] token (or SYNCD_HTTP_TOKEN) to serve it on "
                          "another address")


class TokenAuth:
    """Every request needs the token: basic auth (any user name) or a bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token.encode()

    def _allowed(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        given = b""
        if scheme.lower() == "bearer":
            given = value.strip().encode()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        return bool(given) and hmac.compare_digest(given, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if not self._allowed(headers.get(b"authorization", b"").decode("latin-1")):
                deny = PlainTextResponse("a token is needed", 401,
                                         {"WWW-Authenticate": 'Basic realm="syncd"'})
                await deny(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_standalone_app(ctx: HttpContext, token: str | None = None) -> Starlette:
    middleware = [Middleware(TokenAuth, token=token)] if token else []
    return Starlette(routes=routes(ctx), middleware=middleware)


def serve(ctx: HttpContext, listen: str = DEFAULT_LISTEN, token: str | None = None,
          started: Callable[[str], Any] | None = None) -> None:
    """Serve the dashboard until SIGINT/SIGTERM; `started(url)` once it listens."""
    host, port = parse_listen(listen)
    require_token_off_loopback(host, token)
    config = uvicorn.Config(build_standalone_app(ctx, token), host=host, port=port,
                            log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    if started is not None:
        shown = f"[{host}]" if ":" in host else host
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets)
            if server.started:
                started(f"http://{shown}:{port}/")

        server.startup = startup  # type: ignore[method-assign]
    server.run()
    if not server.started:
        raise ConfigError(f"--listen {listen}: could not listen there (in use?)")
