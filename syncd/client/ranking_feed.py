"""A Ranking of the experiments kept up to date by following the collection's change stream.

A thread of its own reads the runs once (one projected pass, syncd.client.ranking)
as soon as it starts, before any page is asked for. A page asked for while that read
is going on waits for it (at most READ_WAIT seconds): the read is one pass over the
runs, while the server's path is several (a count, the sorted find, the filters'
distinct values) that would also slow the read down. Whenever the order is not known
to be current, `page` answers None and the caller asks the server (the sorted,
skipped query). Once read, the thread applies the stream's changes every
POLL_SECONDS; a page applies what is still pending itself before it answers, so a
change acknowledged before the page was asked for is on it. The stream is opened
before the read, so nothing that happens during the read is missed (a change
applied twice is harmless: each event carries the run's current fields).

Re-read from scratch when the stream breaks or ends (a drop, a rename: `invalidate`),
or when more than REBUILD_EVENTS changes are pending (a bulk update: one pass is
then cheaper than looking up each run), at most once every REREAD_SECONDS: under a
steady flood of writes (a backfill) the thread keeps applying them instead, and
pages take the server's path until it has caught up. Where the server has no change
streams (a standalone mongod) the list stays on the server's path, retried every
RETRY_SECONDS.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from syncd.client.ranking import FIELDS, Ranking
from syncd.redact import scrub

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often the thread applies the stream's changes
AWAIT_MS = 1  # a read of the stream waits this long for a change that is not there
REQUEST_EVENTS = 500  # a page applies at most this many pending changes itself
REBUILD_EVENTS = 3_000  # more pending than this: read the runs again
RETRY_SECONDS = 30.0  # after the stream or the read failed
REREAD_SECONDS = 30.0  # a bulk change reads the runs again at most this often
LOCK_WAIT = 0.1  # a page waits at most this long for the thread to finish applying
READ_WAIT = 5.0  # a page waits at most this long for a read of the runs going on
# Only what the order needs travels with each change.
PIPELINE = [{"$project": {"operationType": 1, "documentKey": 1,
                          **{f"fullDocument.{f}": 1 for f in FIELDS}}}]
DONE, MORE, BROKEN = "done", "more", "broken"


class LiveRanking:
    """The experiments list's order for `coll`, following its changes on a thread."""

    def __init__(self, coll: Collection, poll: float = POLL_SECONDS) -> None:
        self.coll = coll
        self.poll = poll
        self.state = "not started"  # "reading", "catching up", "ready", or why not used
        self.read_seconds: float | None = None  # how long the last full read took
        self._read_at = 0.0  # when the last full read began (monotonic)
        self._ranking: Ranking | None = None
        self._stream: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._settled = threading.Event()  # no read of the runs going on
        self._settled.set()
        self._thread: threading.Thread | None = None

    def start(self) -> LiveRanking:
        """Start reading (again: nothing) the order on its thread."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._settled.clear()
                self._thread = threading.Thread(target=self._run, name="experiments-order",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._settled.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self._reset()

    def page(self, match: Mapping[str, Any], offset: int,
             limit: int) -> tuple[list[Any], int, dict[str, list[Any]]] | None:
        """One page's `_id`s, how many match, and the filters' choices; None when the
        order is not known to be current (the caller asks the server). The first page
        starts the thread if nobody did."""
        if self._thread is None:
            self.start()
        self._settled.wait(READ_WAIT)
        if not self._lock.acquire(timeout=LOCK_WAIT):
            return None
        try:
            if self._ranking is None:
                return None
            drained = self._drain(REQUEST_EVENTS)
            if drained != DONE:
                self._wake.set()  # the thread goes on (or reads again)
                return None
            found = self._ranking.page(match, offset, limit)
            return None if found is None else (*found, self._ranking.choices())
        finally:
            self._lock.release()

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._ranking is None:
                self._settled.clear()
                try:
                    self._read()
                except Exception as exc:  # the server's path serves meanwhile
                    self._settled.set()
                    self.state = f"server-sorted: {scrub(str(exc))[:200]}"
                    log.log(logging.INFO if isinstance(exc, PyMongoError) else logging.ERROR,
                            "the experiments list is sorted by the server (%s); trying its "
                            "own order again in %.0f s", self.state, RETRY_SECONDS)
                    self._stop.wait(RETRY_SECONDS)
                    continue
            else:
                with self._lock:
                    drained = self._drain(REBUILD_EVENTS) if self._ranking is not None else DONE
                    if drained == DONE and self._ranking is not None:
                        self.state = "ready"
                    elif drained == MORE:
                        if time.monotonic() - self._read_at > REREAD_SECONDS:
                            self._reset()  # a bulk change: one pass is cheaper
                        continue  # else apply the rest at once
            self._wake.wait(self.poll)
            self._wake.clear()

    def _read(self) -> None:
        """Open the stream, then read every run, then apply what changed meanwhile."""
        self.state = "reading"
        stream = self.coll.watch(PIPELINE, full_document="updateLookup",
                                 max_await_time_ms=AWAIT_MS)
        try:
            began, self._read_at = time.perf_counter(), time.monotonic()
            ranking = Ranking.read(self.coll)
        except BaseException:
            stream.close()
            raise
        with self._lock:
            self._stream, self._ranking = stream, ranking
            self.read_seconds = time.perf_counter() - began
            log.debug("experiments list: %d runs ordered in %.3f s", len(ranking),
                      self.read_seconds)
            drained = self._drain(REBUILD_EVENTS)
            if drained != BROKEN:  # MORE: the thread applies the rest next
                self.state = "ready" if drained == DONE else "catching up"
                self._settled.set()

    def _drain(self, most: int) -> str:
        """Apply up to `most` pending changes (the lock held): DONE when none is left."""
        ranking = self._ranking
        assert ranking is not None
        try:
            for _ in range(most):
                event = self._stream.try_next()
                if event is None:
                    return DONE
                kind = event.get("operationType")
                if kind in ("insert", "replace", "update"):
                    doc = event.get("fullDocument")
                    if doc and "_id" in doc:
                        ranking.put(doc)
                    else:  # looked up after it was deleted: its delete comes next
                        ranking.remove(event["documentKey"]["_id"])
                elif kind == "delete":
                    ranking.remove(event["documentKey"]["_id"])
                else:  # drop, rename, dropDatabase, invalidate: the stream has ended
                    self._reset()
                    return BROKEN
        except PyMongoError as exc:
            log.info("experiments list: change stream lost (%s); reading the runs again",
                     scrub(str(exc))[:200])
            self._reset()
            return BROKEN
        return MORE

    def _reset(self) -> None:
        """Forget the order (the lock held): the thread reads the runs again."""
        if self._stream is not None:
            with contextlib.suppress(PyMongoError):
                self._stream.close()
        self._stream, self._ranking = None, None
        if not self._stop.is_set():
            self.state = "reading"
            self._settled.clear()
        self._wake.set()
