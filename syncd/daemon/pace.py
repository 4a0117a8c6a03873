"""When the follow loop's next step may start: at once while commits come one by one,
coalesced under load.

A fixed minimum step (`min_step_seconds`, 50 ms) kept syncd's reads of metadata.db
and its MongoDB writes to about 20 a second however fast the legacy scripts
commit, but it was also most of the commit -> visible latency at a training
script's pace (p50 28 ms, p99 54 ms at 50 commits/s). So the pacer counts the
commit events (one per commit in rollback-journal mode) over the last
`WINDOW_SECONDS`: below `busy_commits_per_second` each commit is applied at once; above it
(several writers at full speed) steps start `min_step_seconds` apart as before, so
syncd's read transactions and CPU beside busy writers stay what they were.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 0.25


class Pacer:
    """Commit events in, the wait before the next step out. `note` runs on the file
    watcher's thread, `delay` and `stepped` on the loop's."""

    def __init__(self, min_step_seconds: float, busy_commits_per_second: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_step, self.busy_rate, self.clock = min_step_seconds, busy_commits_per_second, clock
        self._events: deque[float] = deque()
        self._lock = threading.Lock()
        self.last_step = float("-inf")

    def note(self) -> None:
        """One commit event (file watcher thread)."""
        now = self.clock()
        with self._lock:
            self._events.append(now)
            self._forget(now)

    def rate(self) -> float:
        """Commit events per second over the last WINDOW_SECONDS."""
        now = self.clock()
        with self._lock:
            self._forget(now)
            return len(self._events) / WINDOW_SECONDS

    def _forget(self, now: float) -> None:
        """Drop the events older than the window (the caller holds the lock)."""
        while self._events and self._events[0] < now - WINDOW_SECONDS:
            self._events.popleft()

    def busy(self) -> bool:
        return self.busy_rate <= 0 or self.rate() > self.busy_rate

    def delay(self) -> float:
        """Seconds to wait before a step woken by a commit: none unless busy."""
        if not self.busy():
            return 0.0
        return max(0.0, self.last_step + self.min_step - self.clock())

    def stepped(self, at: float) -> None:
        self.last_step = at
