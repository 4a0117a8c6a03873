"""Server-sent events for one experiment's page, fed from the `syncd:events` Redis stream.

Each client gets its own reader: a blocking XREAD (at most `BLOCK_MS`) run on a
worker thread, so the event loop never waits on Redis; after a read that found
events it waits `COALESCE_SECONDS`, so a busy writer costs a few reads a second per
page (5 pages under 150 commits/s: 10 % of a core for the whole daemon, was 19 %).
Only events about the experiment (its document, its epochs, its checkpoints) are
forwarded, as `change` events; the page then fetches the new points. A comment
every `BLOCK_MS` keeps proxies from closing an idle stream and lets a closed client
be noticed.

Streams are counted: beyond `[http] max_streams` open at once a new one is refused
with a 503 (the page then re-reads every few seconds instead), and their reads run
under a thread limit of their own, so open pages never hold the threads that answer
/healthz, /readyz and /metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis
from bson import ObjectId
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from syncd.http.context import HttpContext
from syncd.http.dashboard.data import touching
from syncd.redact import scrub
from syncd.sinks.events import STREAM, parse_event

BLOCK_MS = 1000
# After a read that found events, the next waits this long: a busy writer's events
# then arrive in a few reads a second per page instead of one read (and one MongoDB
# query) per event, and a new epoch still shows well within a second.
COALESCE_SECONDS = 0.25
RETRY_MS = 2000  # the browser reconnects after this long when the stream ends
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


@dataclass
class Streams:
    """The open live streams, at most `limit`, and the threads their reads may use
    (one each). Counted on the event loop's thread only: no lock."""

    limit: int
    open: int = 0
    threads: anyio.CapacityLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.threads = anyio.CapacityLimiter(self.limit)

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1

    def refused(self) -> JSONResponse:
        return JSONResponse({"error": f"too many live streams: {self.limit} are open "
                             "([http] max_streams); close a dashboard page or raise the "
                             "cap"}, 503, headers={"Retry-After": "30"})


class StreamResponse(StreamingResponse):
    """A stream that gives its place back however it ends (done, client gone, error)."""

    def __init__(self, body: AsyncIterator[str], streams: Streams) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.streams.give_back()


def last_event_id(value: str | None) -> str | None:
    """The client's Last-Event-ID if it is a stream entry id Redis accepts, else None
    (then the stream starts at the newest entry, as for a new page)."""
    if value is None or not STREAM_ID.fullmatch(value.strip()):
        return None
    ms, seq = value.strip().split("-")
    return value.strip() if int(ms) < 2**64 and int(seq) < 2**64 else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _newest(client: Any) -> str:
    newest = client.xrevrange(STREAM, count=1)
    return _text(newest[0][0]) if newest else "0-0"


def _read(client: Any, last: str) -> list[tuple[str, Any]]:
    reply = client.xread({STREAM: last}, count=100, block=BLOCK_MS) or []
    out = []
    for _stream, entries in reply:
        for entry_id, fields in entries:
            out.append((_text(entry_id), fields.get(b"event", fields.get("event"))))
    return out


def message(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def follow(ctx: HttpContext, experiment_id: ObjectId, request: Request,
                 start: str | None, threads: anyio.CapacityLimiter) -> AsyncIterator[str]:
    client = ctx.redis
    yield f"retry: {RETRY_MS}\n\n"
    if client is None:
        yield message("unavailable", {"reason": "no Redis configured: no live events"})
        return
    try:
        last = start or await anyio.to_thread.run_sync(_newest, client, limiter=threads)
    except redis.RedisError as exc:
        yield message("unavailable", {"reason": scrub(f"Redis: {exc}")[:200]})
        return
    yield message("ready", {"after": last})
    while not await request.is_disconnected():
        try:
            entries = await anyio.to_thread.run_sync(_read, client, last,
                                                     abandon_on_cancel=True, limiter=threads)
        except redis.RedisError as exc:
            yield message("unavailable", {"reason": scrub(f"Redis: {exc}")[:200]})
            return
        if not entries:
            yield ": idle\n\n"
            continue
        parsed = [(entry_id, parse_event(raw)) for entry_id, raw in entries]
        last = entries[-1][0]
        events = [(entry_id, e) for entry_id, e in parsed
                  if not isinstance(e, str)]  # not a syncd event (the stream is shared)
        moved = await anyio.to_thread.run_sync(touching, ctx.db, experiment_id,
                                               [e for _, e in events], limiter=threads)
        sent = False
        for (entry_id, event), hit in zip(events, moved):
            if event.get("type") == "migrated" or hit:
                sent = True
                yield message("change", {"collection": event.get("collection"),
                                         "operation": event.get("operation")}, entry_id)
        if not sent:  # other experiments' events only: still show the stream is alive
            yield ": idle\n\n"
        await anyio.sleep(COALESCE_SECONDS)


def event_stream(ctx: HttpContext, experiment_id: ObjectId, request: Request,
                 streams: Streams) -> StreamResponse:
    """The stream of one page; the caller has taken its place in `streams`."""
    start = last_event_id(request.headers.get("last-event-id"))
    return StreamResponse(follow(ctx, experiment_id, request, start, streams.threads),
                          streams)
