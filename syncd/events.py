"""Announcing applied changes on Redis: a Stream to resume from, pub/sub to listen live.

Every write the daemon applies becomes one JSON event per collection and
operation: source id, collection, table, operation, document ids, migration
version, time. Events go to the stream `syncd:events` (trimmed with MAXLEN ~) and
are published on the channel `syncd:events`. Redis being down never stops the
MongoDB sync: events wait in a bounded buffer and are sent when Redis is back.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import redis

log = logging.getLogger(__name__)

STREAM = "syncd:events"
CHANNEL = "syncd:events"
MAX_IDS = 500  # ids per event; larger writes become several events


class EventPublisher:
    """Publishes events; buffers (bounded) while Redis is unreachable."""

    def __init__(self, client: redis.Redis | None, source_id: str, version: int | None,
                 maxlen: int = 100_000, buffer: int = 10_000) -> None:
        self.client = client
        self.source_id = source_id
        self.version = version
        self.maxlen = maxlen
        self.pending: collections.deque[str] = collections.deque(maxlen=buffer)
        self.down_since: dt.datetime | None = None
        self.sent = 0
        self.dropped = 0

    def event(self, collection: str, table: str | None, operation: str,
              ids: Sequence[Any]) -> str:
        return json.dumps({
            "source_id": self.source_id, "collection": collection, "table": table,
            "operation": operation, "ids": [str(i) for i in ids], "version": self.version,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        }, separators=(",", ":"))

    def announce(self, collection: str, table: str | None, operation: str,
                 ids: Sequence[Any]) -> None:
        """Queue events for these ids and try to send everything queued."""
        if self.client is None or not ids:
            return
        for start in range(0, len(ids), MAX_IDS):
            if len(self.pending) == self.pending.maxlen:
                self.dropped += 1
            self.pending.append(self.event(collection, table, operation,
                                           ids[start:start + MAX_IDS]))
        self.flush()

    def flush(self) -> None:
        if self.client is None or not self.pending:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            batch = list(self.pending)
            for payload in batch:
                pipe.xadd(STREAM, {"event": payload}, maxlen=self.maxlen, approximate=True)
                pipe.publish(CHANNEL, payload)
            pipe.execute()
        except redis.RedisError as exc:
            if self.down_since is None:
                self.down_since = dt.datetime.now(dt.timezone.utc)
                log.warning("Redis unreachable (%s); events wait in a buffer of %d and "
                            "the MongoDB sync goes on", exc, self.pending.maxlen)
            return
        for _ in batch:
            self.pending.popleft()
        self.sent += len(batch)
        if self.down_since is not None:
            log.info("Redis is back; sent %d buffered events", len(batch))
            self.down_since = None

    def status(self) -> dict[str, Any]:
        return {"enabled": self.client is not None, "sent": self.sent,
                "buffered": len(self.pending), "dropped": self.dropped,
                "redis_down_since": self.down_since}


def tail(client: redis.Redis, start: str = "$", block_ms: int = 5000,
         count: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events from the stream after id `start` ("$": only new ones; "0": from the oldest
    kept). Yields (stream id, event) forever, or until `count` events."""
    last = start
    seen = 0
    while count is None or seen < count:
        reply = client.xread({STREAM: last}, count=100, block=block_ms)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id if isinstance(entry_id, str) else entry_id.decode()
                raw = fields.get("event") or fields.get(b"event")
                text = raw if isinstance(raw, str) else raw.decode()
                yield last, json.loads(text)
                seen += 1
                if count is not None and seen >= count:
                    return
