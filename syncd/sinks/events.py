"""Announcing applied changes on Redis: a Stream to resume from, pub/sub to listen live.

Every write the daemon applies becomes one JSON event per collection and
operation: source id, collection, table, operation, document ids, the legacy key of
each document's row (`keys`, one per id: {"run_id": 7}; absent in events of older
versions, null where unknown), migration version, time. Events go to the stream
`syncd:events` (trimmed with MAXLEN ~) and are published on the channel of the same
name (both named by `Keys.events`).
Redis being down never stops the MongoDB sync: events wait in a bounded buffer and
are sent when Redis is back.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import redis

from syncd.connect.redis_urls import RedisClient, is_cluster
from syncd.retry import Backoff
from syncd.sinks.cache import EVENTS_MAXLEN, Keys

log = logging.getLogger(__name__)

STREAM = Keys().events  # the stream, and the pub/sub channel, of the default prefix
MAXLEN = EVENTS_MAXLEN  # the stream is trimmed to about this many events
MAX_IDS = 500  # ids per event; larger writes become several events


def send(client: RedisClient, stream: str, payloads: list[str], maxlen: int = MAXLEN) -> list[Any]:
    """Append JSON payloads to `stream` (trimmed to ~maxlen) and publish each on the
    channel of the same name, in one round trip; returns the stream ids."""
    pipe = client.pipeline(transaction=False)
    if is_cluster(client):  # a cluster pipeline refuses PUBLISH: one round trip each
        for payload in payloads:
            pipe.xadd(stream, {"event": payload}, maxlen=maxlen, approximate=True)
        ids = pipe.execute()
        for payload in payloads:
            client.publish(stream, payload)
        return ids
    for payload in payloads:
        pipe.xadd(stream, {"event": payload}, maxlen=maxlen, approximate=True)
        pipe.publish(stream, payload)
    return pipe.execute()[::2]


def publish_event(client: redis.Redis, stream: str, event: Mapping[str, Any],
                  maxlen: int = MAXLEN) -> str:
    """Send one event now (stamped `at`, seconds since the epoch; the stream trimmed to
    ~`maxlen`, `[daemon] events_maxlen`); returns its stream id."""
    body = json.dumps({"at": time.time(), **event}, default=str, separators=(",", ":"))
    event_id = send(client, stream, [body], maxlen)[0]
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


MAX_KEY_TEXT = 200  # a longer key value is not carried (readers show the id instead)


def event_key(key: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A row's legacy key as JSON values (BLOBs as x'hex', as SQLite writes them); None if
    there is none or a value is too long to repeat in every event."""
    if not key:
        return None
    out: dict[str, Any] = {}
    for column, value in key.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = f"x'{bytes(value).hex()}'"
        elif value is not None and not (isinstance(value, (int, str)) or (
                isinstance(value, float) and math.isfinite(value))):
            value = str(value)  # NaN, inf, or a type SQLite keys do not have
        if isinstance(value, str) and len(value) > MAX_KEY_TEXT:
            return None
        out[str(column)] = value
    return out


class EventPublisher:
    """Queues events and sends them from a thread of its own.

    The daemon's loop only appends to a bounded buffer; the sender thread talks to
    Redis. A Redis that is down, or worse, accepts connections and never answers,
    therefore never delays the MongoDB sync: the sender backs off (capped, jittered)
    and the buffer keeps the newest `buffer` events (counting what it had to drop).
    """

    def __init__(self, client: redis.Redis | None, source_id: str, version: int | None,
                 maxlen: int = MAXLEN, buffer: int = 10_000, batch: int = 1000) -> None:
        self.client = client
        self.source_id = source_id
        self.version = version
        self.maxlen = maxlen
        self.batch = batch
        self.lock = threading.Lock()
        self.pending: collections.deque[tuple[int, str]] = collections.deque(maxlen=buffer)
        self.queued = 0  # events ever queued; pending holds the last ones, numbered
        self.down_since: dt.datetime | None = None
        self.sent = 0
        self.dropped = 0
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def event(self, collection: str, table: str | None, operation: str,
              ids: Sequence[Any], keys: Mapping[Any, Mapping[str, Any]] | None = None) -> str:
        event: dict[str, Any] = {
            "type": f"table.{operation}", "source_id": self.source_id,
            "collection": collection, "table": table,
            "operation": operation, "ids": [str(i) for i in ids], "version": self.version,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        }
        legacy = [event_key(keys.get(i)) for i in ids] if keys else []
        if any(k is not None for k in legacy):
            event["keys"] = legacy
        return json.dumps(event, separators=(",", ":"))

    def announce(self, collection: str, table: str | None, operation: str,
                 ids: Sequence[Any], keys: Mapping[Any, Mapping[str, Any]] | None = None) -> None:
        """Queue events for these ids (never blocks on Redis); `keys` (id -> the legacy
        row's key) names them as the legacy tables do."""
        if self.client is None or not ids:
            return
        self._queue([self.event(collection, table, operation, ids[start:start + MAX_IDS], keys)
                     for start in range(0, len(ids), MAX_IDS)])

    def announce_migrated(self, version: int) -> None:
        """One event: the target was (re)built at `version` (its documents are not listed)."""
        if self.client is None:
            return
        payload = json.dumps({
            "type": "migrated", "source_id": self.source_id, "version": version,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        }, separators=(",", ":"))
        self._queue([payload])

    def _queue(self, payloads: list[str]) -> None:
        with self.lock:
            for payload in payloads:
                if len(self.pending) == self.pending.maxlen:
                    self.dropped += 1
                self.queued += 1
                self.pending.append((self.queued, payload))
        if self._thread is None:
            self.flush()  # no sender thread (a one-shot command): send now
        else:
            self._wakeup.set()

    def start(self) -> None:
        """Send from a background thread from now on."""
        if self.client is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="events", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sender after one last try to send what is queued."""
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = Backoff(base=0.5, cap=30.0)
        while not self._stop.is_set():
            self._wakeup.wait()
            self._wakeup.clear()
            while self.pending and not self._stop.is_set():
                if self.flush():
                    backoff.reset()
                else:
                    self._stop.wait(backoff.next())
        self.flush()

    def flush(self) -> bool:
        """Send up to `batch` queued events; False if Redis failed (they stay queued)."""
        if self.client is None:
            return True
        with self.lock:
            batch = list(itertools.islice(self.pending, self.batch))
        if not batch:
            return True
        try:
            send(self.client, STREAM, [payload for _, payload in batch], self.maxlen)
        except redis.RedisError as exc:
            if self.down_since is None:
                self.down_since = dt.datetime.now(dt.timezone.utc)
                log.warning("Redis unreachable (%s); events wait in a buffer of %d and "
                            "the MongoDB sync goes on", exc, self.pending.maxlen)
            return False
        last = batch[-1][0]
        with self.lock:  # remove what was sent (some may have been pushed out meanwhile)
            while self.pending and self.pending[0][0] <= last:
                self.pending.popleft()
        self.sent += len(batch)
        if self.down_since is not None:
            log.info("Redis is back; sending the buffered events")
            self.down_since = None
        return True

    def status(self) -> dict[str, Any]:
        return {"enabled": self.client is not None, "sent": self.sent,
                "buffered": len(self.pending), "dropped": self.dropped,
                "redis_down_since": self.down_since}


MAX_DEPTH = 32  # nesting deeper than this is not an event anyone wrote on purpose
_TEXT_FIELDS = ("type", "source_id", "collection", "operation", "time")


def parse_event(raw: Any) -> dict[str, Any] | str:
    """The event in a stream entry's `event` field, or why it is not a well-formed one.

    The stream is shared: other programs can XADD anything. Only a JSON object whose
    known fields have the types syncd writes is an event; anything else is skipped by
    readers (and counted), never allowed to fail them.
    """
    if not isinstance(raw, (bytes, str)):
        return "no 'event' field"
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(event, dict):
        return f"a JSON {type(event).__name__}, not an object"
    if _depth(event) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    ids = event.get("ids", [])
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        return "'ids' is not a list of strings"
    keys = event.get("keys")
    if keys is not None and not (isinstance(keys, list) and len(keys) == len(ids) and all(
            k is None or isinstance(k, dict) for k in keys)):
        return "'keys' is not a list of objects, one per id"
    for name in _TEXT_FIELDS:
        if event.get(name) is not None and not isinstance(event[name], str):
            return f"{name!r} is not a string"
    return event


def _depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (iteratively: no recursion to exhaust)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                todo.extend((v, level + 1) for v in item)
    return deepest


class Tail:
    """Iterates (stream id, event) after id `start`; `skipped` counts entries that are not
    well-formed events (see `parse_event`)."""

    def __init__(self, client: redis.Redis, stream: str = STREAM, start: str = "$",
                 block_ms: int = 5000, count: int | None = None,
                 stop: Callable[[], bool] | None = None) -> None:
        self.client, self.stream, self.start = client, stream, start
        self.block_ms, self.count, self.stop = block_ms, count, stop
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        client, stream, last = self.client, self.stream, self.start
        if last == "$":
            newest = client.xrevrange(stream, count=1)
            last = _text(newest[0][0]) if newest else "0-0"
        seen, count, stop = 0, self.count, self.stop
        while (count is None or seen < count) and not (stop and stop()):
            reply = client.xread({stream: last}, count=100, block=self.block_ms)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    event = parse_event(fields.get("event", fields.get(b"event")))
                    if isinstance(event, str):
                        self.skipped += 1
                        log.warning("skipped stream entry %s of %s: %s", last, stream, event)
                        continue
                    yield last, event
                    seen += 1
                    if count is not None and seen >= count:
                        return


def tail(client: redis.Redis, stream: str = STREAM, start: str = "$", block_ms: int = 5000,
         count: int | None = None, stop: Callable[[], bool] | None = None) -> Tail:
    """Events from `stream` after id `start` ("0": the kept history; "$": new ones only).

    Yields (stream id, event); pass the last id back to resume without a gap. "$" is
    pinned to the newest id once, so nothing between two reads is missed. Runs until
    `count` events, or until `stop()` is true (checked every `block_ms`). Entries that
    are not well-formed events are skipped and counted in the result's `skipped`.
    """
    return Tail(client, stream, start, block_ms, count, stop)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
