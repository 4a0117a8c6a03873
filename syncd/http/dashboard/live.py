"""Server-sent events for one experiment's page, fed from the `syncd:events` Redis stream.

The pages share one reader of the stream (syncd.http.dashboard.hub: one blocking
XREAD at a time, on a worker thread, so the event loop never waits on Redis). After
a read that found events a page waits `COALESCE_SECONDS` and then takes everything
read meanwhile at once, so a busy writer costs a few MongoDB queries a second per
page, not one per event. Only events about the experiment (its document, its epochs,
its checkpoints) are forwarded, as `change` events; the page then fetches the new
points. A comment keeps proxies from closing a stream: after a read with only other
experiments' events, and every `KEEPALIVE_SECONDS` on a quiet one (not after every
empty read: with hundreds of pages open, a write to each every second kept the event
loop from the probes for a good part of each second). A closed client is noticed by
its disconnect, not by a failed write.

Streams are counted: beyond `[http] max_streams` open at once a new one is refused
with a 503 (the page then re-reads every few seconds instead). Their reads and
queries run under a thread limit of their own, so open pages never hold the threads
that answer /healthz, /readyz and /metrics, nor more than one Redis connection.
"""

from __future__ import annotations

import functools
import json
import random
import re
import time
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
from syncd.http.dashboard.data import owners as data_owners
from syncd.http.dashboard.hub import Batch, Hub, entry_key, read_after
from syncd.redact import scrub

# After a read that found events, the next waits this long: a busy writer's events
# then arrive in a few reads a second per page instead of one read (and one MongoDB
# query) per event, and a new epoch still shows well within a second.
COALESCE_SECONDS = 0.25
RETRY_MS = 2000  # the browser reconnects after this long when the stream ends
KEEPALIVE_SECONDS = 15.0  # well inside proxies' read timeouts (nginx: 60 s)
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
        if self.open == 0 and self.hub is not None:
            self.hub.forget()  # the next page starts at the newest entry, not here

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
    pending: list[Batch] = []
    try:
        batch = await hub.tail()
        if start is not None and entry_key(start) < entry_key(batch.last):
            # A reconnecting page: what it missed, up to where the shared reads are.
            missed = await anyio.to_thread.run_sync(read_after, hub.client, start, None, 1000,
                                                    limiter=streams.threads)
            pending = [Batch(batch.last, [(i, raw) for i, raw in missed
                                          if entry_key(i) <= entry_key(batch.last)])]
    except redis.RedisError as exc:
        yield message("unavailable", {"reason": scrub(f"Redis: {exc}")[:200]})
        return
    yield message("ready", {"after": start or batch.last})
    # Each page's keep-alive clock starts at a random phase: pages opened together
    # (a crowd reconnecting after a restart) do not all write at the same read.
    wrote = time.monotonic() - random.uniform(0, KEEPALIVE_SECONDS)
    while True:
        if any(b.entries for b in pending):
            # One write for all of them: hundreds of pages x several events each would
            # be that many sends on the event loop that also answers the probes.
            yield "".join(await _changes(ctx, experiment_id, pending, streams.threads))
            wrote = time.monotonic()
            await anyio.sleep(COALESCE_SECONDS)
        batch = await hub.after(batch)
        pending = [batch]
        while batch.next is not None and batch.error is None:  # read while this page slept
            batch = batch.next
            pending.append(batch)
        if batch.error is not None:
            yield message("unavailable", {"reason": scrub(f"Redis: {batch.error}")[:200]})
            return
        quiet = not any(b.entries for b in pending)
        if quiet and time.monotonic() - wrote >= KEEPALIVE_SECONDS:
            yield ": idle\n\n"
            wrote = time.monotonic()


async def _changes(ctx: HttpContext, experiment_id: ObjectId, batches: list[Batch],
                   threads: anyio.CapacityLimiter) -> list[str]:
    """The `change` messages of the batches' events about this experiment (an idle
    comment if none is: the stream still shows it is alive)."""
    mine, out = str(experiment_id), []
    for batch in batches:
        if not batch.events:
            continue
        owners = await batch.owners_by(functools.partial(data_owners, ctx.db), threads)
        for (entry_id, event), who in zip(batch.events, owners):
            if event.get("type") == "migrated" or (mine in who if who is not None
                                                   else bool(event.get("ids"))):
                out.append(message("change", {"collection": event.get("collection"),
                                              "operation": event.get("operation")}, entry_id))
    return out or [": idle\n\n"]


def event_stream(ctx: HttpContext, experiment_id: ObjectId, request: Request,
                 streams: Streams) -> StreamResponse:
    """The stream of one page; the caller has taken its place in `streams`."""
    start = last_event_id(request.headers.get("last-event-id"))
    return StreamResponse(follow(ctx, experiment_id, start, streams), streams)
