"""Backfill benchmark: `syncd migrate` against the server's own insert_many, in one run.

Builds an EEG2025-shaped legacy metadata.db of N rows, then measures on the same
MongoDB server (the embedded SecantusDB, as users get it, unless --mongo-url):

  (a) `syncd migrate` end to end (a separate process: read, project, checkpoint, write);
  (b) raw insert_many of the very same projected documents, in batches of the same
      size, into fresh collections with the same indexes (the same end state);
      (b0, for reference: the same without indexes);
  (c) syncd's read + project path into a null sink, in this process (one core;
      best of three passes), with the EEG2025 model (migration 2), and (c1, for
      reference) with the generic model of migration 1 (no builders: syncd's own
      path alone);
  (d) a bare `sqlite3` fetch of the same tables' rows into dicts (one dict per row,
      keyed by column name: `dict(zip(names, row))` over `fetchmany` of a plain
      `SELECT *`), the same rows, in this process (best of three passes), and
      (d2, for reference) the same through the dict row factory of the `sqlite3`
      documentation. c and d alternate, so both see the same machine load.

Prints rows/s for each and the ratios. Goals: a/b >= 0.8, c/d >= 0.75.
`--only project` measures c and d alone (no MongoDB server; well under a minute).

    python -m bench.backfill [--rows 200000] [--mongo-url URL] [--chunk-size 5000]
                             [--only all|project]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Timer, describe, mongo_server, result, syncd_cli
from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_sql import quote_ident
from syncd.connect.mongo import connect
from syncd.engine.backfill import read_projected
from syncd.engine.migration_files import build_model, load_migrations
from syncd.projection.project import Params, Projector, gc_paused
from syncd.sample import make_eeg2025
from syncd.sinks.collections import source_index
from syncd.sinks.null import NullSink

Seconds = tuple[float, float]  # wall clock, this thread's CPU time


def read_project(db_path: Path, params: Params, chunk: int, keep: bool, version: int = 2):
    """One pass of syncd's read + project path into a null sink, with the model of
    migration `version` (2: the EEG2025 model; 1: the generic one, no builders).

    With `keep`, the documents are also kept (untimed use: the batches for b).
    """
    source = SQLiteSource(db_path)
    model = build_model(load_migrations(), version)
    pairs = model.resolve(source.schema())
    sink = NullSink()
    kept: list[tuple[str, list[dict]]] = []
    rows = 0
    timer = Timer()
    for info, mapping in pairs:
        projector = Projector(info, mapping, params)
        upto = source.high_water(info)
        if upto is None:
            continue
        for c, projected in read_projected(source, info, projector, None, chunk, upto):
            sink.insert(mapping.collection, projected.docs)
            rows += len(c.rows)
            if keep:
                kept.append((mapping.collection, projected.docs))
    seconds = timer.stop()
    source.close()
    return kept, rows, seconds, model


def read_ids(db_path: Path, params: Params, chunk: int) -> tuple[int, Seconds]:
    """One pass of (e): syncd's read and each row's `_id`, no document. Every document
    path needs both, so e/d is the most c/d can reach (the EEG2025 model's tables)."""
    source = SQLiteSource(db_path)
    pairs = build_model(load_migrations(), 2).resolve(source.schema())
    rows = 0
    timer = Timer()
    for info, mapping in pairs:
        projector = Projector(info, mapping, params)
        upto = source.high_water(info)
        position = None
        while upto is not None:
            with gc_paused(promote=True):
                got = source.scan(info, position, chunk, upto)
                if not got.rows:
                    break
                projector.chunk_ids(got.rows)
            rows += len(got.rows)
            position = got.last
    seconds = timer.stop()
    source.close()
    return rows, seconds


def bare_fetch(db_path: Path, tables: list[str], chunk: int) -> tuple[int, Seconds]:
    """One pass of (d): the rows of `tables` as plain dicts, nothing else.

    The way a hand-written reader would do it: one `SELECT *` per table, the column
    names taken once from the cursor, `dict(zip(names, row))` per row, `fetchmany` in
    batches of the chunk size (each batch dropped after use, like the null sink).
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    rows = 0
    timer = Timer()
    for name in tables:
        cur = conn.execute(f"SELECT * FROM {quote_ident(name)}")
        names = [d[0] for d in cur.description]
        while batch := cur.fetchmany(chunk):
            docs = [dict(zip(names, row)) for row in batch]
            rows += len(docs)
        cur.close()
    seconds = timer.stop()
    conn.close()
    return rows, seconds


def _dict_factory(cursor: sqlite3.Cursor, row: tuple) -> dict:
    """The dict row factory of the sqlite3 documentation ("How to create and use row
    factories"), verbatim: (d2)."""
    fields = [column[0] for column in cursor.description]
    return {key: value for key, value in zip(fields, row)}


def factory_fetch(db_path: Path, tables: list[str], chunk: int) -> tuple[int, Seconds]:
    """One pass of (d2): (d) with the documentation's row factory building the dicts."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = _dict_factory
    rows = 0
    timer = Timer()
    for name in tables:
        cur = conn.execute(f"SELECT * FROM {quote_ident(name)}")
        while batch := cur.fetchmany(chunk):
            rows += len(batch)
        cur.close()
    seconds = timer.stop()
    conn.close()
    return rows, seconds


def project_vs_fetch(db_path: Path, params: Params, chunk: int, rows: int,
                     passes: int = 3) -> dict[str, Seconds]:
    """Best of `passes` of (c), (c1), (d) and (d2), alternated: rows/s of each, by the
    wall clock and by this thread's CPU time. A full collection before each pass: the
    passes share a process, and one pass's survivors would otherwise change when the
    collector runs in the next (the bare fetch's row tuples are tracked objects too)."""
    source = SQLiteSource(db_path)
    tables = [info.name for info, _ in
              build_model(load_migrations(), 2).resolve(source.schema())]
    source.close()
    runs: dict[str, list[Seconds]] = {"c": [], "c1": [], "d": [], "d2": [], "e": []}
    for _ in range(passes):
        for name, run in (
                ("c", lambda: read_project(db_path, params, chunk, keep=False)[1:3]),
                ("c1", lambda: read_project(db_path, params, chunk, False, version=1)[1:3]),
                ("d", lambda: bare_fetch(db_path, tables, chunk)),
                ("d2", lambda: factory_fetch(db_path, tables, chunk)),
                ("e", lambda: read_ids(db_path, params, chunk))):
            gc.collect()  # every pass starts from the same collector state (untimed)
            got, seconds = run()
            assert got == rows, (name, got, rows)
            runs[name].append(seconds)
    return {name: (rows / min(w for w, _ in s), rows / min(c for _, c in s))
            for name, s in runs.items()}


def run_migrate(url: str, database: str, db_path: Path, chunk: int, source_id: str) -> float:
    started = time.perf_counter()
    done = syncd_cli("-q", "migrate", "--sqlite", str(db_path), "--mongo-url", url,
                     "--database", database, "--source-id", source_id, "--timezone", "UTC",
                     "--chunk-size", str(chunk))
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"syncd migrate failed:\n{done.stderr[-3000:]}")
    return seconds


def raw_insert(client, database: str, batches, model, indexes: bool) -> float:
    db = client[database]
    for name in {c for c, _ in batches}:
        db.create_collection(name)
        if indexes:  # what migrate makes: the source index and the model's
            source_index(db[name])
            for spec in model.index_specs(name):
                db[name].create_index(list(spec.keys), name=spec.name)
    started = time.perf_counter()
    for name, docs in batches:
        if docs:
            db[name].insert_many(docs, ordered=False)
    return time.perf_counter() - started


def migrate_vs_insert(url: str, given: bool, db_path: Path, params: Params, chunk: int,
                      rows: int) -> tuple[float, float, float]:
    """Seconds of (a) `syncd migrate`, (b) raw insert_many with the same indexes and (b0)
    without, into one server; (b) ends in (a)'s state, which is checked."""
    client = connect(url, 30)
    try:
        batches, _, _, model = read_project(db_path, params, chunk, keep=True)
        for name in ("bench_a", "bench_b", "bench_b0"):  # a failed run's leftovers (a
            client.drop_database(name)  # database mirrors one legacy file: start clean)
        b_seconds = raw_insert(client, "bench_b", batches, model, indexes=True)
        a_seconds = run_migrate(url, "bench_a", db_path, chunk, "bench-host")
        b0_seconds = raw_insert(client, "bench_b0", batches, model, indexes=False)
        docs_a = sum(client["bench_a"][c].estimated_document_count() for c in
                     {c for c, _ in batches})
        assert docs_a == rows, (docs_a, rows)
        for name in {c for c, _ in batches}:  # (b) ends in (a)'s state: the same indexes
            got = {n: i["key"] for n, i in client["bench_b"][name].index_information().items()}
            want = {n: i["key"] for n, i in client["bench_a"][name].index_information().items()}
            assert got == want, (name, got, want)
        if given:  # the embedded server's data goes with its temporary folder
            for name in ("bench_a", "bench_b", "bench_b0"):
                client.drop_database(name)
    finally:
        client.close()
    return a_seconds, b_seconds, b0_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--mongo-url", help="bench against this server instead of the "
                        "embedded SecantusDB (--sync-on-commit)")
    parser.add_argument("--only", choices=("all", "project"), default="all",
                        help="project: only (c) read + project and (d) the bare fetch")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    db_path = work / "metadata.db"
    counts = make_eeg2025(db_path, rows=args.rows)
    rows = sum(counts.values())
    print(f"legacy db: {rows:,} rows {counts}")

    params = Params("bench-host", "UTC")
    if args.only == "project":
        try:
            rates = project_vs_fetch(db_path, params, args.chunk_size, rows)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"machine: {describe()}; chunk size {args.chunk_size}")
        print_project(rates)
        return

    try:
        with mongo_server(work / "state", args.mongo_url) as (url, _):
            rates = project_vs_fetch(db_path, params, args.chunk_size, rows)
            a_seconds, b_seconds, b0_seconds = migrate_vs_insert(
                url, args.mongo_url is not None, db_path, params, args.chunk_size, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    a_rate, b_rate, b0_rate = rows / a_seconds, rows / b_seconds, rows / b0_seconds
    server = "the given --mongo-url" if args.mongo_url else "embedded SecantusDB --sync-on-commit"
    print(f"machine: {describe()}")
    print(f"server: {server}; chunk size {args.chunk_size}")
    print(f"(a) syncd migrate end to end:          {a_rate:10,.0f} rows/s  ({a_seconds:.1f} s)")
    print(f"(b) raw insert_many, same indexes:     {b_rate:10,.0f} rows/s  ({b_seconds:.1f} s)")
    print(f"(b0) raw insert_many, no indexes:      {b0_rate:10,.0f} rows/s  ({b0_seconds:.1f} s)")
    print(f"a/b0 = {a_rate / b0_rate:.2f}")
    result("migrate / raw insert_many", f"{a_rate / b_rate:.2f}", " (goal >= 0.8)")
    print_project(rates)


def print_project(rates: dict[str, Seconds]) -> None:
    labels = {"c": "(c) read + project into a null sink:  ",
              "c1": "(c1) the same, generic model (v1):    ",
              "d": "(d) bare sqlite3 fetch into dicts:    ",
              "d2": "(d2) the same, docs' dict row factory:",
              "e": "(e) syncd's read and _ids, no document:"}
    print("best of 3 passes each, rows/s by the wall clock and per CPU-second of this thread:")
    for name, label in labels.items():
        wall, cpu = rates[name]
        print(f"{label} {wall:10,.0f} rows/s  {cpu:10,.0f} rows/CPU-s")
    wall = rates["c"][0] / rates["d"][0]
    c1, d2 = rates["c1"][1] / rates["d"][1], rates["c"][1] / rates["d2"][1]
    print(f"c/d by the wall clock = {wall:.2f}; CPU time: c1/d = {c1:.2f}, c/d2 = {d2:.2f}")
    print(f"e/d = {rates['e'][1] / rates['d'][1]:.2f}: the most c/d can be (every document "
          "needs the row read and its _id before anything is built)")
    result("read+project / bare fetch", f"{rates['c'][1] / rates['d'][1]:.2f}",
           " (goal >= 0.75, CPU time)")


if __name__ == "__main__":
    main()
