"""Server-sent events for one experiment's page, fed from the `syncd:events` Redis stream.

The pages share one reader of the stream (syncd.http.dashboard.hub: one blocking
XREAD at a time, on a worker thread, so the event loop never waits on Redis). After
a read that found events a page waits `COALESCE_SECONDS` and then takes everything
read meanwhile at once, so a busy writer costs a few MongoDB queries a second per
page, not one per event. Only events about the experiment (its document, its epochs,
its checkpoints) are forwarded, as `change` events; the page then fetches the new
points. A comment every `BLOCK_MS` keeps proxies from closing an idle stream and lets
a closed client be noticed.

Streams are counted: beyond `[http] max_streams` open at once a new one is refused
with a 503 (the page then re-reads every few seconds instead). Their reads and
queries run under a thread limit of their own, so open pages never hold the threads
that answer /healthz, /readyz and /metrics, nor more than one Redis connection.
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
from syncd.http.dashboard.hub import Hub, entry_key, read_after
from syncd.redact import scrub
from syncd.sinks.events import parse_event

# After a read that found events, the next waits this long: a busy writer's events
# then arrive in a few reads a second per page instead of one read (and one MongoDB
# query) per event, and a new epoch still shows well within a second.
COALESCE_SECONDS = 0.25
RETRY_MS = 2000  # the browser reconnects after this long when the stream ends
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
# Threads for the streams' one read and their MongoDB queries (which event is whose):
# whatever the number of pages, they wait for each other, never for other routes.
STREAM_THREADS = 8


@dataclass
class Streams:
    """The open live streams, at most `limit`; their shared reader of the events stream
    (None without Redis) and the threads it and their queries may use. Counted on the
    event loop's thread only: no lock."""

    limit: int
    client: Any = None
    open: int = 0
    threads: anyio.CapacityLimiter = field(init=False)
    hub: Hub | None = field(init=False)

    def __post_init__(self) -> None:
        self.threads = anyio.CapacityLimiter(STREAM_THREADS)
        self.hub = Hub(self.client, self.threads) if self.client is not None else None

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


def message(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def follow(ctx: HttpContext, experiment_id: ObjectId, start: str | None,
                 streams: Streams) -> AsyncIterator[str]:
    """The page's events: `ready`, then `change`s about this experiment (and idle
    comments), or `unavailable` with the reason when Redis is missing or fails."""
    yield f"retry: {RETRY_MS}\n\n"
    hub = streams.hub
    if hub is None:
        yield message("unavailable", {"reason": "no Redis configured: no live events"})
        return
    pending: list[tuple[str, Any]] = []
    try:
        batch = await hub.tail()
        if start is not None and entry_key(start) < entry_key(batch.last):
            # A reconnecting page: what it missed, up to where the shared reads are.
            missed = await anyio.to_thread.run_sync(read_after, hub.client, start, None, 1000,
                                                    limiter=streams.threads)
            pending = [(i, raw) for i, raw in missed if entry_key(i) <= entry_key(batch.last)]
    except redis.RedisError as exc:
        yield message("unavailable", {"reason": scrub(f"Redis: {exc}")[:200]})
        return
    yield message("ready", {"after": start or batch.last})
    while True:
        if pending:
            for text in await _changes(ctx, experiment_id, pending, streams.threads):
                yield text
            pending = []
            await anyio.sleep(COALESCE_SECONDS)
        batch = await hub.after(batch)
        pending = list(batch.entries)
        while batch.next is not None and batch.error is None:  # read while this page slept
            batch = batch.next
            pending += batch.entries
        if batch.error is not None:
            yield message("unavailable", {"reason": scrub(f"Redis: {batch.error}")[:200]})
            return
        if not pending:
            yield ": idle\n\n"


async def _changes(ctx: HttpContext, experiment_id: ObjectId, entries: list[tuple[str, Any]],
                   threads: anyio.CapacityLimiter) -> list[str]:
    """The `change` messages of the entries about this experiment (an idle comment if
    none is: the stream still shows it is alive)."""
    parsed = [(entry_id, parse_event(raw)) for entry_id, raw in entries]
    events = [(entry_id, e) for entry_id, e in parsed
              if not isinstance(e, str)]  # not a syncd event (the stream is shared)
    moved = await anyio.to_thread.run_sync(touching, ctx.db, experiment_id,
                                           [e for _, e in events], limiter=threads)
    out = [message("change", {"collection": event.get("collection"),
                              "operation": event.get("operation")}, entry_id)
           for (entry_id, event), hit in zip(events, moved)
           if event.get("type") == "migrated" or hit]
    return out or [": idle\n\n"]


def event_stream(ctx: HttpContext, experiment_id: ObjectId, request: Request,
                 streams: Streams) -> StreamResponse:
    """The stream of one page; the caller has taken its place in `streams`."""
    start = last_event_id(request.headers.get("last-event-id"))
    return StreamResponse(follow(ctx, experiment_id, start, streams), streams)
