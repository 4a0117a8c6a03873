"""What the HTTP routes know about the targets, refreshed on a thread of its own.

A ping of a MongoDB that just died waits for the client's server-selection timeout;
a scrape or a readiness probe must not. So one background thread pings MongoDB and
Redis about once a second and reads the few target-side numbers the metrics need
(quarantined rows, the HDF5 files' states); routes only read its last result.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from syncd.connect.reasons import mongo_reason
from syncd.http.context import HttpContext

log = logging.getLogger(__name__)


@dataclass
class TargetView:
    """The last probe: reachability, and numbers read from the targets when they were up."""

    mongo_up: bool | None = None  # None: not probed yet
    mongo_error: str | None = None
    redis_up: bool | None = None
    quarantined: int | None = None
    hdf5: dict[str, Any] | None = None
    at: float = field(default_factory=time.monotonic)


class Prober:
    """Pings the targets every `interval` seconds until stopped."""

    def __init__(self, ctx: HttpContext, interval: float = 1.0) -> None:
        self.ctx, self.interval = ctx, interval
        self.view = TargetView()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="http-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ctx.mongo_timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.view = self.probe()
            except Exception as exc:  # never let the probe die: routes would go stale
                log.debug("target probe failed: %s", exc)
            self._stop.wait(self.interval)

    def probe(self) -> TargetView:
        """One round: MongoDB first (the numbers need it), then Redis."""
        from syncd.checkpoint.store import StateStore

        view = TargetView(quarantined=self.view.quarantined, hdf5=self.view.hdf5)
        try:
            self.ctx.db.client.admin.command("ping")
            view.mongo_up = True
            view.quarantined = StateStore(self.ctx.db).quarantine_count()
            view.hdf5 = self._hdf5()
        except Exception as exc:
            view.mongo_up = False
            view.mongo_error = mongo_reason(exc)  # one line; the daemon logs the rest
        if self.ctx.redis is not None:
            try:
                view.redis_up = bool(self.ctx.redis.ping())
            except Exception:
                view.redis_up = False
        return view

    def _hdf5(self) -> dict[str, Any] | None:
        from syncd.hdf5.files import HDF5_FILES
        from syncd.hdf5.status import hdf5_status

        if HDF5_FILES not in self.ctx.db.list_collection_names():
            return None
        with contextlib.suppress(Exception):
            return hdf5_status(self.ctx.db, self.ctx.redis, limit=0)
        return None
