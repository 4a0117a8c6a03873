"""Restore benchmark: `syncd restore` against the bare read of the same history, and
`syncd migrate`'s first run with the history baseline against without it.

On one MongoDB server (the embedded SecantusDB, as users get it, unless --mongo-url):

  (r) restore rows/s of the real EEG2025 fixture (migrated first) and of one table of
      --rows rows (default 1,000,000; its snapshot versions written with
      HistoryStore, as the baseline writes them), through the engine `syncd restore`
      runs, wall clock, and per CPU second of this process alone (the client side:
      decoding, SQLite inserts): goal >= 100,000 rows/s on one core;
  (b) baselines, the same history documents read bare from the server: unsorted
      (the one pass restore makes) and sorted by row and version (what a restore
      that let the server order them would wait for; stopped after --sort-limit
      seconds, then reported as a bound), decoded in C, nothing else;
  (m) `syncd migrate` first run on an EEG2025-shaped db of --migrate-rows rows, with
      the history baseline (a snapshot per row) against without it (every table in
      `[history] exclude`), alternated; the ratio is the baseline's cost.

`restore_section()` and `migrate_section()` return RESULT lines, for bench/history.py.

    python -m bench.restore [--rows 1000000] [--migrate-rows 50000] [--mongo-url URL]
                            [--only all|restore|migrate] [--sort-limit S]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import bson
from pymongo.database import Database
from pymongo.errors import ExecutionTimeout, PyMongoError

from bench.harness import ROOT, cpu_seconds, describe, load, mongo_server, result_line, say
from legacy_adapters.sqlite_restore import RestoreFile
from syncd.api.sync import migrate
from syncd.config import load_settings
from syncd.connect.mongo import connect
from syncd.engine.restore import RestoreOptions, restore
from syncd.progress import Progress
from syncd.projection.ids import int_ids_maker
from syncd.sample import make_eeg2025
from syncd.sinks.history import HistoryStore
from syncd.sinks.julian import julian_day_now

FIXTURE = ROOT.parent / "shared" / "fixtures" / "eeg2025" / "metadata.db"
SOURCE = "bench"
TABLE = "epochs"
COLS = ["id", "run_id", "epoch", "train_loss", "val_loss", "timestamp", "note"]
CREATE = ("CREATE TABLE epochs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, "
          "epoch INTEGER, train_loss REAL, val_loss REAL, timestamp TEXT, note TEXT)")
LOAD_CHUNK = 20000


def write_history(db: Database, rows: int) -> float:
    """`rows` snapshot versions of one table and its schema record, as the baseline
    writes them; returns the seconds the server took."""
    store = HistoryStore(db, SOURCE)
    store.ensure_indexes()
    start = julian_day_now()
    ids = int_ids_maker(SOURCE, TABLE)
    began = time.perf_counter()
    for first in range(1, rows + 1, LOAD_CHUNK):
        keys = list(range(first, min(rows, first + LOAD_CHUNK - 1) + 1))
        values = [(k, k // 100, k % 100, 1.0 / k, 2.0 / k, f"2025-10-20 14:03:{k % 60:02d}."
                   f"{k % 1000000:06d}", None if k % 3 else f"note {k}") for k in keys]
        store.record_snapshots(TABLE, start, julian_day_now(), ids(keys),
                               [(k,) for k in keys], keys, COLS, values, raw=False)
    store.record_schema(TABLE, julian_day_now(), 0, CREATE, ["CREATE INDEX epochs_run ON "
                        "epochs(run_id, epoch)"], rows, baseline=start, rows=rows,
                        columns=COLS)
    return time.perf_counter() - began


def bare_read(db: Database, table: str, sort: bool,
              limit_s: float = 0) -> tuple[int, float, bool]:
    """The history documents of `table` read and decoded, nothing else; (rows, seconds,
    whether it finished within `limit_s`, 0: no limit).

    With a limit the read runs on a thread and is given up after `limit_s` even when
    the server does not honour maxTimeMS (the embedded one sorts on regardless)."""
    got = {"n": 0}
    began = time.perf_counter()

    def read() -> None:
        cursor = db["_syncd_history"].find_raw_batches(
            {"source": SOURCE, "table": table},
            {"_id": 0, "doc": 1, "op": 1, "rowid": 1, "cols": 1, "vals": 1, "jd": 1,
             "seq": 1, "n": 1}, sort=[("doc", 1), ("jd", 1), ("seq", 1), ("n", 1)]
            if sort else None, batch_size=20000, allow_disk_use=sort or None,
            max_time_ms=int(limit_s * 1000) or None)
        try:
            for raw in cursor:
                got["n"] += len(bson.decode_all(raw))
            got["seconds"] = time.perf_counter() - began
        except (ExecutionTimeout, PyMongoError):
            pass

    if not limit_s:
        read()
        return got["n"], got["seconds"], True
    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(limit_s)
    if "seconds" in got:
        return got["n"], got["seconds"], True
    return got["n"], time.perf_counter() - began, False


def timed_restore(db: Database, path: Path, server: int | None) -> dict[str, float]:
    """One restore: rows, wall seconds, this process's CPU seconds, the server's."""
    cpu, server_cpu = time.process_time(), cpu_seconds(server)
    began = time.perf_counter()
    report = restore(db, RestoreOptions(path, SOURCE), Progress(enabled=False), RestoreFile)
    wall = time.perf_counter() - began
    return {"rows": report.rows, "wall": wall, "cpu": time.process_time() - cpu,
            "server": cpu_seconds(server) - server_cpu}


def _settings(url: str, database: str, sqlite: Path):
    return load_settings({"sqlite": sqlite, "mongo_url": url, "database": database,
                          "source_id": SOURCE, "timezone": "UTC"}, environ={})


def restore_section(url: str, server: int | None, rows: int, work: Path,
                    sort_limit: float = 600.0) -> list[str]:
    """(r) and (b): RESULT lines for the fixture and a table of `rows` rows."""
    client = connect(url, 30.0)
    lines = []
    try:
        if FIXTURE.exists():
            db = client["bench_restore_fixture"]
            client.drop_database(db.name)
            migrate(_settings(url, db.name, FIXTURE))
            got = timed_restore(db, work / "fixture.db", server)
            lines.append(result_line("restore of the real fixture (EEG2025, 51 rows, 2 views)",
                                     f"{got['wall']:.2f} s", f"  ({got['rows']} rows)"))
            client.drop_database(db.name)
        db = client["bench_restore_big"]
        client.drop_database(db.name)
        say(f"writing {rows:,} snapshot versions (HistoryStore) ...")
        loaded = write_history(db, rows)
        say(f"  {rows / loaded:,.0f} versions/s written")
        plain_n, plain_s, _ = bare_read(db, TABLE, sort=False)
        got = timed_restore(db, work / "big.db", server)
        assert got["rows"] == rows == plain_n, (got, plain_n)
        wall_rate, cpu_rate = rows / got["wall"], rows / max(got["cpu"], 1e-9)
        plain_rate = rows / plain_s
        measured = [
            result_line(f"restore of a {rows:,}-row table", f"{got['wall']:.1f} s",
                        f"  ({wall_rate:,.0f} rows/s end to end; goal >= 100,000 rows/s: "
                        f"{'met' if wall_rate >= 100000 else 'NOT met'} end to end)"),
            result_line("restore / bare unsorted read of the same history (its one pass)",
                        f"{wall_rate / plain_rate:.2f}",
                        f"  ({wall_rate:,.0f} vs {plain_rate:,.0f} rows/s)"),
            result_line("restore rows/s per CPU second of the restore process (client side)",
                        f"{cpu_rate:,.0f}",
                        f"  (goal >= 100,000 on one core: "
                        f"{'met' if cpu_rate >= 100000 else 'NOT met'}; server CPU "
                        f"{got['server']:.1f} s for {got['wall']:.1f} s wall)"),
        ]
        for line in measured:  # now: the sorted read below may take its whole limit
            say(line)
        lines += measured
        sorted_n, sorted_s, done = bare_read(db, TABLE, sort=True, limit_s=sort_limit)
        sorted_rate = rows / sorted_s
        shown = (f"{sorted_rate:,.0f}" if done else
                 f"< {sorted_rate:,.0f} (given up after {sorted_s:.0f} s, "
                 f"{sorted_n:,} rows read)")
        lines.append(result_line(
            f"restore rows/s, {rows:,}-row table, wall / bare sorted read",
            f"{wall_rate / sorted_rate:.2f}" + ("" if done else " at least"),
            f"  ({wall_rate:,.0f} vs {shown} rows/s)"))
        if not done:  # left in place: dropping it now would wait behind the sort
            return lines
        client.drop_database(db.name)
    finally:
        client.close()
    return lines


def migrate_section(url: str, rows: int, work: Path, rounds: int = 2) -> list[str]:
    """(m): `syncd migrate` first runs with and without the history baseline."""
    legacy = work / "migrate.db"
    counts = make_eeg2025(legacy, rows=rows)
    client = connect(url, 30.0)
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for i in range(rounds):
            for history in ((False, True) if i % 2 == 0 else (True, False)):
                name = f"bench_migrate_{'h' if history else 'n'}{i}"
                client.drop_database(name)
                settings = _settings(url, name, legacy)
                if not history:
                    settings.history_exclude = frozenset(counts)  # type: ignore[attr-defined]
                began = time.perf_counter()
                migrate(settings)
                times[history].append(time.perf_counter() - began)
                client.drop_database(name)
    finally:
        client.close()
    with_h, without = min(times[True]), min(times[False])
    total = sum(counts.values())
    return [result_line(f"migrate first run, {total:,} rows, with history baseline / without",
                        f"{with_h / without:.2f}",
                        f"  ({with_h:.1f} s vs {without:.1f} s, best of {rounds}; "
                        f"{total / with_h:,.0f} vs {total / without:,.0f} rows/s)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--migrate-rows", type=int, default=50_000)
    parser.add_argument("--mongo-url")
    parser.add_argument("--sort-limit", type=float, default=600.0, metavar="S",
                        help="stop the sorted bare read after S seconds (default 600)")
    parser.add_argument("--only", choices=("all", "restore", "migrate"), default="all")
    args = parser.parse_args()
    say(f"machine: {describe()}; load {load()}")
    lines = []
    with tempfile.TemporaryDirectory() as tmp, \
            mongo_server(Path(tmp) / "state", args.mongo_url) as (url, pid):
        work = Path(tmp)
        if args.only in ("all", "restore"):
            lines += restore_section(url, pid, args.rows, work, args.sort_limit)
        if args.only in ("all", "migrate"):
            lines += migrate_section(url, args.migrate_rows, work)
    say(f"load at the end: {load()}")
    for line in lines:
        say(line)


if __name__ == "__main__":
    main()
