"""What keeping every version costs (issue 23, "Every version"), each figure against a
baseline measured in the same run:

  writers   the legacy writers' p50 with the capture triggers only / without, before
            (format 2: keys only) and after (format 3: the row's values), with one
            writer and with three at once (copies of one EEG2025-shaped metadata.db,
            the legacy way: a connection per write, 9 epoch INSERTs to 1 run UPDATE,
            round robin over the copies in a shuffled order)
  storage   history storage per 1,000 versions: the change log's bytes (format 3 and
            format 2, from SQLite's dbstat) and `_syncd_history`'s documents and indexes
  latency   commit -> visible p50 with history and without (`[history] exclude` of every
            table: format 2's triggers, no versions), a real `syncd run` each
  restore   `syncd restore` of the real fixture and of a --restore-rows table, rows/s
            against the bare reads of the same history (bench.restore)

Sections are functions of (args, Context) in SECTIONS, run in that order.

    python -m bench.history [--only writers,storage,latency,restore] [--writes 1500]
                            [--seconds 10] [--rate 20] [--restore-rows 1000000]
                            [--mongo-url URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import describe, load, ms, pct, result, say
from bench.legacy_writer import finish_writers, start_writers
from bench.syncd_run import SOURCE_ID, SyncdRun, start_watcher
from bench.triggers import EPOCH, RUN, format2, format3, make_copies
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025

COPIES = {"without": None, "format 2": format2, "format 3": format3}
EEG_TABLES = ["subjects", "training_runs", "epoch_history", "model_checkpoints",
              "cache_files", "config"]


@dataclass
class Context:
    """What the sections share: the work folder and, once started, the MongoDB URL."""

    work: Path
    mongo_url: str | None = None
    client: Any = None
    server_pid: int | None = None
    notes: list[str] = field(default_factory=list)


# -- writers -------------------------------------------------------------------------------


def _time_writes(dbs: dict[str, str], writes: int, seed: int) -> dict[str, list[float]]:
    """One writer: `writes` legacy writes per copy, round robin in a shuffled order."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {n: [] for n in dbs}
    for i in range(writes):
        order = list(dbs)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            conn = sqlite3.connect(dbs[name], timeout=30)
            if i % 10:
                conn.execute(EPOCH, (1, i, 0.5, 0.5, 3.0, "2026-12-01T00:00:00"))
            else:
                conn.execute(RUN, (rng.random(), rng.randint(1, 200)))
            conn.commit()
            conn.close()
            times[name].append(time.perf_counter() - t0)
    return times


def _copies(folder: Path, variants: dict[str, Any]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return make_copies(folder, variants)


def _ratios(times: dict[str, list[float]]) -> dict[str, float]:
    base = pct(times["without"], 50)
    return {n: pct(t, 50) / base for n, t in times.items()}


def writers(args: argparse.Namespace, ctx: Context) -> None:
    say(f"\nwriters: p50 with the triggers only / without ({args.writes} writes per copy; "
        f"load {load()})")
    dbs = {n: str(p) for n, p in _copies(ctx.work / "writers", COPIES).items()}
    one = _ratios(_time_writes(dbs, args.writes, 1))
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        parts = pool.starmap(_time_writes, [(dbs, args.writes // 3, s) for s in (2, 3, 4)])
    three = _ratios({n: [t for p in parts for t in p[n]] for n in dbs})
    for label, ratios in (("one writer", one), ("three writers", three)):
        for name in ("format 2", "format 3"):
            goal = " (goal <= 1.25)" if (label, name) == ("one writer", "format 3") else ""
            when = "before (keys only)" if name == "format 2" else "after (the values too)"
            result(f"{label} p50 {name} / without", f"{ratios[name]:.3f}",
                   f"{goal}  {when}; load {load()}")


# -- storage -------------------------------------------------------------------------------


def _log_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = "
                                "'_syncd_changes'").fetchone()[0] or 0)
    finally:
        conn.close()


def storage(args: argparse.Namespace, ctx: Context) -> None:
    say(f"\nstorage per 1,000 versions (load {load()})")
    dbs = _copies(ctx.work / "storage", {"format 2": format2, "format 3": format3})
    for name, path in dbs.items():
        before = _log_bytes(path)
        _time_writes({name: str(path)}, 1000, 5)
        per = _log_bytes(path) - before
        result(f"change log bytes per 1,000 entries, {name}", f"{per}",
               "  (9 epoch INSERTs : 1 run UPDATE; pruned once applied)")
    if ctx.client is not None:
        run = _follow(args, ctx, history=True, seconds=max(args.seconds, 5.0))
        stats = ctx.client[run["database"]].command("collStats", "_syncd_history")
        count = max(int(stats.get("count", 0)), 1)
        docs, indexes = int(stats.get("size", 0)), int(stats.get("totalIndexSize", 0))
        result("_syncd_history bytes per 1,000 versions", f"{(docs + indexes) * 1000 // count}",
               f"  (documents {docs * 1000 // count}, indexes {indexes * 1000 // count}; "
               f"{count} versions of epoch INSERTs)")
        ctx.client.drop_database(run["database"])


# -- latency -------------------------------------------------------------------------------


def _follow(args: argparse.Namespace, ctx: Context, history: bool,
            seconds: float) -> dict[str, Any]:
    """A real `syncd run` while one writer inserts epochs at --rate: when each showed up."""
    tag = "with" if history else "without"
    base = ctx.work / f"follow-{tag}-{time.monotonic_ns()}"
    base.mkdir()
    legacy = base / "metadata.db"
    make_eeg2025(legacy, rows=2000)
    database = f"bench_history_{tag}"
    ctx.client.drop_database(database)
    db = ctx.client[database]
    daemon = SyncdRun(base, "syncd", legacy, ctx.mongo_url or "", database, {})
    if not history:
        with daemon.config.open("a") as cfg:
            cfg.write(f"[history]\nexclude = {EEG_TABLES!r}\n".replace("'", '"'))
    daemon.start()
    daemon.wait_ready(db, 300)
    watcher = start_watcher(db["epochs"])
    procs, outs, _ = start_writers(legacy, base, tag, 1, "rate", seconds, rate=args.rate,
                                   run_id=1)
    (done,) = finish_writers(procs, outs)
    ids = {rowid: derive_id(SOURCE_ID, "epoch_history", (rowid,)) for rowid, _ in done["commits"]}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(watcher.first_seen(i) is None for i in ids.values()):
        time.sleep(0.05)
    watcher.stop()
    daemon.stop()
    lat = [seen - at for rowid, at in done["commits"]
           if (seen := watcher.first_seen(ids[rowid])) is not None]
    versions = db["_syncd_history"].count_documents({"table": "epoch_history", "op": "insert"})
    return {"database": database, "lat": lat, "commits": len(done["commits"]),
            "versions": versions}


def latency(args: argparse.Namespace, ctx: Context) -> None:
    say(f"\ncommit -> visible, one writer at {args.rate:g} commits/s for {args.seconds:g} s "
        f"(load {load()})")
    runs = {}
    for history in (False, True, False, True):  # alternated: drift hits both alike
        r = _follow(args, ctx, history, args.seconds)
        ctx.client.drop_database(r["database"])
        say(f"  history {'on ' if history else 'off'}: p50 {ms(pct(r['lat'], 50))}, p99 "
            f"{ms(pct(r['lat'], 99))}; {len(r['lat'])}/{r['commits']} seen, {r['versions']} "
            f"versions (load {load()})")
        runs.setdefault(history, []).extend(r["lat"])
    on, off = pct(runs[True], 50), pct(runs[False], 50)
    result("commit -> visible p50 with history / without", f"{on / off:.2f}",
           f"  ({ms(on)} / {ms(off)}; p99 {ms(pct(runs[True], 99))} / "
           f"{ms(pct(runs[False], 99))})")


def restore(args: argparse.Namespace, ctx: Context) -> None:
    """Restore time for the real fixture and a table of `--restore-rows` rows (bench.restore,
    where `python -m bench.restore` also measures the history baseline's cost)."""
    from bench.restore import restore_section

    say(f"\nrestore, {args.restore_rows:,} rows (load {load()})")
    for line in restore_section(ctx.mongo_url, ctx.server_pid, args.restore_rows, ctx.work,
                                args.sort_limit):
        say(line)


SECTIONS: dict[str, Callable[[argparse.Namespace, Context], None]] = {
    "writers": writers, "storage": storage, "latency": latency, "restore": restore}
NEEDS_MONGO = {"storage", "latency", "restore"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections (default: {','.join(SECTIONS)})")
    parser.add_argument("--writes", type=int, default=1500, help="writes per copy (writers)")
    parser.add_argument("--seconds", type=float, default=10.0, help="writer seconds (latency)")
    parser.add_argument("--rate", type=float, default=20.0, help="commits per second (latency)")
    parser.add_argument("--mongo-url", help="a MongoDB to use (default: embedded SecantusDB)")
    parser.add_argument("--dir", type=Path, help="work folder (default: the temp dir)")
    parser.add_argument("--restore-rows", type=int, default=1_000_000,
                        help="rows of the restored table (restore)")
    parser.add_argument("--sort-limit", type=float, default=600.0, metavar="S",
                        help="stop the sorted baseline read after S seconds (restore)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not set(parts) <= set(SECTIONS):
        parser.error(f"--only: choose from {', '.join(SECTIONS)}")
    ctx = Context(Path(tempfile.mkdtemp(prefix="syncd-bench-history-", dir=args.dir)))
    say(f"machine: {describe()}, SQLite {sqlite3.sqlite_version}; load {load()}")
    try:
        if NEEDS_MONGO & set(parts):
            from bench.harness import mongo_server
            from syncd.connect.mongo import connect

            with mongo_server(ctx.work / "mongo-state", args.mongo_url) as (url, pid):
                ctx.mongo_url, ctx.client, ctx.server_pid = url, connect(url, 30), pid
                for name in parts:
                    SECTIONS[name](args, ctx)
        else:
            for name in parts:
                SECTIONS[name](args, ctx)
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)


if __name__ == "__main__":
    main()
