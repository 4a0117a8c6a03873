"""The experiments as of a moment against the live ones: what the first as-of query
costs (a rebuild from history), and what the next ones cost (the cached view).

Starts one embedded SecantusDB, writes an EEG2025 metadata.db of `--runs` runs
(syncd.sample), migrates it with `syncd migrate`, and records its history as the
first sync does (one snapshot version per row of the three experiment tables, the
tables' SQL), then an update of every tenth run an hour later. It then times, each
as the median of `--rounds`:

- live: `Tracker(db).best_first({}, 0, 100)`, the dashboard list's first page (the
  same-run baseline), and `Tracker(db).history(ref)` of the run with most epochs;
- as-of, first: the same on `Tracker(db, as_of=T)` with the view cache emptied
  before each round (a rebuild of the runs; for history, of that run's epochs and
  checkpoints, found in one pass over their tables' history);
- as-of, cached: the next page, and a filtered page, on the view kept 30 s.

    python -m bench.asof [--runs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pymongo

from bench.harness import describe, load, median_seconds, mongo_server, result, say, syncd_cli
from syncd.client import asof
from syncd.client.tracker import Tracker
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.julian import julian_day

SOURCE = "bench"
KEYS = {"training_runs": "run_id", "epoch_history": "id", "model_checkpoints": "checkpoint_id"}
T0 = dt.datetime(2025, 10, 20, 12, 0, tzinfo=dt.UTC)


def record_history(db: Any, path: Path) -> int:
    """The first sync's snapshot of the three tables, then every tenth run updated an
    hour later; how many versions."""
    store = HistoryStore(db, SOURCE)
    store.ensure_indexes()
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    count = 0
    jd = julian_day(T0)
    for table, key in KEYS.items():
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        store.record_schema(table, jd, 0, sql[0])
        rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
        for start in range(0, len(rows), 5000):
            count += store.record(
                version(SOURCE, table, derive_id(SOURCE, table, (r[key],)), (r[key],),
                        r[key], "snapshot", jd, 0, 0, r) for r in rows[start:start + 5000])
    later = julian_day(T0 + dt.timedelta(hours=1))
    runs = [dict(r) for r in conn.execute("SELECT * FROM training_runs WHERE run_id % 10 = 0")]
    count += store.record(
        version(SOURCE, "training_runs", derive_id(SOURCE, "training_runs", (r["run_id"],)),
                (r["run_id"],), r["run_id"], "update", later, i + 1, 0,
                {**r, "status": "failed"}) for i, r in enumerate(runs))
    conn.close()
    return count


def busiest_run(path: Path) -> tuple[str, int]:
    """The run with the most epochs (the history worth timing; some runs have none),
    and how many it has."""
    conn = sqlite3.connect(path)
    try:
        run, epochs = conn.execute("SELECT run_id, count(*) FROM epoch_history GROUP BY "
                                   "run_id ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
    finally:
        conn.close()
    return str(run), int(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    say(f"machine: {describe()}; load {load()}")
    with tempfile.TemporaryDirectory() as tmp, mongo_server(Path(tmp) / "state") as (url, _):
        path = Path(tmp) / "metadata.db"
        counts = make_eeg2025(path, runs=args.runs)
        done = syncd_cli("migrate", "--sqlite", str(path), "--mongo-url", url, "--database",
                         "bench", "--source-id", SOURCE, "--timezone", "UTC")
        if done.returncode:
            raise SystemExit(f"syncd migrate failed: {done.stderr[-2000:]}")
        client = pymongo.MongoClient(url)
        db = client["bench"]
        versions = record_history(db, path)
        say(f"{counts['training_runs']:,} runs, {counts['epoch_history']:,} epochs, "
            f"{versions:,} versions recorded")
        when = T0 + dt.timedelta(hours=2)
        ref, own = busiest_run(path)

        def live_page() -> Any:
            return Tracker(db).best_first({}, 0, 100)

        def past_page(offset: int = 0, query: dict | None = None) -> Any:
            return Tracker(db, as_of=when).best_first(query or {}, offset, 100)

        live = median_seconds(live_page, args.rounds)
        first = median_seconds(past_page, args.rounds, before=asof._views.clear)
        past_page()
        cached = median_seconds(lambda: past_page(100), args.rounds)
        filtered = median_seconds(
            lambda: past_page(0, {"status": "completed", "challenge": 1}), args.rounds)
        live_history = median_seconds(lambda: Tracker(db).history(ref), args.rounds)
        first_history = median_seconds(lambda: Tracker(db, as_of=when).history(ref),
                                       args.rounds, before=asof._views.clear)
        cached_history = median_seconds(lambda: Tracker(db, as_of=when).history(ref),
                                        args.rounds)
        client.close()
    say(f"load after: {load()}")
    rows = [("list page, live", live, live), ("list page, as of (first)", first, live),
            ("next page, as of (cached)", cached, live),
            ("filtered page, as of (cached)", filtered, live),
            ("history, live", live_history, live_history),
            ("history, as of (first)", first_history, live_history),
            ("history, as of (cached)", cached_history, live_history)]
    for name, seconds, base in rows:
        say(f"{name:<32}{seconds * 1000:>10.1f} ms{seconds / base:>8.2f}x live")
    result("as-of first list page / live page", f"{first / live:.1f}",
           f" ({first * 1000:.0f} ms vs {live * 1000:.0f} ms, {args.runs:,} runs)")
    result("as-of cached page / live page", f"{cached / live:.2f}",
           f" ({cached * 1000:.1f} ms vs {live * 1000:.1f} ms; the view is kept "
           f"{asof.VIEW_SECONDS:.0f} s)")
    result("as-of first history / live history", f"{first_history / live_history:.1f}",
           f" ({first_history * 1000:.0f} ms vs {live_history * 1000:.0f} ms; run {ref}'s "
           f"{own} epochs, of {counts['epoch_history']:,})")


if __name__ == "__main__":
    main()
