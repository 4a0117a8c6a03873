"""Where a legacy write's time goes with the capture triggers installed (issue 14).

One process writes copies of one EEG2025-shaped metadata.db exactly as the legacy
scripts do (a new connection, one INSERT or UPDATE, commit, close; 9 epoch_history
INSERTs to 1 training_runs UPDATE), round robin over the copies in a shuffled order so
that other work on the machine hits each alike:

  without     no capture at all
  format 1    the triggers and tables syncd installed before 2026-11-30
  format 2    the triggers before 2026-12 (keys only; now for tables left out of history)
  format 3    what `syncd capture install` installs now: the row's values too (history)
  narrow      format 2's triggers rewritten to insert the narrowest row there is,
              `VALUES(NULL, code, rowid[, one more value])`, into a 4-column table:
              a cost model of a "format 3" (it does not capture composite keys)
  empty       18 triggers whose body is `SELECT 1` (the floor of 3 triggers a table)

Each write is timed whole and in parts: connect, the schema parse (forced by a first
statement), the write, COMMIT, close; with the CPU the process used. Then the schema
parse alone (connect, parse, close) per copy, on the same disk. `--dir` picks the
filesystem (default the system temp dir; /dev/shm takes the disk out).

    python -m bench.triggers [--writes 1500] [--dir DIR]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.capture_format1 import install_format1
from bench.harness import describe, result
from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture
from syncd.sample import make_eeg2025

EPOCH = ("INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss, learning_rate, "
         "duration_seconds, timestamp) VALUES (?, ?, ?, ?, 0.002, ?, ?)")
RUN = "UPDATE training_runs SET status = 'running', best_val_loss = ? WHERE run_id = ?"
PARTS = ("connect", "parse", "write", "commit", "close")


def _tables(path: Path) -> list:
    source = SQLiteSource(path)
    try:
        return list(source.schema().tables.values())
    finally:
        source.close()


def format2(path: Path) -> None:
    tables = _tables(path)
    capture = Capture(path, keys_only=[t.name for t in tables])
    capture.install(tables)
    capture.close()


def format3(path: Path) -> None:
    capture = Capture(path)
    capture.install(_tables(path))
    capture.close()


def format1(path: Path) -> None:
    """The format-1 install, as syncd made it before (tests/capture_format1.py)."""
    install_format1(path, _tables(path))


def empty(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for n, t in enumerate(_tables(path)):
        for op, event in (("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")):
            conn.execute(f'CREATE TRIGGER "_empty_{n}_{op}" AFTER {event} ON "{t.name}" '
                         "BEGIN SELECT 1; END")
    conn.close()


def narrow(path: Path) -> None:
    """Format 2 with every trigger inserting (code, rowid[, the next value]) instead."""
    format2(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _narrow_log (seq INTEGER PRIMARY KEY, c, r, o)")
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    conn.execute("BEGIN")
    for code, (name, sql) in enumerate(triggers.fetchall()):
        values = re.search(r"VALUES\((.*)\);END$", sql).group(1).split(",")[2:]
        row = f"NULL,{code},{values[0]},{values[1] if len(values) > 1 else 'NULL'}"
        conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(re.sub(r"BEGIN .*END$", f"BEGIN INSERT INTO _narrow_log VALUES({row});END",
                            sql))
    conn.execute("COMMIT")
    conn.close()


VARIANTS = {"without": None, "format 1": format1, "format 2": format2, "format 3": format3,
            "narrow": narrow, "empty": empty}


def make_copies(work: Path, variants: dict) -> dict[str, Path]:
    """One copy of a 10,000-row EEG2025-shaped metadata.db per variant, each set up."""
    template = work / "template.db"
    make_eeg2025(template, rows=10_000)
    dbs = {}
    for name, setup in variants.items():
        dbs[name] = work / f"{name.replace(' ', '')}.db"
        shutil.copy(template, dbs[name])
        if setup is not None:
            setup(dbs[name])
    return dbs


def q(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[int(p / 100 * (len(s) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=1500, help="writes per variant")
    parser.add_argument("--dir", type=Path, help="where the copies live (default: temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-triggers-", dir=args.dir))
    try:
        dbs = make_copies(work, VARIANTS)
        times = {n: {p: [] for p in ("total", "cpu", *PARTS)} for n in dbs}
        rng = random.Random(1)
        print(f"machine: {describe()}, SQLite {sqlite3.sqlite_version}; copies under {work}")
        for i in range(args.writes):
            order = list(dbs)
            rng.shuffle(order)
            for name in order:
                t = times[name]
                c0, t0 = time.process_time(), time.perf_counter()
                conn = sqlite3.connect(dbs[name])
                t1 = time.perf_counter()
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 0")  # the schema parse
                t2 = time.perf_counter()
                if i % 10:
                    conn.execute(EPOCH, (1, i, 0.5, 0.5, 3.0, "2026-11-30T00:00:00"))
                else:
                    conn.execute(RUN, (rng.random(), rng.randint(1, 200)))
                t3 = time.perf_counter()
                conn.commit()
                t4 = time.perf_counter()
                conn.close()
                t5 = time.perf_counter()
                for part, value in zip(("total", *PARTS), (t5 - t0, t1 - t0, t2 - t1, t3 - t2,
                                                         t4 - t3, t5 - t4), strict=True):
                    t[part].append(value)
                t["cpu"].append(time.process_time() - c0)
        parse: dict[str, list[float]] = {n: [] for n in dbs}
        for _ in range(args.writes * 2):
            for name, path in dbs.items():
                t0 = time.perf_counter()
                conn = sqlite3.connect(path)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 0")
                conn.close()
                parse[name].append(time.perf_counter() - t0)
        base, cpu0, parse0 = (q(times["without"]["total"], 50),
                              sum(times["without"]["cpu"]), q(parse["without"], 50))
        print(f"{args.writes} writes per variant; medians in us (total p90 beside)")
        print(f"{'':9s} {'total':>7s} {'p90':>7s} " + " ".join(f"{p:>7s}" for p in PARTS)
              + "   CPU/write  schema parse alone")
        for name, t in times.items():
            cpu = sum(t["cpu"]) / len(t["cpu"])
            print(f"{name:9s} {q(t['total'], 50) * 1e6:7.0f} {q(t['total'], 90) * 1e6:7.0f} "
                  + " ".join(f"{q(t[p], 50) * 1e6:7.0f}" for p in PARTS)
                  + f"   {cpu * 1e6:6.0f} ({sum(t['cpu']) / cpu0:.2f})"
                  + f"  {q(parse[name], 50) * 1e6:6.0f} "
                  f"(+{(q(parse[name], 50) - parse0) * 1e6:.0f})")
        for name in ("format 1", "format 2", "format 3", "narrow", "empty"):
            ratio = q(times[name]["total"], 50) / base
            cpu = f"CPU {sum(times[name]['cpu']) / cpu0:.2f}"
            if name in ("narrow", "empty"):  # cost models, not something syncd installs
                print(f"for comparison, one writer p50 {name} / without: {ratio:.3f}  {cpu}")
                continue
            goal = (" (goal <= 1.25, issue 23)" if name == "format 3" else " (for comparison)")
            result(f"one writer p50 {name} / without", f"{ratio:.3f}", f"{goal}  {cpu}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
