"""Connection resets of the MongoDB target, counted for the daemon.

A server that was killed and restarted may have lost writes it acknowledged
(SecantusDB without `--sync-on-commit`, a mongod with an unjournaled write
concern). pymongo hides a quick restart: a retryable write simply succeeds on the
new server. What it cannot hide is that the connection pool was cleared, so
`syncd run` counts those events and, when the count moves, reconciles what it
wrote since its last reconcile before trusting its checkpoint again.
"""

from __future__ import annotations

import threading

from pymongo import monitoring


class PoolResets(monitoring.ConnectionPoolListener):
    """Counts `pool_cleared` events (network errors, a restarted or replaced server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        with self._lock:
            self._count += 1

    # The listener interface requires every callback; only `pool_cleared` matters here.
    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None: ...
    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None: ...
    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None: ...
    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None: ...
    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None: ...
    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None: ...
    def connection_check_out_started(
            self, event: monitoring.ConnectionCheckOutStartedEvent) -> None: ...
    def connection_check_out_failed(
            self, event: monitoring.ConnectionCheckOutFailedEvent) -> None: ...
    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None: ...
    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None: ...


# Every client syncd opens on the target reports here (syncd.connect.mongo.connect).
RESETS = PoolResets()
