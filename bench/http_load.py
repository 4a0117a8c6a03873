"""HTTP load on syncd: `HttpLoad` for bench/sync.py --http-load, and, run as a script,
the probes' bench of issue 20 (item 4).

`HttpLoad`: 10 Prometheus scrapes a second of /metrics, plus 5 dashboard clients
following one experiment's live curve: the server-sent events at
/api/experiments/1/events (what an open experiment page reads). Where the server has
no dashboard, each client polls /metrics once a second instead, and `followed` says so.

As a script: one `syncd run` (embedded SecantusDB and Redis, a small EEG2025-shaped
metadata.db, `[http] max_streams` raised to --streams so that all of them are really
open) and, in this process, a legacy writer committing one epoch row every 0.1 s.
Three phases of --seconds each, all on loopback: idle, loaded (--streams open live
streams and --half half-sent requests, each re-opened when the server cuts it off, as
a slowloris does), idle again. Per phase: /healthz latency (a new connection per
probe, every 25 ms) p50/p99, /metrics p99, and commit -> visible in MongoDB p50/p99
(a change stream stamps each epoch document). The RESULT lines give loaded / idle
ratios from the same run (goal: /healthz p99 < 100 ms loaded; lag unchanged). It
stops by itself: every wait has a deadline, and the work folder is removed.

    python -m bench.http_load [--streams 500] [--half 1000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import resource
import selectors
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import describe, pct, result, timed_get
from bench.syncd_run import SOURCE_ID, SyncdRun, start_watcher
from syncd.connect.mongo import connect
from syncd.embedded import EmbeddedMongo
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025


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
                    # (a quiet stream sends a keep-alive comment every 15 s)
                    with urllib.request.urlopen(self.url + EVENTS, timeout=30) as stream:
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


# -- the probes' bench (run as a script) -----------------------------------------------------


class Crowd:
    """Open live streams and half-sent requests, drained and kept at their number: a
    socket the server closes is opened again (what a slowloris does). It runs in a
    process of its own (`crowd`), so that its work never delays this process' probes."""

    HALF = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

    def __init__(self, port: int, streams: int, half: int) -> None:
        self.port, self.selector = port, selectors.DefaultSelector()
        self.halt = threading.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + 120
        for _ in range(streams):
            if time.monotonic() > deadline:
                break
            sock = self._connect(f"GET {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            sock.settimeout(10)
            try:
                first = sock.recv(65536)
            except TimeoutError:
                first = b"(no answer within 10 s)"
            self.counts["stream refused" if b" 503 " in first.split(b"\r\n")[0]
                        else "stream open" if first.startswith(b"HTTP/1.1 200")
                        else "stream without an answer"] += 1
            self._watch(sock, "stream")
        for _ in range(half):
            self._watch(self._connect(self.HALF), "half")
            self.counts["half-sent opened"] += 1

    def _connect(self, data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(data)
        return sock

    def _watch(self, sock: socket.socket, kind: str) -> None:
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, kind)

    def run(self, stop: Any) -> None:
        while not self.halt.is_set():
            if stop.poll():
                self.halt.set()
            for key, _ in self.selector.select(0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    if b"unavailable" in data:  # why a stream ended, to print
                        self.counts[data.split(b"data: ")[-1][:120].decode(errors="replace")
                                    .strip()] += 1
                    continue
                self.selector.unregister(sock)
                sock.close()
                self.counts[f"{key.data} closed by the server"] += 1
                if key.data == "half" and not self.halt.is_set():
                    try:
                        self._watch(self._connect(self.HALF), "half")
                    except OSError:
                        self.counts["half-sent reopen failed"] += 1

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def crowd(port: int, streams: int, half: int, pipe: Any) -> None:
    """The child process: open the crowd, report, keep it up until told, report again."""
    group = Crowd(port, streams, half)
    pipe.send(dict(group.counts))
    group.run(pipe)
    pipe.send(dict(group.counts))
    group.close()


def start_crowd(port: int, streams: int, half: int) -> tuple[Any, Any]:
    """(process, pipe) of a running crowd, once it is all open."""
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=crowd, daemon=True,
                                                       args=(port, streams, half, theirs))
    proc.start()
    if not ours.poll(180):
        proc.kill()
        sys.exit("the crowd of streams and half-sent requests did not open within 180 s")
    print(f"  load: {ours.recv()}", flush=True)
    return proc, ours


def stop_crowd(proc: Any, pipe: Any) -> dict[str, int]:
    pipe.send("stop")
    counts = pipe.recv() if pipe.poll(30) else {"no report": 1}
    proc.join(10)
    if proc.is_alive():
        proc.kill()
    return counts


def probe(url: str, seconds: float) -> tuple[list[float], list[float], int]:
    """(/healthz times, /metrics times, failures): a probe every 25 ms for `seconds`."""
    healthz, metrics, failures, n = [], [], 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            healthz.append(timed_get(url + "/healthz", 30))
            if n % 5 == 0:
                metrics.append(timed_get(url + "/metrics", 30))
        except (urllib.error.URLError, OSError):
            failures += 1
        n += 1
        time.sleep(0.025)
    return healthz, metrics, failures


def phase(name: str, url: str, seconds: float, legacy: Path, db: Any) -> dict[str, Any]:
    """Probes for `seconds`: the first half with no commits (the live streams wait out
    their reads), the second with the legacy writer (the streams forward its events)
    and its commit -> visible lag."""


    quiet, quiet_metrics, quiet_failed = probe(url, seconds / 2)
    watcher = start_watcher(db["epochs"])
    commits: list[tuple[int, float]] = []
    halt = threading.Event()

    def write() -> None:  # the legacy pattern (bench/sync.py's legacy_write), keeping the rowid
        epoch = 1000 + int(time.time() * 10) % 1_000_000
        while not halt.is_set():
            conn = sqlite3.connect(legacy)
            try:
                cur = conn.execute("INSERT INTO epoch_history (run_id, epoch, train_loss, "
                                   "val_loss) VALUES (1, ?, 0.5, 0.6)", (epoch,))
                conn.commit()
                commits.append((int(cur.lastrowid or 0), time.time()))
            finally:
                conn.close()
            epoch += 1
            halt.wait(0.1)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    busy, busy_metrics, busy_failed = probe(url, seconds / 2)
    halt.set()
    writer.join(5)
    ids = {rowid: derive_id(SOURCE_ID, "epoch_history", (rowid,)) for rowid, _ in commits}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(watcher.first_seen(ids[r]) is None
                                              for r, _ in commits[-5:]):
        time.sleep(0.05)
    watcher.stop()
    lag = [seen - at for rowid, at in commits
           if (seen := watcher.first_seen(ids[rowid])) is not None]
    healthz, metrics = quiet + busy, quiet_metrics + busy_metrics
    out = {"name": name, "healthz_p50": pct(healthz, 50), "healthz_p99": pct(healthz, 99),
           "metrics_p99": pct(metrics, 99), "lag_p50": pct(lag, 50), "lag_p99": pct(lag, 99)}
    for part, times, failed in (("no commits", quiet, quiet_failed),
                                ("commits", busy, busy_failed)):
        print(f"  {name:6s} {part:10s}: /healthz p50 {pct(times, 50) * 1e3:6.1f} ms, p99 "
              f"{pct(times, 99) * 1e3:7.1f} ms, max {max(times, default=0) * 1e3:7.1f} ms "
              f"({len(times)} probes, {failed} failed)", flush=True)
    print(f"  {name:6s} both halves: /metrics p99 {out['metrics_p99'] * 1e3:.1f} ms; commit "
          f"-> visible p50 {out['lag_p50'] * 1e3:.0f} ms, p99 {out['lag_p99'] * 1e3:.0f} ms "
          f"({len(lag)}/{len(commits)} seen)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--half", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.streams + args.half + 500
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-http-"))
    mongo = EmbeddedMongo(work / "mongo-state")
    daemon = None
    try:
        url = mongo.start()
        client = connect(url, 30)
        legacy = work / "metadata.db"
        make_eeg2025(legacy, runs=10)
        db = client["bench_http"]
        daemon = SyncdRun(work, "syncd", legacy, url, "bench_http",
                          {"capture": "triggers", "poll_seconds": 0.1}, http=True)
        from syncd.http.options import DEFAULTS

        if "max_streams" in DEFAULTS:  # (a syncd from before the cap: no such setting)
            daemon.config.write_text(daemon.config.read_text()
                                     + f"max_streams = {max(1, args.streams)}\n")
        daemon.start()
        daemon.wait_ready(db, 120)
        base = wait_url(daemon.state)
        print(f"machine: {describe()}; syncd run at {base} (embedded SecantusDB and Redis)")
        idle = phase("idle", base, args.seconds, legacy, db)
        proc, pipe = start_crowd(int(base.rsplit(":", 1)[1]), args.streams, args.half)
        try:
            loaded = phase("loaded", base, args.seconds, legacy, db)
        finally:
            counts = stop_crowd(proc, pipe)
        print(f"  load at the end: {counts}")
        again = phase("idle", base, args.seconds, legacy, db)
        idle99 = max(idle["healthz_p99"], again["healthz_p99"])
        lag50 = (idle["lag_p50"] + again["lag_p50"]) / 2
        result("/healthz p99 loaded / idle", f"{loaded['healthz_p99'] / idle99:.2f}",
               f"  (loaded {loaded['healthz_p99'] * 1e3:.1f} ms, goal < 100 ms; "
               f"{args.streams} streams + {args.half} half-sent requests)")
        result("/healthz p50 loaded / idle",
               f"{loaded['healthz_p50'] / min(idle['healthz_p50'], again['healthz_p50']):.2f}")
        result("/metrics p99 loaded / idle",
               f"{loaded['metrics_p99'] / max(idle['metrics_p99'], again['metrics_p99']):.2f}")
        result("commit -> visible p50 loaded / idle", f"{loaded['lag_p50'] / lag50:.2f}",
               "  (goal: unchanged, ~1)")
    finally:
        if daemon is not None:
            daemon.stop()
        mongo.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
