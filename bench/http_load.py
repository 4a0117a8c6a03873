"""The HTTP load of bench/sync.py --http-load: what monitoring and dashboards put on syncd.

10 Prometheus scrapes a second of /metrics, plus 5 dashboard clients following one
experiment's live curve: the server-sent events at /api/experiments/1/events (what an
open experiment page reads). Where the server has no dashboard, each client polls
/metrics once a second instead, and `followed` says so.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def wait_url(state: Path, timeout: float = 60.0) -> str:
    """The daemon's HTTP address from its local status (it listens on port 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = json.loads((state / "daemon.json").read_text()).get("http")
            if url:
                return url
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"no HTTP address in {state / 'daemon.json'}")


EVENTS = "/api/experiments/1/events"  # run_id 1: the bench database always has it


class HttpLoad:
    """Scrapers and followers on threads; `stop()` returns what they did."""

    def __init__(self, url: str, scrapes_per_second: float = 10.0, clients: int = 5) -> None:
        self.url, self.stop_event = url, threading.Event()
        self.scrapes = self.errors = self.events_bytes = 0
        self.scrape_times: list[float] = []
        self.kinds: collections.Counter[str] = collections.Counter()  # what the errors were
        self.followed = EVENTS if self._has_events() else "/metrics (no dashboard here)"
        self.threads = [threading.Thread(target=self._scrape, args=(scrapes_per_second,),
                                         daemon=True)]
        self.threads += [threading.Thread(target=self._follow, daemon=True)
                         for _ in range(clients)]
        self._lock = threading.Lock()

    def _has_events(self) -> bool:
        try:  # the dashboard's JSON twin of the page whose events the clients follow
            with urllib.request.urlopen(self.url + "/api/experiments/1", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> HttpLoad:
        for thread in self.threads:
            thread.start()
        return self

    def _get(self, path: str) -> float:
        start = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            response.read()
        return time.perf_counter() - start

    def _scrape(self, rate: float) -> None:
        gap = 1.0 / rate
        due = time.monotonic()
        while not self.stop_event.is_set():
            try:
                took = self._get("/metrics")
                with self._lock:
                    self.scrapes += 1
                    self.scrape_times.append(took)
            except (urllib.error.URLError, OSError) as exc:
                self._failed("/metrics", exc)
            due += gap
            self.stop_event.wait(max(0.0, due - time.monotonic()))

    def _follow(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.followed == EVENTS:
                    with urllib.request.urlopen(self.url + EVENTS, timeout=5) as stream:
                        while not self.stop_event.is_set():
                            chunk = stream.read1(65536)  # type: ignore[attr-defined]
                            if not chunk:
                                break
                            with self._lock:
                                self.events_bytes += len(chunk)
                else:
                    self._get("/metrics")
                    self.stop_event.wait(1.0)
            except (urllib.error.URLError, OSError) as exc:
                if not self.stop_event.is_set():
                    self._failed("events" if self.followed == EVENTS else "/metrics", exc)
                self.stop_event.wait(0.5)

    def _failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.kinds[f"{what}: {type(exc).__name__} {str(exc)[:60]}"] += 1

    def stop(self) -> dict[str, object]:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)
        times = sorted(self.scrape_times)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else float("nan")
        return {"scrapes": self.scrapes, "errors": self.errors, "followed": self.followed,
                "scrape_p99": p99,
                "error_kinds": "; ".join(f"{n}x {k}" for k, n in self.kinds.most_common(3))}
