"""Sync benchmark: `syncd run` following a legacy metadata.db the legacy scripts keep writing.

Every figure comes from a real `syncd run` subprocess (`python -m syncd run --sqlite
... --mongo-url ... --database ... --config bench.toml`) against the embedded
SecantusDB (as users get it, `--sync-on-commit`) unless --mongo-url, while writer
processes write the legacy database exactly as the legacy scripts do: a new
`sqlite3.connect(DB)` per write (default 5 s busy timeout, rollback journal), one
INSERT or UPDATE, commit, close. Measured, in one run:

  (1) commit -> visible latency: one writer INSERTs one epoch_history row 50 times a
      second for --latency-seconds; a MongoDB change stream on the target collection
      (`epochs`) stamps each document when it shows up. Latency = time.time() when
      seen - time.time() right after the writer's commit (same clock, same host).
      p50/p99 in `triggers` mode (goal: p99 < 250 ms; issue 14: p99 < 20 ms on a
      machine with free cores) and in `scan` mode (for comparison). The change
      stream's own delay is measured first (direct writes to a probe collection)
      and printed as the observer floor.
  (2) coexistence: --writers processes run the legacy cycle (INSERT a training run,
      one epoch_history row per epoch, a model_checkpoints row now and then,
      UPDATE the run at its end; each write its own connection) as fast as they can
      for --writer-seconds, in alternating phases: without syncd (no triggers, no
      daemon), triggers only (`syncd capture install`, no daemon: a control that
      splits the cost between the triggers and the daemon; --no-control skips it),
      with `syncd run` (`triggers` mode), and CPU controls with no syncd and no
      triggers, never touching metadata.db or MongoDB: `cpu`, busy loops using as
      much CPU as syncd and the embedded server used in the phase before, spread
      evenly; `echo` (--controls), the same CPU spent in bursts right after each
      file event of a commit, as syncd spends it; then the same again in reverse
      order, and so on (--rounds; ABBA, so that the file's growth over the run is
      not charged to the later phases), and a last `syncd run` catches up. Each
      write is timed from connect to close, and its COMMIT alone (the journal and
      database fsyncs) is timed too.
      Ratio = p99 with syncd / p99 without, pooled over the phases (goal <= 1.2),
      with a 95% interval from a bootstrap that resamples whole seconds of writes;
      `database is locked` errors in every phase (goal 0). After the last phase
      `syncd verify` must pass. Issue 14's RESULT lines: writer p50 triggers only /
      without (goal <= 1.15: no syncd process runs, so it measures the same on 2
      cores), p50 and p99 with `syncd run` / without (goals <= 1.2 and <= 1.05, on a
      machine with free cores), each with the CPU control beside it.
  (3) a changed row in a big table: a plain table `big(id INTEGER PRIMARY KEY,
      run_id INTEGER, value REAL, note TEXT)` of --big-rows rows beside the EEG2025
      tables; after the daemon's initial backfill (its duration is printed), one
      row is UPDATEd (legacy pattern) --big-updates times and timed until its
      document shows the new value (median and max; goal < 1 s in `triggers`
      mode). Then, with the daemon stopped and one more row changed, one full
      `scan`-mode reconcile of the table (`Backfill.reconcile_table`, what `scan`
      mode runs every reconcile_seconds) is timed in this process.

The load average is printed before and after each part: other work on the same
cores moves every figure, so compare figures from one run only. `--set KEY=VALUE`
passes a `[daemon]` setting to every syncd run (e.g. `--set watch=false`).

    python bench/sync.py [--latency-seconds 20] [--writers 3] [--writer-seconds 10]
                         [--big-rows 1000000] [--only latency,coexist,big]
                         [--set KEY=VALUE] [--mongo-url URL] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from http_load import HttpLoad, wait_url  # noqa: E402  (bench/http_load.py)
from machine import describe  # noqa: E402  (bench/machine.py)

from legacy_adapters.sqlite import SQLiteSource  # noqa: E402
from legacy_adapters.sqlite_capture import Capture  # noqa: E402
from syncd.checkpoint.store import StateStore  # noqa: E402
from syncd.connect.mongo import connect  # noqa: E402
from syncd.daemon.options import DEFAULTS as DAEMON_DEFAULTS  # noqa: E402
from syncd.embedded import EmbeddedMongo  # noqa: E402
from syncd.engine.backfill import Backfill, encode_position  # noqa: E402
from syncd.engine.compare import target_digests  # noqa: E402
from syncd.engine.migration_files import build_model, load_migrations  # noqa: E402
from syncd.progress import Progress  # noqa: E402
from syncd.projection.ids import derive_id  # noqa: E402
from syncd.projection.project import Params  # noqa: E402
from syncd.sample import make_eeg2025  # noqa: E402
from syncd.sinks.mongo import MongoSink  # noqa: E402

SOURCE_ID = "bench"
TIMEZONE = "UTC"
PARTS = ("latency", "coexist", "big")

# A legacy writer, run as its own process: exactly the scripts' pattern, one write per
# connection. Mode "rate": one epoch_history INSERT per tick at `rate` Hz, recording
# (rowid, time.time() right after commit). Mode "cycle": the training-run cycle as
# fast as it can. Every write is timed from connect to close; OperationalErrors are
# counted (`database is locked` separately), never retried.
WRITER = r'''
import json, random, sqlite3, sys, time
cfg = json.loads(sys.argv[1])
path, mode, start_at, end_at = cfg["db"], cfg["mode"], cfg["start_at"], cfg["end_at"]
rng = random.Random(cfg["seed"])
lat, starts, commits, errors = [], [], [], []
commit_lat = []  # the COMMIT alone: the journal and database fsyncs
locked = 0
pace = cfg.get("pace") or 0  # "cycle": writes per second (0: as fast as it can)
due = start_at

def write(sql, params):
    global locked, due
    if pace:
        due += 1.0 / pace
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
    t0 = time.perf_counter()
    began = time.time()
    rowid = committed = None
    try:
        conn = sqlite3.connect(path)  # a new connection per write, default 5 s timeout
        try:
            cur = conn.execute(sql, params)
            t1 = time.perf_counter()
            conn.commit()
            commit_lat.append(time.perf_counter() - t1)
            committed = time.time()
            rowid = cur.lastrowid
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            locked += 1
        if len(errors) < 5:
            errors.append(str(exc))
        return None, None
    lat.append(time.perf_counter() - t0)
    starts.append(began)
    return rowid, committed

def stamp():
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())

EPOCH = ("INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss, learning_rate, "
         "duration_seconds, timestamp) VALUES (?, ?, ?, ?, 0.002, ?, ?)")
while time.time() < start_at:
    time.sleep(0.002)
if mode == "rate":
    run = cfg["run_id"]
    period = 1.0 / cfg["rate"]
    i = 0
    while True:
        due = start_at + i * period
        if due >= end_at:
            break
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        i += 1
        rowid, at = write(EPOCH, (run, i, rng.random(), rng.random(), rng.uniform(1, 9), stamp()))
        if rowid is not None:
            commits.append((rowid, at))
else:
    epochs = cfg["epochs"]
    while time.time() < end_at:
        run, _ = write("INSERT INTO training_runs (challenge, model_name, start_time, status, "
                       "config) VALUES (?, 'EEGNeX_R1R2', ?, 'running', ?)",
                       (rng.choice((1, 2)), stamp(), json.dumps({"batch_size": 32})))
        if run is None:
            continue
        best = None
        for epoch in range(1, epochs + 1):
            if time.time() >= end_at:
                break
            val = rng.random()
            write(EPOCH, (run, epoch, rng.random(), val, rng.uniform(1, 9), stamp()))
            if best is None or val < best:
                best = val
                write("INSERT INTO model_checkpoints (run_id, epoch, val_loss, file_path, "
                      "file_size_mb, timestamp, is_best) VALUES (?, ?, ?, ?, 12.5, ?, 0)",
                      (run, epoch, val, f"checkpoints/run{run}_epoch{epoch}.pth", stamp()))
        write("UPDATE training_runs SET status = 'completed', end_time = ?, best_val_loss = ?, "
              "total_epochs = ? WHERE run_id = ?", (stamp(), best, epochs, run))
with open(cfg["out"], "w") as out:
    json.dump({"lat": lat, "starts": starts, "commits": commits, "locked": locked,
               "errors": errors, "commit_lat": commit_lat}, out)
'''


# The CPU control: busy for `share` of every 10 ms, never touching the legacy database.
BURNER = r'''
import sys, time
share, end_at = float(sys.argv[1]), float(sys.argv[2])
while time.time() < end_at:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.01 * share:
        pass
    time.sleep(0.01 * (1 - share))
'''


# The echo control: wakes on the same file events as syncd (at most every `gap`
# seconds, as syncd's loop does) and burns `share` cores' worth of CPU per wake-up.
ECHO = r'''
import sys, threading, time
from pathlib import Path
from syncd.daemon.wake import Waker
db, share, gap, end_at = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
woke = threading.Event()
waker = Waker([Path(db)], woke)
waker.start()
last = 0.0
while time.time() < end_at:
    if not woke.wait(0.2):
        continue
    rest = last + gap - time.monotonic()
    if rest > 0:
        time.sleep(rest)
    woke.clear()
    last = t = time.monotonic()
    while time.monotonic() - t < share * gap:
        pass
waker.stop()
'''


def start_echo(db_path: Path, share: float, gap: float,
               seconds: float) -> list[subprocess.Popen[bytes]]:
    end_at = time.time() + seconds
    return [subprocess.Popen([sys.executable, "-c", ECHO, str(db_path), str(min(share, 1.0)),
                              str(gap), str(end_at)], cwd=ROOT)]


def start_burners(share: float, seconds: float) -> list[subprocess.Popen[bytes]]:
    """Processes that together use `share` cores (each at most one) for `seconds`."""
    end_at = time.time() + seconds
    procs = []
    while share > 0.005:
        part = min(share, 1.0)
        procs.append(subprocess.Popen([sys.executable, "-c", BURNER, str(part), str(end_at)]))
        share -= part
    return procs


# -- machine and figures ----------------------------------------------------------------




def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, utime + stime in seconds) of every process (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError, ValueError):
                continue
    return out


def cpu_seconds(pid: int | None, children: bool = False) -> float:
    """utime + stime of a process, with `children` also of its live descendants (the
    embedded Redis a `syncd run` starts), 0 if unknown."""
    if pid is None:
        return 0.0
    stats = _proc_stats()
    family, total = {pid}, 0.0
    changed = children
    while changed:
        changed = False
        for other, (parent, _) in stats.items():
            if parent in family and other not in family:
                family.add(other)
                changed = True
    for member in family:
        total += stats.get(member, (0, 0.0))[1]
    return total


def rss_mib() -> float:
    """This process's resident memory (Linux /proc), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def second_blocks(phases: list[dict[str, Any]]) -> list[list[float]]:
    """The phases' write latencies in blocks of the second each write began in.

    Writes close in time share their fate (one slow fsync delays all three writers),
    so resampling single writes would overstate how sure a p99 is; whole seconds
    are resampled instead.
    """
    blocks: list[list[float]] = []
    for phase in phases:
        by_second: dict[int, list[float]] = {}
        for lat, began in zip(phase["lat"], phase["starts"], strict=True):
            by_second.setdefault(int(began), []).append(lat)
        blocks.extend(by_second.values())
    return blocks


def ratio_interval(top: list[list[float]], bottom: list[list[float]], q: float = 99,
                   resamples: int = 400, seed: int = 1) -> tuple[float, float]:
    """A 95 % interval of pct(top, q) / pct(bottom, q) by a block bootstrap."""
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        a = [x for _ in top for x in rng.choice(top)]
        b = [x for _ in bottom for x in rng.choice(bottom)]
        ratios.append(pct(a, q) / pct(b, q))
    return pct(ratios, 2.5), pct(ratios, 97.5)


def slow_share(values: list[float], limit: float = 0.02) -> float:
    """The share of writes slower than `limit` (SQLite's busy handler sleeps 1, 2, 5, 10,
    15, 20 ... ms between tries, so a write that waited once for a lock is slow)."""
    return sum(v > limit for v in values) / len(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the target server ---------------------------------------------------------------


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


# -- the daemon and the writers ----------------------------------------------------------


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


def start_writers(db_path: Path, work: Path, tag: str, n: int, mode: str, seconds: float,
                  **extra: Any) -> tuple[list[subprocess.Popen[bytes]], list[Path], float]:
    start_at = time.time() + 1.0  # every writer starts at the same moment
    procs, outs = [], []
    for i in range(n):
        out = work / f"writer-{tag}-{i}.json"
        cfg = {"db": str(db_path), "mode": mode, "start_at": start_at,
               "end_at": start_at + seconds, "seed": zlib.crc32(f"{tag}-{i}".encode()),
               "out": str(out), **extra}
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(cfg)]))
        outs.append(out)
    return procs, outs, start_at


def finish_writers(procs: list[subprocess.Popen[bytes]], outs: list[Path]) -> list[dict]:
    results = []
    for proc, out in zip(procs, outs):
        if proc.wait(600) != 0:
            sys.exit(f"a legacy writer failed (exit {proc.returncode})")
        results.append(json.loads(out.read_text()))
    return results


def legacy_write(db_path: Path, sql: str, params: tuple[Any, ...]) -> float:
    """One write in the legacy pattern; returns time.time() right after the commit."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(sql, params)
        conn.commit()
        return time.time()
    finally:
        conn.close()


# -- observing MongoDB -----------------------------------------------------------------


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


# -- (1) commit -> visible latency ---------------------------------------------------------


def latency_run(mode: str, args: argparse.Namespace, work: Path,
                target: Target, http: bool = False) -> dict[str, Any]:
    base = work / f"latency-{mode}{'-http' if http else ''}"
    base.mkdir()
    legacy = base / "metadata.db"
    make_eeg2025(legacy, rows=args.rows)
    database = f"bench_latency_{mode}{'_http' if http else ''}"
    target.drop(database)
    db = target.client[database]
    daemon = SyncdRun(base, "syncd", legacy, target.url, database, target.daemon_options(mode),
                      http=http)
    daemon.start()
    ready = daemon.wait_ready(db, args.ready_timeout)
    load_ = HttpLoad(wait_url(daemon.state)).start() if http else None
    watcher = start_watcher(db["epochs"])
    cpu0 = cpu_seconds(daemon.pid, children=True)
    procs, outs, start_at = start_writers(legacy, base, mode, 1, "rate", args.latency_seconds,
                                          rate=args.rate, run_id=1)
    (result,) = finish_writers(procs, outs)
    commits = [(rowid, at) for rowid, at in result["commits"]]
    ids = {rowid: derive_id(SOURCE_ID, "epoch_history", (rowid,)) for rowid, _ in commits}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(watcher.first_seen(ids[r]) is None
                                              for r, _ in commits[-20:]):
        time.sleep(0.05)
    time.sleep(0.5)
    busy = cpu_seconds(daemon.pid, children=True) - cpu0
    watcher.stop()
    http_stats = load_.stop() if load_ is not None else None
    lat = [seen - at for rowid, at in commits
           if (seen := watcher.first_seen(ids[rowid])) is not None]
    daemon.stop()
    target.drop(database)
    elapsed = time.time() - start_at
    return {"mode": mode, "ready": ready, "commits": len(commits), "seen": len(lat), "lat": lat,
            "locked": result["locked"], "errors": result["errors"], "http": http_stats,
            "daemon_cpu": busy / elapsed if elapsed > 0 else float("nan")}


# -- (2) coexistence: commit latency with and without syncd ---------------------------------


def capture_cli(action: str, legacy: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "syncd", "-q", "capture", action, "--sqlite",
                           str(legacy)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"syncd capture {action} failed:\n{done.stderr}")


PHASE_NAMES = {"without": "without syncd", "triggers": "triggers only",
               "with": "with syncd run", "http": "run+HTTP load", "cpu": "CPU control",
               "echo": "echo control"}
CONTROLS = ("triggers", "cpu", "echo")


def phase_kinds(args: argparse.Namespace) -> list[str]:
    """One round's phases. Scan mode installs no triggers: no triggers-only control."""
    controls = args.controls
    if args.coexist_capture == "scan":
        controls = [c for c in controls if c != "triggers"]
    before = ["triggers"] if "triggers" in controls else []
    after = [c for c in ("cpu", "echo") if c in controls]  # they copy the phase before
    loaded = ["http"] if args.http_load else []  # syncd run under the HTTP load
    return ["without", *before, "with", *loaded, *after]


def coexist(args: argparse.Namespace, work: Path, target: Target) -> dict[str, Any]:
    """Phases: without syncd, [triggers installed but no daemon,] with `syncd run`,
    [the CPU control]; then a `syncd run` catches up (if the last phase was not one)
    and `syncd verify` checks the copy."""
    base = work / "coexist"
    base.mkdir()
    legacy = base / "metadata.db"
    make_eeg2025(legacy, rows=args.rows)
    database = "bench_coexist"
    target.drop(database)
    db = target.client[database]
    phases: list[dict[str, Any]] = []
    scan = args.coexist_capture == "scan"  # updates show only at the periodic reconcile
    kinds = phase_kinds(args)
    # Every other round in reverse (ABBA): the legacy file grows and its pages move
    # from phase to phase, and a fixed order would charge that drift to the later
    # phases (the triggers, syncd run). A reversed round's CPU control copies the
    # share of the round before's `syncd run`.
    order = [k for r in range(args.rounds) for k in (kinds if r % 2 == 0 else kinds[::-1])]
    burners: list[subprocess.Popen[bytes]] = []
    share = 0.0  # CPU (cores) syncd and the server used in the last `with` phase
    for n, kind in enumerate(order):
        daemon = None
        if kind == "cpu":
            burners = start_burners(share, args.writer_seconds + 2.0)
        elif kind == "echo":
            gap = target.daemon_options(args.coexist_capture).get(
                "min_step_seconds", DAEMON_DEFAULTS["min_step_seconds"])
            burners = start_echo(legacy, share, gap, args.writer_seconds + 2.0)
        if kind == "triggers":
            capture_cli("install", legacy)
        http_load = None
        if kind in ("with", "http"):
            daemon = SyncdRun(base, f"syncd-{n}", legacy, target.url, database,
                              target.daemon_options(args.coexist_capture), http=kind == "http")
            daemon.start()
            daemon.wait_ready(db, args.ready_timeout)
            if kind == "http":
                http_load = HttpLoad(wait_url(daemon.state)).start()
        cpu_d, cpu_m = (cpu_seconds(daemon.pid if daemon else None, children=True),
                        cpu_seconds(target.mongo_pid))
        before = load()
        procs, outs, start_at = start_writers(legacy, base, str(n), args.writers, "cycle",
                                              args.writer_seconds, epochs=20,
                                              pace=args.writer_rate)
        results = finish_writers(procs, outs)
        elapsed = time.time() - start_at
        for burner in burners:
            burner.wait()
        burners = []
        http_stats = http_load.stop() if http_load is not None else None
        phase = {"kind": kind, "load": before,
                 "lat": [x for r in results for x in r["lat"]],
                 "starts": [x for r in results for x in r["starts"]],
                 "commit": [x for r in results for x in r["commit_lat"]],
                 "locked": sum(r["locked"] for r in results),
                 "errors": [e for r in results for e in r["errors"]],
                 "seconds": elapsed, "http": http_stats}
        if daemon is not None:
            phase["drain"] = daemon.wait_caught_up(db)
            phase["daemon_cpu"] = (cpu_seconds(daemon.pid, children=True) - cpu_d) / elapsed
            phase["mongo_cpu"] = (cpu_seconds(target.mongo_pid) - cpu_m) / elapsed
            share = phase["daemon_cpu"] + phase["mongo_cpu"]
            daemon.stop()
        if kind in ("triggers", "with", "http") and n != len(order) - 1:  # the next starts clean
            capture_cli("uninstall", legacy)
        phases.append(phase)
        lat = phase["lat"]
        say(f"  phase {n + 1} {PHASE_NAMES[kind]:14s}: {len(lat):6,} writes, p50 "
            f"{ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, p99.9 {ms(pct(lat, 99.9))}, max "
            f"{ms(max(lat, default=float('nan')))}, {slow_share(lat):.1%} over 20 ms, "
            f"COMMIT p99 {ms(pct(phase['commit'], 99))}, locked {phase['locked']}"
            + (f", caught up {phase['drain']:.2f} s after the writers stopped"
               if kind in ("with", "http") else "")
            + (f", syncd CPU (with its Redis) {phase['daemon_cpu']:.0%}, server CPU "
               f"{phase['mongo_cpu']:.0%}" if kind in ("with", "http") else "")
            + (f", {http_stats['scrapes']} scrapes (p99 {ms(http_stats['scrape_p99'])}), "
               f"{http_stats['errors']} HTTP errors"
               + (f" ({http_stats['error_kinds']})" if http_stats["errors"] else "")
               + f", clients followed {http_stats['followed']}"
               if http_stats else "")
            + (f", burning {share:.0%} of a core" if kind in ("cpu", "echo") else "")
            + f" (load {before})")
    if order[-1] not in ("with", "http"):  # a control phase last: one more run catches up
        daemon = SyncdRun(base, "syncd-last", legacy, target.url, database,
                          target.daemon_options(args.coexist_capture))
        daemon.start()
        daemon.wait_ready(db, args.ready_timeout)
        daemon.wait_caught_up(db)
        daemon.stop()
    done = subprocess.run([sys.executable, "-m", "syncd", "-q", "verify", "--json", "--sqlite",
                           str(legacy), "--mongo-url", target.url, "--database", database,
                           "--source-id", SOURCE_ID, "--timezone", TIMEZONE],
                          cwd=ROOT, capture_output=True, text=True)
    target.drop(database)
    try:
        totals = json.loads(done.stdout)["totals"]
    except (ValueError, KeyError):
        sys.exit(f"syncd verify failed:\n{(done.stdout + done.stderr)[-2000:]}")
    # Scan mode finds updates only by its periodic reconcile (reconcile_seconds): rows
    # updated after they were first synced differ until then, by design. Lost (missing)
    # or stale extra documents are failures in both modes.
    lost = totals["missing"] + totals["extra"]
    ok = lost == 0 and (scan or totals["different"] == 0)
    return {"phases": phases, "verify": ok, "verify_totals": totals,
            "verify_out": (done.stdout + done.stderr)[-2000:]}


# -- (3) one changed row in a big table ----------------------------------------------------


def make_big(path: Path, rows: int) -> None:
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, run_id INTEGER, value REAL, "
                     "note TEXT)")
        step = 100_000
        for start in range(1, rows + 1, step):
            conn.executemany("INSERT INTO big VALUES (?, ?, ?, ?)", (
                (i, i // 1000, rng.random(), f"window {i} of run {i // 1000}")
                for i in range(start, min(rows, start + step - 1) + 1)))
    conn.close()


def big_table(args: argparse.Namespace, work: Path, target: Target) -> dict[str, Any]:
    base = work / "big"
    base.mkdir()
    legacy = base / "metadata.db"
    counts = make_eeg2025(legacy, rows=args.rows)
    started = time.monotonic()
    make_big(legacy, args.big_rows)
    rows = args.big_rows + sum(counts.values())
    say(f"  legacy db with big: {args.big_rows:,} rows written in "
        f"{time.monotonic() - started:.1f} s")
    database = "bench_big"
    target.drop(database)
    db = target.client[database]
    daemon = SyncdRun(base, "syncd", legacy, target.url, database,
                      target.daemon_options("triggers"))
    daemon.start()
    backfill = daemon.wait_ready(db, args.big_ready_timeout)
    docs = db["big"].estimated_document_count()
    say(f"  initial backfill by syncd run (start to ready): {backfill:.1f} s for {rows:,} "
        f"rows ({rows / backfill:,.0f} rows/s); {docs:,} documents in big")
    watcher = start_watcher(db["big"])
    rng = random.Random(11)
    times: list[float] = []
    for n in range(args.big_updates):
        row = rng.randint(1, args.big_rows)
        value = 1000.0 + n + rng.random()
        key = derive_id(SOURCE_ID, "big", (row,))
        at = legacy_write(legacy, "UPDATE big SET value = ? WHERE id = ?", (value, row))
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            seen = watcher.first_seen(key, lambda d, v=value: d.get("value") == v)
            if seen is not None:
                break
            time.sleep(0.005)
        times.append(seen - at if seen is not None else float("inf"))
        time.sleep(args.big_pause)
    watcher.stop()
    daemon.stop()

    # One full scan-mode reconcile of the table, with one row changed behind its back.
    row = rng.randint(1, args.big_rows)
    legacy_write(legacy, "UPDATE big SET value = ? WHERE id = ?", (-1.0, row))
    source = SQLiteSource(legacy)
    migrations = load_migrations()
    model = build_model(migrations, len(migrations))
    pairs = {info.name: (info, mapping) for info, mapping in model.resolve(source.schema())}
    info, mapping = pairs["big"]
    engine = Backfill(source, db, MongoSink(db), StateStore(db), Params(SOURCE_ID, TIMEZONE),
                    5000, Progress(enabled=False))
    before = load()
    rss = rss_mib()
    began = time.monotonic()
    digests = target_digests(db["big"])  # the reconcile's first step, timed on its own
    digest_seconds = time.monotonic() - began
    digest_mib = rss_mib() - rss
    del digests
    began = time.monotonic()
    report = engine.reconcile_table(info, mapping, model)
    reconcile = time.monotonic() - began
    source.close()
    fixed = db["big"].find_one({"_id": derive_id(SOURCE_ID, "big", (row,))}, {"value": 1})
    target.drop(database)
    return {"backfill": backfill, "times": times, "reconcile": reconcile,
            "reconcile_load": before, "reconciled": report.rows, "written": report.written,
            "digest_seconds": digest_seconds, "digest_mib": digest_mib,
            "fixed": bool(fixed and fixed.get("value") == -1.0)}


# -- main ----------------------------------------------------------------------------------


def cores_note() -> str:
    """Said beside the goals that need cores free of other work (issue 14)."""
    cores = os.cpu_count() or 1
    return "" if cores >= 8 else f"  ({cores} cores here: this figure depends on free cores)"


def coexist_results(pooled: Any, blocks: Any, locked: int, ratio: float,
                    interval: tuple[float, float]) -> list[str]:
    """The writers' RESULT lines: p50 ratios (triggers only, syncd run) and the p99 ratio,
    each with the CPU control (no syncd, that CPU spent beside the writers) beside it."""
    without = pooled("without")

    def p50(kind: str) -> float:
        return pct(pooled(kind), 50) / pct(without, 50) if pooled(kind) else float("nan")

    def span(kind: str, q: float) -> str:
        if not pooled(kind):
            return "n/a"
        low, high = ratio_interval(blocks(kind), blocks("without"), q=q)
        return f"{low:.2f}-{high:.2f}"

    cpu50 = f"CPU control {p50('cpu'):.2f}" if pooled("cpu") else "no CPU control phase"
    cpu99 = (f"CPU control {pct(pooled('cpu'), 99) / pct(without, 99):.2f}" if pooled("cpu")
             else "no CPU control phase")
    out = []
    if pooled("triggers"):
        out.append(f"RESULT writer p50 triggers only / without: {p50('triggers'):.2f} "
                   f"(goal <= 1.15)  95% interval {span('triggers', 50)}; {cpu50}")
    out.append(f"RESULT writer p50 syncd run / without: {p50('with'):.2f} (goal <= 1.2)  "
               f"95% interval {span('with', 50)}; {cpu50}" + cores_note())
    out.append(f"RESULT writer p99 syncd run / without: {ratio:.2f} (goal <= 1.05)  "
               f"95% interval {interval[0]:.2f}-{interval[1]:.2f}; {cpu99}" + cores_note())
    out.append(f"RESULT writer lock errors: {locked} (goal <= 0)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS),
                        help="comma-separated parts to run: latency, coexist, big (default all)")
    parser.add_argument("--rows", type=int, default=10_000,
                        help="rows of the EEG2025-shaped legacy db the writers write (default "
                        "10,000)")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="commits per second of the latency writer (default 50)")
    parser.add_argument("--writers", type=int, default=3,
                        help="writer processes in the coexistence phases (default 3)")
    parser.add_argument("--writer-seconds", type=float, default=10.0,
                        help="length of each coexistence phase (default 10)")
    parser.add_argument("--writer-rate", type=float, default=0.0,
                        help="writes per second of each coexistence writer (default 0: as "
                        "fast as it can, the issue's test)")
    parser.add_argument("--coexist-capture", choices=("triggers", "scan"), default="triggers",
                        help="the daemon's capture mode in the coexistence phases (default "
                        "triggers, the default mode)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of (without, [triggers only,] with, [CPU controls]) "
                        "phases (default 2; every other round in reverse order)")
    parser.add_argument("--controls", default="triggers,cpu",
                        help="control phases, comma-separated (default triggers,cpu): "
                        "triggers (installed, no daemon: their own cost), cpu (busy loops "
                        "using syncd's and the server's CPU share, spread evenly), echo "
                        "(that CPU in bursts right after each commit's file event)")
    parser.add_argument("--no-control", dest="controls", action="store_const", const="",
                        help="no control phases")
    parser.add_argument("--big-rows", type=int, default=1_000_000,
                        help="rows of the big table (default 1,000,000; the initial backfill "
                        "into the embedded server takes minutes)")
    parser.add_argument("--big-updates", type=int, default=7)
    parser.add_argument("--big-pause", type=float, default=1.0,
                        help="seconds between the big-table updates")
    parser.add_argument("--http-load", action="store_true",
                        help="also run syncd with its HTTP server under 10 scrapes/s of "
                        "/metrics and 5 dashboard clients following one experiment's live "
                        "events (bench/http_load.py): a triggers latency run and a phase per "
                        "round beside the plain ones")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--big-ready-timeout", type=float, default=7200.0)
    parser.add_argument("--mongo-url", help="bench against this server instead of the "
                        "embedded SecantusDB (--sync-on-commit); it needs change streams")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a [daemon] setting for every syncd run, as "
                        "a TOML value (repeatable), e.g. --set watch=false --set "
                        "poll_seconds=0.1")
    parser.add_argument("--workdir", type=Path,
                        help="where the legacy databases live (default: the system temp "
                        "dir); its filesystem's fsync cost is part of every commit")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    args.controls = [c.strip() for c in args.controls.split(",") if c.strip()]
    if not set(args.controls) <= set(CONTROLS):
        parser.error(f"--controls: choose from {', '.join(CONTROLS)}")
    if not set(parts) <= set(PARTS):
        parser.error(f"--only: choose from {', '.join(PARTS)}")
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        try:
            overrides.update(tomllib.loads(f"{key.strip()} = {value.strip()}"))
        except tomllib.TOMLDecodeError:
            sep = ""
        if not sep or key.strip() == "capture":
            parser.error(f"--set {item}: expected KEY=VALUE with a TOML value (not capture)")

    work = Path(tempfile.mkdtemp(prefix="syncd-bench-sync-", dir=args.workdir))
    embedded = None
    url = args.mongo_url
    mongo_pid = None
    if url is None:
        embedded = EmbeddedMongo(work / "mongo-state")
        url = embedded.start()
        mongo_pid = embedded.process.pid if embedded.process else None
    client = connect(url, 30)
    target = Target(url, client, embedded is not None, mongo_pid, overrides)
    server = "embedded SecantusDB --sync-on-commit" if embedded else "the given --mongo-url"
    if overrides:
        server += "; [daemon] " + ", ".join(f"{k} = {v!r}" for k, v in overrides.items())
    say(f"machine: {describe()}, "
        f"SQLite {sqlite3.sqlite_version}")
    say(f"server: {server}; legacy dbs under {work} (journal_mode=delete)")
    say(f"load average at start: {load()}")
    figures: list[str] = []
    results: list[str] = []
    try:
        floor = observer_floor(target)
        say(f"observer floor (write sent -> seen on the change stream): p50 "
            f"{ms(pct(floor, 50))}, p99 {ms(pct(floor, 99))}")

        if "latency" in parts:
            say()
            say(f"(1) commit -> visible in MongoDB, one writer at {args.rate:g} commits/s for "
                f"{args.latency_seconds:g} s (load {load()})")
            runs = [("triggers", False), *([("triggers", True)] if args.http_load else []),
                    ("scan", False)]
            for mode, http in runs:
                r = latency_run(mode, args, work, target, http)
                if http:
                    h = r["http"]
                    mode = "trig+HTTP"
                    say(f"  (HTTP load: {h['scrapes']} scrapes, p99 {ms(h['scrape_p99'])}, "
                        f"{h['errors']} errors; clients followed {h['followed']})")
                p50, p99 = pct(r["lat"], 50), pct(r["lat"], 99)
                line = (f"  {mode:8s}: p50 {ms(p50)}, p99 {ms(p99)}, max "
                        f"{ms(max(r['lat'], default=float('nan')))}; {r['seen']}/{r['commits']}"
                        f" seen; writer lock errors {r['locked']}; syncd CPU "
                        f"{r['daemon_cpu']:.0%} (ready {r['ready']:.1f} s; load {load()})")
                say(line)
                if mode == "triggers":
                    figures.append(f"commit->visible p99 (triggers): {ms(p99)}   (goal < 250 ms)"
                                   f"  {verdict(p99 < 0.25 and r['seen'] == r['commits'])}")
                    results.append(f"RESULT commit -> visible p99 ms: {p99 * 1000:.1f} (goal < 20)"
                                   f"  p50 {p50 * 1000:.1f} ms, {r['seen']}/{r['commits']} seen, "
                                   f"observer floor p99 {pct(floor, 99) * 1000:.1f} ms"
                                   + cores_note())
                elif mode == "trig+HTTP":
                    figures.append(f"commit->visible p99 (triggers, HTTP load): {ms(p99)}   "
                                   "(within noise of the line above)")
                else:
                    figures.append(f"commit->visible p99 (scan):     {ms(p99)}   (for comparison)")

        if "coexist" in parts:
            say()
            speed = (f"at {args.writer_rate:g} writes/s each" if args.writer_rate
                     else "as fast as they can")
            say(f"(2) legacy writers: {args.writers} processes, the legacy cycle {speed}, "
                f"{args.writer_seconds:g} s per phase; syncd run in {args.coexist_capture} "
                f"mode (load {load()})")
            r = coexist(args, work, target)
            def pooled(kind: str, phases: list[dict[str, Any]] = r["phases"],
                       key: str = "lat") -> list[float]:
                return [x for p in phases if p["kind"] == kind for x in p[key]]

            without, with_ = pooled("without"), pooled("with")
            base99 = pct(without, 99)
            ratio = pct(with_, 99) / base99

            def blocks(kind: str, phases: list[dict[str, Any]] = r["phases"]) -> list[list[float]]:
                return second_blocks([p for p in phases if p["kind"] == kind])
            locked = sum(p["locked"] for p in r["phases"])
            locked_with = sum(p["locked"] for p in r["phases"] if p["kind"] == "with")
            rounds = []
            size = len(phase_kinds(args))
            for i in range(0, len(r["phases"]), size):
                group = {p["kind"]: p for p in r["phases"][i:i + size]}
                base = pct(group["without"]["lat"], 99)
                controls = ", ".join(f"{PHASE_NAMES[k]} {pct(group[k]['lat'], 99) / base:.2f}"
                                     for k in CONTROLS if k in group)
                rounds.append(f"{pct(group['with']['lat'], 99) / base:.2f}"
                              + (f" ({controls})" if controls else ""))
            intervals: dict[str, tuple[float, float]] = {}
            for kind in ("without", "triggers", "with", "http", "cpu", "echo"):
                lat = pooled(kind)
                if not lat:
                    continue
                low, high = intervals[kind] = ratio_interval(blocks(kind), blocks("without"))
                say(f"  pooled {PHASE_NAMES[kind]:14s}: {len(lat):6,} writes, p50 "
                    f"{ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, {slow_share(lat):.1%} over "
                    f"20 ms; p99 / p99 without = {pct(lat, 99) / base99:.2f}"
                    + (f" (95% interval {low:.2f}-{high:.2f})" if kind != "without" else "")
                    + f", p50 / p50 without = {pct(lat, 50) / pct(without, 50):.2f}"
                    + f", COMMIT p99 {ms(pct(pooled(kind, key='commit'), 99))}")
            say(f"  p99 ratio with/without per round: {', '.join(rounds)}")
            t = r["verify_totals"]
            say(f"  syncd verify after the last phase: {t['missing']} missing, {t['different']} "
                f"different, {t['extra']} extra"
                + (" (scan mode: updated rows differ until the periodic reconcile)"
                   if args.coexist_capture == "scan" and t["different"] else ""))
            low, high = intervals["with"]
            figures.append(f"writer commit p99 with/without syncd ({args.coexist_capture}): "
                           f"{ratio:.2f}, 95% interval {low:.2f}-{high:.2f}   (goal <= 1.2)  "
                           f"{verdict(ratio <= 1.2)}")
            if args.http_load:
                loaded = pct(pooled("http"), 99) / base99
                low, high = intervals["http"]
                figures.append(f"writer commit p99 with syncd + HTTP load/without syncd: "
                               f"{loaded:.2f}, 95% interval {low:.2f}-{high:.2f}   (within "
                               f"noise of {ratio:.2f} above)")
            results.extend(coexist_results(pooled, blocks, locked, ratio, intervals["with"]))
            figures.append(f"lock errors (all phases / with syncd): {locked} / {locked_with}   "
                           f"(goal 0)  {verdict(locked == 0)}")
            figures.append(f"syncd verify after the writers: {t['missing']} missing, "
                           f"{t['different']} different, {t['extra']} extra  "
                           f"{verdict(r['verify'])}")

        if "big" in parts:
            say()
            say(f"(3) one changed row in a {args.big_rows:,}-row table (load {load()})")
            r = big_table(args, work, target)
            times = r["times"]
            med, worst = statistics.median(times), max(times)
            say("  triggers: UPDATE -> document shows the value: "
                + ", ".join(ms(t) for t in times))
            say(f"  full scan reconcile of big: {r['reconcile']:.1f} s for {r['reconciled']:,} "
                f"rows ({r['reconciled'] / r['reconcile']:,.0f} rows/s), {r['written']} written"
                f", changed row {'fixed' if r['fixed'] else 'NOT fixed'} (load "
                f"{r['reconcile_load']}); its first step, reading the digest of every "
                f"document, alone: {r['digest_seconds']:.1f} s, +{r['digest_mib']:,.0f} MiB")
            figures.append(f"initial backfill of {args.big_rows:,} rows by syncd run: "
                           f"{r['backfill']:.1f} s")
            figures.append(f"one changed row, triggers: median {ms(med)}, max {ms(worst)}   "
                           f"(goal < 1 s)  {verdict(worst < 1.0)}")
            figures.append(f"one full scan reconcile of the table: {r['reconcile']:.1f} s "
                           f"(scan mode finds a changed row only then; default every 300 s)")
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)

    say()
    say(f"machine: {describe()}; "
        f"server: {server}; load average at the end: {load()}")
    for line in figures:
        say(line)
    for line in results:
        say(line)


if __name__ == "__main__":
    main()
