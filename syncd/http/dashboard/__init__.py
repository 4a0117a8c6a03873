"""The read-only dashboard: sync health, experiments, live training curves, cache coverage.

`routes(ctx)` is everything the HTTP server mounts at `/`: five HTML pages, their
JSON (`/api/...`), one server-sent-events stream per experiment and the static
files (one CSS, the chart and page scripts; no CDN: it works offline). Nothing here writes
anywhere; every read goes through `ctx` (syncd.http.context).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from syncd.client.ranking_feed import LiveRanking
from syncd.errors import SyncdError
from syncd.http.context import HttpContext
from syncd.http.dashboard import data, markup, pages
from syncd.http.dashboard.answers import BadQuery
from syncd.http.dashboard.live import Streams, event_stream

STATIC = Path(__file__).parent / "static"


def live_order(ctx: HttpContext) -> LiveRanking:
    """The experiments list's order, kept in this process (syncd.client.ranking_feed):
    `start()` it with the server, so it is read before the first page asks."""
    return LiveRanking(ctx.db["experiments"])


def routes(ctx: HttpContext, max_streams: int = 100,
           order: LiveRanking | None = None) -> list[BaseRoute]:
    """The dashboard's routes, all GET, all read-only; at most `max_streams` live
    streams open at once; the experiments list from `order` when it can answer
    (started and stopped by the caller: `live_order`), else sorted by the server."""
    streams = Streams(max_streams, ctx.redis)

    async def read(func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, ctx, *args)  # pymongo blocks

    def filters(request: Request) -> dict[str, str]:
        q = request.query_params
        return {k: q.get(k, "").strip() for k in ("challenge", "status", "source")}

    async def health_page(request: Request) -> Response:
        return HTMLResponse(pages.health_page(await read(data.health)))

    async def health_json(request: Request) -> Response:
        return JSONResponse(await read(data.health))

    def listing(request: Request) -> list[Any]:
        q = request.query_params
        return [*filters(request).values(), q.get("page", ""), q.get("offset", ""),
                q.get("as_of", ""), order]

    def compared(request: Request) -> list[str]:
        """`?runs=A,B,C` (or `runs` repeated, as the list's checkboxes send them)."""
        return [ref for value in request.query_params.getlist("runs")
                for ref in value.split(",")]

    async def experiments_page(request: Request) -> Response:
        try:
            found = await read(data.experiments, *listing(request))
        except BadQuery as exc:
            return HTMLResponse(markup.page("Bad request", "/experiments",
                                           f"<p class=empty>{markup.e(str(exc))}</p>"), 400)
        return HTMLResponse(pages.experiments_page(found))

    async def experiments_json(request: Request) -> Response:
        try:
            return JSONResponse(await read(data.experiments, *listing(request)))
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400)

    async def compare_page(request: Request) -> Response:
        refs = compared(request)
        try:
            found = await read(data.comparison, refs)
        except SyncdError as exc:
            return HTMLResponse(markup.page("Compare", "/experiments",
                                           f"<p class=empty>{markup.e(str(exc))}</p>"), 404)
        show_all = request.query_params.get("all", "") not in ("", "0")
        return HTMLResponse(pages.compare_page(found, show_all, refs))

    async def compare_json(request: Request) -> Response:
        try:
            return JSONResponse(await read(data.comparison, compared(request)))
        except SyncdError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    async def experiment_page(request: Request) -> Response:
        try:
            found = await read(data.experiment, request.path_params["ref"],
                               request.query_params.get("as_of", ""))
        except BadQuery as exc:
            return HTMLResponse(markup.page("Bad request", "/experiments",
                                           f"<p class=empty>{markup.e(str(exc))}</p>"), 400)
        except SyncdError as exc:
            return HTMLResponse(markup.page("Not found", "/experiments",
                                           f"<p class=empty>{markup.e(str(exc))}</p>"), 404)
        return HTMLResponse(pages.experiment_page(found))

    async def experiment_json(request: Request) -> Response:
        try:
            return JSONResponse(await read(data.experiment, request.path_params["ref"],
                                           request.query_params.get("as_of", "")))
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except SyncdError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    async def epochs_json(request: Request) -> Response:
        try:
            return JSONResponse(await read(data.epochs, request.path_params["ref"]))
        except SyncdError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    async def experiment_events(request: Request) -> Response:
        if not streams.take():
            return streams.refused()
        try:
            oid = await read(data.experiment_id, request.path_params["ref"])
        except BaseException as exc:
            streams.give_back()
            if isinstance(exc, SyncdError):
                return JSONResponse({"error": str(exc)}, 404)
            raise
        return event_stream(ctx, oid, request, streams)

    async def cache_page(request: Request) -> Response:
        return HTMLResponse(pages.cache_page(await read(data.cache)))

    async def cache_json(request: Request) -> Response:
        return JSONResponse(await read(data.cache))

    return [
        Route("/", health_page),
        Route("/experiments", experiments_page),
        Route("/experiments/{ref}", experiment_page),
        Route("/compare", compare_page),
        Route("/cache", cache_page),
        Route("/api/health", health_json),
        Route("/api/experiments", experiments_json),
        Route("/api/compare", compare_json),
        Route("/api/experiments/{ref}", experiment_json),
        Route("/api/experiments/{ref}/epochs", epochs_json),
        Route("/api/experiments/{ref}/events", experiment_events),
        Route("/api/cache", cache_json),
        Mount("/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
