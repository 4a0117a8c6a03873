"""The ASGI app: /metrics, /healthz, /readyz, and the dashboard at `/`.

Starlette, because it is small, typed and plain ASGI (uvicorn runs it on a thread of
the daemon), and its routes are ordinary functions a test can call over real HTTP.
Blocking work runs on worker threads, so a slow read never blocks the loop that
serves the other routes; and each purpose has its own limit of threads (anyio
capacity limiters): the probes' few can never be taken by dashboard pages waiting
on MongoDB or by live streams waiting on Redis.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from syncd.connect.reasons import outage_line
from syncd.http.browser import BrowserHeaders, HostCheck, favicon
from syncd.http.context import HttpContext
from syncd.http.metrics import registry
from syncd.http.options import HttpOptions
from syncd.http.probe import Prober

STATUS_TTL = 0.5  # seconds a status document is reused: 10 scrapes/s cost 2 builds/s
PROBE_THREADS = 4  # /metrics, /healthz, /readyz at once; none waits for another purpose


def cached(func: Callable[[], dict[str, Any] | None],
           ttl: float = STATUS_TTL) -> Callable[[], dict[str, Any] | None]:
    """`func` called at most once per `ttl` seconds (thread-safe): scrapes stay cheap."""
    lock = threading.Lock()
    memo: list[Any] = [float("-inf"), None]

    def get() -> dict[str, Any] | None:
        with lock:
            if time.monotonic() - memo[0] >= ttl:
                memo[1], memo[0] = func(), time.monotonic()
            return memo[1]
    return get


def _basic_pair(credentials: str) -> tuple[str, str] | None:
    """(user, password) of basic-auth credentials; None if they are malformed."""
    try:
        user, sep, password = base64.b64decode(credentials, validate=True).decode() \
            .partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class RequireAuth:
    """Every request needs the bearer token or the basic-auth pair (when either is set).
    The scheme's name is case-insensitive (RFC 9110): `bearer` and `BASIC` count."""

    def __init__(self, app: ASGIApp, options: HttpOptions) -> None:
        self.app, self.options = app, options

    def allowed(self, header: str) -> bool:
        scheme, _, credentials = header.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        token, user = self.options.token, self.options.username
        if scheme == "bearer":
            return bool(token) and _same(credentials, token)
        pair = _basic_pair(credentials) if scheme == "basic" else None
        if pair is None:
            return False
        if token and _same(pair[1], token):
            return True  # a browser's prompt: any user name, the token as password
        return bool(user) and _same(pair[0], user) & _same(pair[1], self.options.password)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not self.allowed(header):
                response = PlainTextResponse("authentication required\n", 401,
                                             headers={"WWW-Authenticate": 'Basic realm="syncd"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class App(Starlette):
    """Starlette with the browser headers outside everything, its error pages included."""

    def build_middleware_stack(self) -> ASGIApp:
        return BrowserHeaders(super().build_middleware_stack())


def _dashboard(ctx: HttpContext, options: HttpOptions) -> tuple[list[BaseRoute], Any]:
    """The dashboard's routes, and the experiments list's order to start with the server
    (None: the server sorts each page)."""
    try:
        from syncd.http.dashboard import live_order
        from syncd.http.dashboard import routes as dashboard_routes
    except ImportError:
        def index(request: Request) -> Response:
            return PlainTextResponse("syncd: /metrics, /healthz, /readyz (no dashboard "
                                     "in this build)\n")
        return [Route("/", index)], None
    order = live_order(ctx) if options.experiments_order == "memory" else None
    return list(dashboard_routes(ctx, max_streams=options.max_streams, order=order)), order


def build_app(ctx: HttpContext, options: HttpOptions) -> Starlette:
    """The app for `ctx` under `options` (auth, stuck time, Host names, the live streams'
    cap)."""
    prober = Prober(ctx)
    status = cached(ctx.status) if ctx.status is not None else (lambda: None)
    metrics = registry(ctx.source.source_id, status, lambda: prober.view)

    def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    def healthz(request: Request) -> Response:
        doc = status()
        if doc is None:  # `syncd dashboard`: no loop of its own to watch
            return JSONResponse({"status": "ok", "daemon": False})
        quiet = float(doc.get("loop_seconds_ago") or 0.0)
        if quiet > options.stuck_seconds:
            return JSONResponse({"status": "stuck", "reason": f"the follow loop has not "
                                 f"moved for {quiet:.0f} s"}, 503)
        return JSONResponse({"status": "ok", "loop_seconds_ago": quiet})

    def readyz(request: Request) -> Response:
        doc, view = status(), prober.view
        reason = None
        if doc is not None and not doc.get("ready"):  # the outage the start-up waits out
            outage = doc.get("outage")
            reason = (outage_line(outage["what"], outage.get("error")) if outage
                      else "the first sync is not done yet")
        elif view.mongo_up is None:
            reason = "MongoDB not probed yet"
        elif not view.mongo_up:
            reason = view.mongo_error or "MongoDB unreachable"
        elif doc is not None and doc.get("outage"):
            outage = doc["outage"]
            reason = outage_line(outage["what"], outage.get("error"))
        if reason is not None:
            return JSONResponse({"status": "not ready", "reason": reason}, 503)
        return JSONResponse({"status": "ready"})

    dashboard, order = _dashboard(ctx, options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prober.start()
        if order is not None and ctx.status is None:
            # `syncd dashboard`: read the order now, before the first page asks. Inside
            # `syncd run` (mostly probes) the first experiments page starts it.
            order.start()
        try:
            yield
        finally:
            if order is not None:
                await anyio.to_thread.run_sync(order.stop)
            await anyio.to_thread.run_sync(prober.stop)

    probe_threads = anyio.CapacityLimiter(PROBE_THREADS)

    def probe(func: Callable[[Request], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await anyio.to_thread.run_sync(func, request, limiter=probe_threads)
        return endpoint

    routes: list[BaseRoute] = [Route("/metrics", probe(scrape)), Route("/healthz", probe(healthz)),
                               Route("/readyz", probe(readyz)),
                               Route("/favicon.ico", favicon), *dashboard]
    middleware = [Middleware(HostCheck, options=options)]
    if options.auth:
        middleware.append(Middleware(RequireAuth, options=options))
    app = App(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.prober = prober
    return app
