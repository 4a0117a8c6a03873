"""Where the legacy writers' tail comes from when they contend (issue 14).

Three writer processes run the legacy cycle flat out (bench/legacy_writer.py: a new
connection per write, one statement, commit, close; 5 s busy timeout) against copies
of one EEG2025-shaped metadata.db, one variant at a time, in ABBA rounds:

  without     no capture at all
  format 1    the triggers syncd installed before 2026-11-30
  format 2    what `syncd capture install` installs now (18 triggers and the log)
  narrow      format 2's triggers inserting the narrowest row there is (a cost model
              of a "format 3": bench/triggers.py)
  empty       18 triggers whose body is `SELECT 1`
  parse only  format 2's 18 triggers moved onto empty copies of the tables: every
              connection parses them, no write fires one (the schema also holds the
              six empty copies)
  fire only   format 2 with only the 4 triggers these writers fire

No syncd process runs. Per variant: p50 (and its ratio to `without`), p99, the share
of writes over 20 ms (SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms...: a
write that waited for a lock a few times) and `database is locked` errors.

    python -m bench.contention [--seconds 8] [--rounds 2] [--writers 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.harness import describe
from bench.legacy_writer import spawn
from bench.triggers import VARIANTS, format2, make_copies, q

FIRED = (("epoch_history", "INSERT"), ("training_runs", "INSERT"),
         ("training_runs", "UPDATE"), ("model_checkpoints", "INSERT"))


def _triggers(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()


def parse_only(path: Path) -> None:
    format2(path)
    conn = sqlite3.connect(path, isolation_level=None)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_syncd%'")]
    for name in names:
        conn.execute(f'CREATE TABLE "zz_{name}" AS SELECT * FROM "{name}" LIMIT 0')
    for name, sql in _triggers(conn):
        conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(re.sub(r' ON "([^"]+)"', r' ON "zz_\1"', sql, count=1))
    conn.close()


def fire_only(path: Path) -> None:
    format2(path)
    conn = sqlite3.connect(path, isolation_level=None)
    for name, sql in _triggers(conn):
        if not any(f'AFTER {op} ON "{table}"' in sql for table, op in FIRED):
            conn.execute(f'DROP TRIGGER "{name}"')
    conn.close()


ALL = {**VARIANTS, "parse only": parse_only, "fire only": fire_only}


def run_phase(db: Path, work: Path, writers: int, seconds: float, seed: int) -> tuple[list, int]:
    start = time.time() + 0.5
    procs = []
    for w in range(writers):
        out = work / f"writer{w}.json"
        cfg = {"db": str(db), "mode": "cycle", "start_at": start, "end_at": start + seconds,
               "seed": seed + w, "out": str(out), "epochs": 20}
        procs.append((spawn(cfg), out))
    lat: list[float] = []
    locked = 0
    for proc, out in procs:
        proc.wait()
        got = json.loads(out.read_text())
        lat += got["lat"]
        locked += got["locked"]
    return lat, locked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (default 2)")
    parser.add_argument("--writers", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-contention-"))
    try:
        dbs = make_copies(work, ALL)
        print(f"machine: {describe()}, SQLite {sqlite3.sqlite_version}; {args.writers} writers "
              f"flat out, {args.seconds:g} s per phase, {args.rounds} rounds")
        results = {name: ([], 0) for name in dbs}
        names = list(dbs)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                lat, locked = run_phase(dbs[name], work, args.writers, args.seconds, 10 * r)
                results[name] = (results[name][0] + lat, results[name][1] + locked)
        base = q(results["without"][0], 50)
        for name, (lat, locked) in results.items():
            slow = sum(x > 0.02 for x in lat) / len(lat)
            print(f"{name:10s} {len(lat):7,} writes  p50 {q(lat, 50) * 1e3:6.3f} ms "
                  f"({q(lat, 50) / base:.2f})  p99 {q(lat, 99) * 1e3:7.2f} ms  "
                  f"over 20 ms {slow:6.2%}  locked {locked}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
