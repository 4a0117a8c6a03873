"""A cancellation token: how a stop request reaches long work without callbacks.

The daemon's loop checks it between steps; long work (a backfill, a reconcile)
checks it at each chunk, where it renews its lease, and ends there with
`Cancelled`: the checkpoint is safe at a chunk boundary.
"""

from __future__ import annotations

import threading

from syncd.errors import SyncdError


class Cancelled(SyncdError):
    """Long work ended early because a stop was requested (the checkpoint is safe)."""

    exit_code = 0


class CancelToken:
    """Set once by whoever asks for the stop (a signal handler, a fatal error)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds, waking at once when the stop is requested."""
        return self._event.wait(timeout)
