"""A legacy metadata.db in the EEG2025 shape, made the way the legacy scripts make it.

`syncd sample PATH` writes the small sample the quick start migrates
(examples/eeg2025-sample.db is this script's output); `bench/` and the tests
call `make_eeg2025(path, rows=N)` for larger ones. The schema is the legacy
project's own (tables, indexes and views as in its metadata.db); the rows are
synthetic and deterministic for a given seed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

EEG2025_SCHEMA = """
CREATE TABLE subjects (
    subject_id TEXT PRIMARY KEY,
    age REAL,
    sex TEXT,
    p_factor REAL,
    release TEXT,
    n_sessions INTEGER,
    n_trials INTEGER,
    data_quality REAL,
    notes TEXT
);
CREATE TABLE training_runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge INTEGER,
    model_name TEXT,
    start_time TEXT,
    end_time TEXT,
    status TEXT,
    best_val_loss REAL,
    best_epoch INTEGER,
    total_epochs INTEGER,
    config TEXT,
    notes TEXT
);
CREATE TABLE epoch_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    epoch INTEGER,
    train_loss REAL,
    val_loss REAL,
    learning_rate REAL,
    duration_seconds REAL,
    timestamp TEXT,
    FOREIGN KEY (run_id) REFERENCES training_runs(run_id)
);
CREATE TABLE model_checkpoints (
    checkpoint_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    epoch INTEGER,
    val_loss REAL,
    file_path TEXT,
    file_size_mb REAL,
    timestamp TEXT,
    is_best BOOLEAN,
    FOREIGN KEY (run_id) REFERENCES training_runs(run_id)
);
CREATE TABLE cache_files (
    cache_id INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge INTEGER,
    release TEXT,
    file_path TEXT,
    file_size_mb REAL,
    n_windows INTEGER,
    n_channels INTEGER,
    n_times INTEGER,
    created_at TEXT,
    checksum TEXT
);
CREATE TABLE config (
    key TEXT PRIMARY KEY,
    value TEXT,
    description TEXT
);
CREATE INDEX idx_subjects_release ON subjects(release);
CREATE INDEX idx_training_challenge ON training_runs(challenge);
CREATE INDEX idx_epoch_run ON epoch_history(run_id, epoch);
CREATE INDEX idx_checkpoints_run ON model_checkpoints(run_id);
CREATE VIEW best_models AS
SELECT tr.run_id, tr.challenge, tr.model_name, tr.best_val_loss, tr.best_epoch,
       tr.start_time, mc.file_path
FROM training_runs tr
LEFT JOIN model_checkpoints mc ON tr.run_id = mc.run_id AND mc.is_best = 1
ORDER BY tr.challenge, tr.best_val_loss;
CREATE VIEW training_summary AS
SELECT challenge, COUNT(*) as n_runs, MIN(best_val_loss) as best_loss,
       AVG(best_val_loss) as avg_loss, AVG(total_epochs) as avg_epochs
FROM training_runs
WHERE status = 'completed'
GROUP BY challenge;
"""

MODELS = ("EEGNeX", "EEGNet", "TCN", "Transformer")
RELEASES = ("R1", "R2", "R3", "R4", "R5")
EPOCH = dt.datetime(2025, 10, 19, 15, 32, 37, 141651)


def _iso(t: dt.datetime) -> str:
    return t.isoformat()


class SampleExists(FileExistsError):
    """The sample's path already holds a file (which may be someone's real metadata.db)."""


def make_eeg2025(path: Path | str, rows: int | None = None, runs: int = 40,
                 seed: int = 2025, force: bool = False,
                 cache_files: list[tuple[Any, ...]] | None = None) -> dict[str, int]:
    """Write an EEG2025-shaped metadata.db at `path`; return row counts.

    An existing file is never touched unless `force` (it may be a real metadata.db:
    writing fake runs over real ones is a loss nothing can undo). The database is
    built beside `path` and moved into place only when complete, so a failure
    leaves whatever was there. With `rows`, the database holds about that many rows
    in all, mostly epochs (the shape a long-lived training host accumulates): about
    one run per 44 rows. `cache_files` replaces the synthetic `cache_files` rows
    (syncd.sample_hdf5.cache_file_rows: the HDF5 files written with it), the other
    tables staying as they are for the seed.
    """
    path = Path(path)
    if path.exists() and not force:
        raise SampleExists(f"{path} exists")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        counts = _write(tmp, rows, runs, seed, cache_files)
        if force:
            for suffix in ("-journal", "-wal", "-shm"):  # the old file's, not the new one's
                _remove(path.with_name(path.name + suffix))
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if `path` appeared meanwhile: never clobbers
            except FileExistsError:
                raise SampleExists(f"{path} exists") from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise SampleExists(f"{path} exists") from None
                os.replace(tmp, path)
    finally:
        _remove(tmp)
    return counts


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _write(path: Path, rows: int | None, runs: int, seed: int,
           cache_files: list[tuple[Any, ...]] | None = None) -> dict[str, int]:
    """Create the database at `path` (which does not exist) and fill it."""
    rng = random.Random(seed)
    if rows is not None:
        runs = max(1, rows // 44)
    conn = sqlite3.connect(path)
    conn.executescript(EEG2025_SCHEMA)
    counts = {"subjects": 0, "training_runs": 0, "epoch_history": 0, "model_checkpoints": 0,
              "cache_files": 0, "config": 0}
    with conn:
        conn.executemany("INSERT INTO config VALUES (?, ?, ?)", [
            ("db_version", "1.0", "Database schema version"),
            ("created_at", _iso(EPOCH), "Database creation time"),
            ("cache_dir", "data/cached", "HDF5 cache directory"),
            ("checkpoints_dir", "checkpoints", "Model checkpoints directory"),
        ])
        counts["config"] = 4
        n_subjects = max(5, runs // 4)
        conn.executemany("INSERT INTO subjects VALUES (?,?,?,?,?,?,?,?,?)", [
            (f"NDAR{rng.randrange(10**9):09d}{i}", round(rng.uniform(5, 21), 1),
             rng.choice("MF"), round(rng.gauss(0, 1), 4), rng.choice(RELEASES),
             rng.randint(1, 3), rng.randint(50, 400), round(rng.random(), 3), None)
            for i in range(n_subjects)])
        counts["subjects"] = n_subjects
        cache_rows: list[tuple[Any, ...]] = [
            (c, r, f"data/cached/challenge{c}_{r}_windows.h5", round(rng.uniform(50, 900), 2),
             rng.randint(1000, 40000), 129, 200, _iso(EPOCH + dt.timedelta(hours=i)),
             f"{rng.getrandbits(128):032x}")
            for i, (c, r) in enumerate((c, r) for c in (1, 2) for r in RELEASES)]
        if cache_files is not None:  # drawn above all the same: the other tables keep the seed's
            cache_rows = [(*row[:7], _iso(EPOCH + dt.timedelta(hours=i)), *row[8:])
                          for i, row in enumerate(cache_files)]
            conn.execute("UPDATE config SET value = ? WHERE key = 'cache_dir'",
                         (str(Path(cache_files[0][2]).parent) if cache_files else "",))
        conn.executemany("INSERT INTO cache_files VALUES (NULL,?,?,?,?,?,?,?,?,?)", cache_rows)
        counts["cache_files"] = len(cache_rows)
        epoch_rows, ckpt_rows = [], []
        start = EPOCH
        target_epochs = 45 if rows is not None else None
        for run in range(1, runs + 1):
            start += dt.timedelta(minutes=rng.randint(1, 240), microseconds=rng.randrange(10**6))
            challenge = rng.choice((1, 2))
            model = rng.choice(MODELS)
            max_epochs = target_epochs or rng.choice((1, 2, 3, 5, 20))
            status = rng.choices(("completed", "failed", "running"), (6, 2, 1))[0]
            n_epochs = max_epochs if status == "completed" else rng.randint(0, max_epochs)
            config = {"batch_size": rng.choice((8, 16, 32, 64, 128)), "max_epochs": max_epochs,
                      "learning_rate": 0.002, "patience": 5, "crop_size": 2.0, "model": model,
                      "optimizer": "Adamax", "loss": "L1",
                      "note": f"challenge{challenge} {model} run {run}",
                      "num_workers": rng.choice((0, 1, 2, 4)), "amp": rng.random() < 0.5}
            t = start
            best, best_epoch = None, None
            for e in range(1, n_epochs + 1):
                duration = rng.uniform(60, 120000)
                t += dt.timedelta(seconds=duration)
                val = round(abs(rng.gauss(0.05 / e, 0.02)), 17)
                epoch_rows.append((run, e, abs(rng.gauss(0.1 / e, 0.03)), val, 0.002, duration,
                                   _iso(t)))
                if best is None or val < best:
                    best, best_epoch = val, e
                    ckpt_rows.append((run, e, val, f"checkpoints/challenge{challenge}_run{run}"
                                      f"_epoch{e}.pth", round(rng.uniform(1, 40), 2), _iso(t),
                                      None))
            if ckpt_rows and ckpt_rows[-1][0] == run:
                last = ckpt_rows[-1]
                ckpt_rows[-1] = (*last[:6], 1)
            done = status != "running"
            conn.execute(
                "INSERT INTO training_runs VALUES (NULL,?,?,?,?,?,?,?,?,?,?)",
                (challenge, f"{model}_R1R2", _iso(start), _iso(t) if done else None, status,
                 best if done else None, best_epoch if done else None,
                 n_epochs if done else None, json.dumps(config),
                 "crashed: CUDA out of memory" if status == "failed" else None))
        conn.executemany("INSERT INTO epoch_history VALUES (NULL,?,?,?,?,?,?,?)", epoch_rows)
        conn.executemany("INSERT INTO model_checkpoints VALUES (NULL,?,?,?,?,?,?,?)", ckpt_rows)
        counts["training_runs"] = runs
        counts["epoch_history"] = len(epoch_rows)
        counts["model_checkpoints"] = len(ckpt_rows)
    conn.close()
    return counts
