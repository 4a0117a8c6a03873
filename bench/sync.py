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

    python -m bench.sync [--latency-seconds 20] [--writers 3] [--writer-seconds 10]
                        [--big-rows 1000000] [--only latency,coexist,big]
                        [--set KEY=VALUE] [--mongo-url URL] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from bench import sync_big, sync_coexist
from bench.harness import (
    cores_note,
    cpu_seconds,
    describe,
    load,
    mongo_server,
    ms,
    pct,
    result_line,
    say,
    verdict,
)
from bench.http_load import HttpLoad, wait_url
from bench.legacy_writer import finish_writers, start_writers
from bench.syncd_run import SOURCE_ID, SyncdRun, Target, observer_floor, start_watcher
from syncd.connect.mongo import connect
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025

PARTS = ("latency", "coexist", "big")


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


def latency_report(args: argparse.Namespace, work: Path, target: Target, floor: list[float],
                   figures: list[str], results: list[str]) -> None:
    """Run part (1), print its figures; the summary lines go to figures and results."""
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
            results.append(result_line(
                "commit -> visible p99 ms", f"{p99 * 1000:.1f}",
                f" (goal < 20)  p50 {p50 * 1000:.1f} ms, {r['seen']}/{r['commits']} seen, "
                f"observer floor p99 {pct(floor, 99) * 1000:.1f} ms" + cores_note()))
        elif mode == "trig+HTTP":
            figures.append(f"commit->visible p99 (triggers, HTTP load): {ms(p99)}   "
                           "(within noise of the line above)")
        else:
            figures.append(f"commit->visible p99 (scan):     {ms(p99)}   (for comparison)")


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
    if not set(args.controls) <= set(sync_coexist.CONTROLS):
        parser.error(f"--controls: choose from {', '.join(sync_coexist.CONTROLS)}")
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
    figures: list[str] = []
    results: list[str] = []
    server = "the given --mongo-url" if args.mongo_url else "embedded SecantusDB --sync-on-commit"
    if overrides:
        server += "; [daemon] " + ", ".join(f"{k} = {v!r}" for k, v in overrides.items())
    try:
        with mongo_server(work / "mongo-state", args.mongo_url) as (url, mongo_pid):
            client = connect(url, 30)
            target = Target(url, client, args.mongo_url is None, mongo_pid, overrides)
            say(f"machine: {describe()}, SQLite {sqlite3.sqlite_version}")
            say(f"server: {server}; legacy dbs under {work} (journal_mode=delete)")
            say(f"load average at start: {load()}")
            try:
                floor = observer_floor(target)
                say(f"observer floor (write sent -> seen on the change stream): p50 "
                    f"{ms(pct(floor, 50))}, p99 {ms(pct(floor, 99))}")
                if "latency" in parts:
                    latency_report(args, work, target, floor, figures, results)
                if "coexist" in parts:
                    sync_coexist.report(args, work, target, figures, results)
                if "big" in parts:
                    sync_big.report(args, work, target, figures)
            finally:
                client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    say()
    say(f"machine: {describe()}; server: {server}; load average at the end: {load()}")
    for line in figures + results:
        say(line)


if __name__ == "__main__":
    main()
