"""Server-sent events for one experiment's page, fed from the `syncd:events` Redis stream.

Each client gets its own reader: a blocking XREAD (at most `BLOCK_MS`) run on a
worker thread, so the event loop never waits on Redis; after a read that found
events it waits `COALESCE_SECONDS`, so a busy writer costs a few reads a second per
page (5 pages under 150 commits/s: 10 % of a core for the whole daemon, was 19 %).
Only events about the experiment (its document, its epochs, its checkpoints) are
forwarded, as `change` events; the page then fetches the new points. A comment
every `BLOCK_MS` keeps proxies from closing an idle stream and lets a closed client
be noticed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis
from bson import ObjectId
from starlette.requests import Request
from starlette.responses import StreamingResponse

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
                 start: str | None) -> AsyncIterator[str]:
    client = ctx.redis
    yield f"retry: {RETRY_MS}\n\n"
    if client is None:
        yield message("unavailable", {"reason": "no Redis configured: no live events"})
        return
    try:
        last = start or await anyio.to_thread.run_sync(_newest, client)
    except redis.RedisError as exc:
        yield message("unavailable", {"reason": scrub(f"Redis: {exc}")[:200]})
        return
    yield message("ready", {"after": last})
    while not await request.is_disconnected():
        try:
            entries = await anyio.to_thread.run_sync(_read, client, last,
                                                     abandon_on_cancel=True)
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
                                               [e for _, e in events])
        sent = False
        for (entry_id, event), hit in zip(events, moved):
            if event.get("type") == "migrated" or hit:
                sent = True
                yield message("change", {"collection": event.get("collection"),
                                         "operation": event.get("operation")}, entry_id)
        if not sent:  # other experiments' events only: still show the stream is alive
            yield ": idle\n\n"
        await anyio.sleep(COALESCE_SECONDS)


def event_stream(ctx: HttpContext, experiment_id: ObjectId, request: Request) -> StreamingResponse:
    start = request.headers.get("last-event-id")
    return StreamingResponse(follow(ctx, experiment_id, request, start),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
