"""One reader of the `syncd:events` Redis stream for every open dashboard page.

A blocking XREAD per page held one worker thread and one pooled Redis connection per
open page: 60 pages made /healthz wait for a thread, and past 100 the Redis client's
pool (redis-py's default size) was empty for the daemon's own cache writes too. Here
the pages share the reads: whichever page asks for what comes next while no read is
under way makes the read (on a worker thread, at most `BLOCK_MS`) and every page gets
its result, as a chain of `Batch`es each page walks at its own pace. No task outlives
its page: if the page making the read goes away, the next one that asks reads again
from the same position, so nothing is lost or read twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis

from syncd.sinks.events import STREAM, parse_event

BLOCK_MS = 1000
BATCH_COUNT = 100  # entries per read


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as numbers, to order ids (`"12-3"` -> (12, 3))."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _newest(client: Any) -> str:
    newest = client.xrevrange(STREAM, count=1)
    return _text(newest[0][0]) if newest else "0-0"


def read_after(client: Any, last: str, block: int | None = BLOCK_MS,
               count: int = BATCH_COUNT) -> list[tuple[str, Any]]:
    """(entry id, raw event) of the entries after `last`; waits up to `block` ms."""
    reply = client.xread({STREAM: last}, count=count, block=block) or []
    out = []
    for _stream, entries in reply:
        for entry_id, fields in entries:
            out.append((_text(entry_id), fields.get(b"event", fields.get("event"))))
    return out


@dataclass
class Batch:
    """One read's result: `entries` up to stream id `last`, or the `error` it met.
    `events`: the entries that are syncd events, parsed once for every page; `owners`:
    the experiments each is about, looked up once (by the first page that asks)."""

    last: str
    entries: list[tuple[str, Any]]
    error: redis.RedisError | None = None
    next: Batch | None = None
    events: list[tuple[str, dict[str, Any]]] = field(init=False)
    owners: list[frozenset[str] | None] | None = None
    finding: anyio.Event | None = None  # set once the page looking them up is done

    def __post_init__(self) -> None:
        parsed = [(entry_id, parse_event(raw)) for entry_id, raw in self.entries]
        self.events = [(i, e) for i, e in parsed
                       if not isinstance(e, str)]  # not a syncd event (the stream is shared)

    async def owners_by(self, find: Callable[[list[dict[str, Any]]], Any],
                        threads: anyio.CapacityLimiter) -> list[frozenset[str] | None]:
        """`find(events)` run once (on a thread) whichever pages ask; a page whose lookup
        failed or was abandoned leaves it to the next."""
        while self.owners is None:
            if self.finding is not None:
                await self.finding.wait()
                continue
            self.finding = anyio.Event()
            try:
                self.owners = await anyio.to_thread.run_sync(
                    find, [e for _, e in self.events], limiter=threads)
            finally:
                done, self.finding = self.finding, None
                done.set()
        return self.owners


class Hub:
    """The shared reader: `tail()` to start at the newest entry, `after(batch)` for
    what follows it (waiting while another page's read is under way)."""

    def __init__(self, client: Any, threads: anyio.CapacityLimiter) -> None:
        self.client, self.threads = client, threads
        self._tail: Batch | None = None
        self._reading = False
        self._start = anyio.Lock()
        self._changed = anyio.Event()

    async def tail(self) -> Batch:
        """The latest batch (the first page's call finds the stream's newest entry)."""
        async with self._start:
            if self._tail is None or self._tail.error is not None:
                last = await anyio.to_thread.run_sync(_newest, self.client,
                                                      limiter=self.threads)
                self._tail = Batch(last, [])
            return self._tail

    def forget(self) -> None:
        """No page follows any more: the next one starts at the newest entry (not at
        where the last one left off, which may be hours of events ago)."""
        self._tail = None

    async def after(self, batch: Batch) -> Batch:
        """The batch after `batch`: read now by this page, or by the one reading already."""
        while batch.next is None:
            if self._reading:
                changed = self._changed
                await changed.wait()
                continue
            self._reading = True
            try:
                try:
                    entries = await anyio.to_thread.run_sync(
                        read_after, self.client, batch.last, abandon_on_cancel=True,
                        limiter=self.threads)
                    found = Batch(entries[-1][0] if entries else batch.last, entries)
                except redis.RedisError as exc:
                    found = Batch(batch.last, [], exc)
                batch.next = found
                if self._tail is batch:
                    self._tail = found
            finally:  # read, failed or abandoned (this page went away): wake the others
                self._reading = False
                self._changed.set()
                self._changed = anyio.Event()
        return batch.next
