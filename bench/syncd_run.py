"""`syncd run` under test, as a bench sees it: the target server, a real `syncd run`
subprocess with its own config and state, and a change stream that stamps when each
document shows up in MongoDB (bench/sync.py, bench/fleet.py, bench/hostile_values.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, say, syncd_cli
from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture
from syncd.engine.backfill import encode_position

SOURCE_ID = "bench"
TIMEZONE = "UTC"


class Target:
    """The MongoDB the daemons write to; what each part needs besides its own files."""

    def __init__(self, url: str, client: Any, embedded: bool, mongo_pid: int | None,
                 overrides: dict[str, Any]) -> None:
        self.url, self.client, self.embedded = url, client, embedded
        self.mongo_pid, self.overrides = mongo_pid, overrides

    def drop(self, database: str) -> None:
        """Drop a bench database on a server given by --mongo-url. The embedded server's
        data goes with the temporary folder (dropping a large collection on SecantusDB
        takes minutes)."""
        if not self.embedded:
            self.client.drop_database(database)

    def daemon_options(self, capture: str) -> dict[str, Any]:
        return {"capture": capture, **self.overrides}


class SyncdRun:
    """One `syncd run` subprocess with its own config, state directory and log."""

    def __init__(self, work: Path, name: str, sqlite: Path, url: str, database: str,
                 daemon: dict[str, Any], http: bool = False, source_id: str = SOURCE_ID) -> None:
        self.sqlite, self.url, self.database = sqlite, url, database
        self.source_id = source_id
        self.mode = daemon.get("capture", "triggers")
        self.config = work / f"{name}.toml"
        self.state = work / f"{name}-state"
        self.log = work / f"{name}.log"
        lines = ["[daemon]"] + [f"{k} = {json.dumps(v)}" for k, v in daemon.items()]
        # The HTTP server on a free port (--http-load phases), else off.
        lines += ["[http]", f"listen = {json.dumps('127.0.0.1:0' if http else '')}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        cmd = [sys.executable, "-m", "syncd", "run", "--sqlite", str(self.sqlite),
               "--mongo-url", self.url, "--database", self.database,
               "--config", str(self.config), "--state-dir", str(self.state),
               "--source-id", self.source_id, "--timezone", TIMEZONE]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.started = time.monotonic()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, db: Any, timeout: float) -> float:
        """Seconds from start until the daemon doc says ready (this pid)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        state = db["_syncd_state"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"syncd run exited ({self.proc.returncode}):\n{self.tail()}")
            doc = state.find_one({"_id": f"daemon:{self.source_id}"}, {"pid": 1, "ready": 1})
            if doc and doc.get("pid") == self.proc.pid and doc.get("ready"):
                return time.monotonic() - self.started
            time.sleep(0.05)
        self.stop()
        sys.exit(f"syncd run was not ready within {timeout:.0f} s:\n{self.tail()}")

    def wait_caught_up(self, db: Any, timeout: float = 120.0) -> float:
        """Seconds until the daemon's checkpoint covers every row committed so far: the
        change log's last entry (triggers), each table's last rowid or key (scan)."""
        started = time.monotonic()
        if self.mode == "triggers":
            capture = Capture(self.sqlite)
            try:
                last = capture.last_seq()
            finally:
                capture.close()

            def done() -> bool:
                doc = db["_syncd_state"].find_one({"kind": "capture"}) or {}
                return int(doc.get("seq", -1)) >= last
        else:
            source = SQLiteSource(self.sqlite)
            try:
                marks = {name: encode_position(source.high_water(info))
                         for name, info in source.schema().tables.items()}
            finally:
                source.close()

            def done() -> bool:
                doc = db["_syncd_state"].find_one({"kind": "scan"}) or {}
                hwm = {t: p for t, p in doc.get("hwm", [])}
                return all(mark is None or hwm.get(t) == mark for t, mark in marks.items())
        while time.monotonic() - started < timeout:
            if done():
                return time.monotonic() - started
            time.sleep(0.02)
        return float("nan")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code, self.proc = self.proc.returncode, None
        if code != 0:
            say(f"  warning: syncd run exited with {code}:\n{self.tail(10)}")
        return code

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class Watcher(threading.Thread):
    """Stamps every document a change stream on `coll` reports: _id -> [(time, doc)]."""

    def __init__(self, coll: Any) -> None:
        super().__init__(daemon=True)
        self.coll = coll
        self.events: dict[Any, list[tuple[float, dict[str, Any] | None]]] = {}
        self.ready = threading.Event()
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            with self.coll.watch(full_document="updateLookup", max_await_time_ms=100) as stream:
                self.ready.set()
                while not self.halt.is_set():
                    change = stream.try_next()
                    if change is None:
                        continue
                    now = time.time()
                    key = (change.get("documentKey") or {}).get("_id")
                    with self.lock:
                        self.events.setdefault(key, []).append((now, change.get("fullDocument")))
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self.ready.set()

    def first_seen(self, key: Any, test: Any = None) -> float | None:
        with self.lock:
            for at, doc in self.events.get(key, ()):
                if test is None or (doc is not None and test(doc)):
                    return at
        return None

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def start_watcher(coll: Any) -> Watcher:
    watcher = Watcher(coll)
    watcher.start()
    watcher.ready.wait(30)
    if watcher.error is not None:
        sys.exit(f"cannot open a change stream on {coll.full_name}: {watcher.error}\n"
                 "(this bench needs change streams: a replica set, or SecantusDB)")
    return watcher


def observer_floor(target: Target, samples: int = 50) -> list[float]:
    """The change stream's own delay, at most: time.time() before a write is sent -> seen."""
    coll = target.client["bench_probe"]["probe"]
    coll.drop()
    watcher = start_watcher(coll)
    sent: dict[int, float] = {}
    for i in range(samples):
        sent[i] = time.time()
        coll.replace_one({"_id": i}, {"_id": i, "v": i}, upsert=True)
        time.sleep(0.02)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(watcher.first_seen(i) is None for i in sent):
        time.sleep(0.02)
    watcher.stop()
    coll.drop()
    return [seen - at for i, at in sent.items() if (seen := watcher.first_seen(i)) is not None]


def capture_cli(action: str, legacy: Path) -> None:
    done = syncd_cli("-q", "capture", action, "--sqlite", str(legacy))
    if done.returncode != 0:
        sys.exit(f"syncd capture {action} failed:\n{done.stderr}")
