"""A legacy writer, run as its own process: exactly the legacy scripts' pattern, a new
`sqlite3.connect(DB)` per write (default 5 s busy timeout, rollback journal), one INSERT
or UPDATE, commit, close.

Mode "rate": one epoch_history INSERT per tick at `rate` Hz, recording (rowid,
time.time() right after commit). Mode "cycle": the training-run cycle (INSERT a run,
one epoch_history row per epoch, a model_checkpoints row at each new best, UPDATE the
run at its end) as fast as it can, or at `pace` writes per second. Every write is timed
from connect to close, its COMMIT alone too; OperationalErrors are counted (`database
is locked` separately), never retried.

    python -m bench.legacy_writer '{"db": ..., "mode": "rate"|"cycle", "start_at": T,
                                    "end_at": T, "seed": N, "out": PATH, ...}'

Writes its figures to `out` as JSON. It imports nothing of syncd's: it is the legacy.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EPOCH = ("INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss, learning_rate, "
         "duration_seconds, timestamp) VALUES (?, ?, ?, ?, 0.002, ?, ?)")
RUN = ("INSERT INTO training_runs (challenge, model_name, start_time, status, config) "
       "VALUES (?, 'EEGNeX_R1R2', ?, 'running', ?)")
CHECKPOINT = ("INSERT INTO model_checkpoints (run_id, epoch, val_loss, file_path, file_size_mb, "
              "timestamp, is_best) VALUES (?, ?, ?, ?, 12.5, ?, 0)")
END_RUN = ("UPDATE training_runs SET status = 'completed', end_time = ?, best_val_loss = ?, "
           "total_epochs = ? WHERE run_id = ?")


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


class Writer:
    """The writes of one process and their timings."""

    def __init__(self, path: str, pace: float, start_at: float) -> None:
        self.path, self.pace, self.due = path, pace, start_at
        self.lat: list[float] = []
        self.starts: list[float] = []
        self.commits: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self.commit_lat: list[float] = []  # the COMMIT alone: the journal and database fsyncs
        self.locked = 0

    def write(self, sql: str, params: tuple[Any, ...]) -> tuple[int | None, float | None]:
        """One write, its own connection; (rowid, time.time() after commit) or Nones."""
        if self.pace:
            self.due += 1.0 / self.pace
            wait = self.due - time.time()
            if wait > 0:
                time.sleep(wait)
        t0 = time.perf_counter()
        began = time.time()
        try:
            conn = sqlite3.connect(self.path)  # a new connection per write, default 5 s timeout
            try:
                cur = conn.execute(sql, params)
                t1 = time.perf_counter()
                conn.commit()
                self.commit_lat.append(time.perf_counter() - t1)
                committed = time.time()
                rowid = cur.lastrowid
            finally:
                conn.close()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                self.locked += 1
            if len(self.errors) < 5:
                self.errors.append(str(exc))
            return None, None
        self.lat.append(time.perf_counter() - t0)
        self.starts.append(began)
        return rowid, committed

    def figures(self) -> dict[str, Any]:
        return {"lat": self.lat, "starts": self.starts, "commits": self.commits,
                "locked": self.locked, "errors": self.errors, "commit_lat": self.commit_lat}


def at_rate(w: Writer, cfg: dict[str, Any], rng: random.Random) -> None:
    run, period, start_at, end_at = cfg["run_id"], 1.0 / cfg["rate"], cfg["start_at"], cfg["end_at"]
    i = 0
    while True:
        due = start_at + i * period
        if due >= end_at:
            break
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        i += 1
        rowid, at = w.write(EPOCH, (run, i, rng.random(), rng.random(), rng.uniform(1, 9),
                                    stamp()))
        if rowid is not None and at is not None:
            w.commits.append((rowid, at))


def cycles(w: Writer, cfg: dict[str, Any], rng: random.Random) -> None:
    epochs, end_at = cfg["epochs"], cfg["end_at"]
    while time.time() < end_at:
        run, _ = w.write(RUN, (rng.choice((1, 2)), stamp(), json.dumps({"batch_size": 32})))
        if run is None:
            continue
        best = None
        for epoch in range(1, epochs + 1):
            if time.time() >= end_at:
                break
            val = rng.random()
            w.write(EPOCH, (run, epoch, rng.random(), val, rng.uniform(1, 9), stamp()))
            if best is None or val < best:
                best = val
                w.write(CHECKPOINT, (run, epoch, val, f"checkpoints/run{run}_epoch{epoch}.pth",
                                     stamp()))
        w.write(END_RUN, (stamp(), best, epochs, run))


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[0])
    w = Writer(cfg["db"], cfg.get("pace") or 0, cfg["start_at"])
    rng = random.Random(cfg["seed"])
    while time.time() < cfg["start_at"]:
        time.sleep(0.002)
    (at_rate if cfg["mode"] == "rate" else cycles)(w, cfg, rng)
    Path(cfg["out"]).write_text(json.dumps(w.figures()))


# -- starting writers from a bench -----------------------------------------------------------


def spawn(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    """One writer process (`python -m bench.legacy_writer CFG`). Started here, not with
    bench.harness, so that a writer imports nothing of syncd's and starts quickly."""
    return subprocess.Popen([sys.executable, "-m", "bench.legacy_writer", json.dumps(cfg)],
                            cwd=ROOT)


def start_writers(db_path: Path, work: Path, tag: str, n: int, mode: str, seconds: float,
                  **extra: Any) -> tuple[list[subprocess.Popen[bytes]], list[Path], float]:
    """`n` writer processes that start together in one second; (procs, outs, start_at)."""
    start_at = time.time() + 1.0  # every writer starts at the same moment
    procs, outs = [], []
    for i in range(n):
        out = work / f"writer-{tag}-{i}.json"
        cfg = {"db": str(db_path), "mode": mode, "start_at": start_at,
               "end_at": start_at + seconds, "seed": zlib.crc32(f"{tag}-{i}".encode()),
               "out": str(out), **extra}
        procs.append(spawn(cfg))
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
    """One write in the legacy pattern, in this process; time.time() right after commit."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(sql, params)
        conn.commit()
        return time.time()
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
