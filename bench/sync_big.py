"""Part (3) of bench/sync.py: one changed row in a big table. After `syncd run`'s
initial backfill of a plain `big` table, one row is UPDATEd the legacy way and timed
until its document shows the new value (triggers mode); then one full scan-mode
reconcile of the table (`Backfill.reconcile_table`) is timed in this process."""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import load, ms, rss_mib, say, verdict
from bench.legacy_writer import legacy_write
from bench.syncd_run import SOURCE_ID, TIMEZONE, SyncdRun, Target, start_watcher
from legacy_adapters.sqlite import SQLiteSource
from syncd.checkpoint.store import StateStore
from syncd.engine.backfill import Backfill
from syncd.engine.compare import target_digests
from syncd.engine.migration_files import build_model, load_migrations
from syncd.progress import Progress
from syncd.projection.ids import derive_id
from syncd.projection.project import Params
from syncd.sample import make_eeg2025
from syncd.sinks.mongo import MongoSink


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


def report(args: argparse.Namespace, work: Path, target: Target, figures: list[str]) -> None:
    """Run part (3) and print its figures; the summary lines go to figures."""
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
