"""What a 1 MB legacy value costs on its way to a page, the CLI or the logs (issue 20).

A training script may write anything into `notes` or `config` (a pasted traceback, a
serialized model summary). Every string the dashboard, the CLI and the logs show goes
through `syncd.redact.scrub`; before issue 20 its URL pattern backtracked from every
position (10 KB 0.15 s, 40 KB 2.5 s, 1 MB hours, the GIL held throughout). Measured,
in one run:

  (1) scrub() on 1 MB of each hostile shape (letters, "a://" repeated, "@", ":",
      query separators...) against a same-run baseline: `str.replace` over the same
      1 MB (a plain pass and copy). Median of --rounds.
  (2) a real `syncd run` (embedded SecantusDB, its HTTP server on) following a small
      sample database whose run 1 gets a 1 MB `notes` while it runs:
      - the experiment's page and its JSON for run 1 against run 2 (a few bytes of
        notes), median of --rounds each;
      - /healthz latency idle, and while a client asks for run 1's page back to back;
      - commit -> visible (a writer INSERTs epoch_history rows 20 times a second, a
        change stream stamps each document) idle, and with that client going.

    python -m bench.hostile_values [--size 1000000] [--rounds 5] [--seconds 6]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.harness import describe, mongo_server, pct, result, timed_get
from bench.http_load import wait_url
from bench.legacy_writer import legacy_write
from bench.syncd_run import SOURCE_ID, SyncdRun, start_watcher
from syncd.projection.ids import derive_id
from syncd.redact import scrub
from syncd.sample import make_eeg2025


def shapes(n: int) -> dict[str, str]:
    """1 MB texts that make a backtracking URL pattern retry from every position."""
    return {"letters": "a" * n, "a://": "a://" * (n // 4), "a:// ": "a:// " * (n // 5),
            "@": "a://" + "@" * n, ":": ":" * n, "?@": "a://" + "?@" * (n // 2),
            "&": "a://h?" + "&" * n, "password=": "a://h?" + "password=a&" * (n // 11),
            "u:p@h": "a://u:p@h " * (n // 10), "scheme run": "a" * n + "://u:p@h"}


def timed(func: Any, rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def scrub_part(args: argparse.Namespace) -> dict[str, float]:
    """Part 1: scrub() / str.replace per shape, same run."""
    ratios = {}
    plain = "a" * args.size
    base = timed(lambda: plain.replace("a", "b"), args.rounds)  # a pass and a copy of 1 MB
    print(f"  baseline: str.replace of every character of {args.size:,} {base * 1e3:.2f} ms")
    for name, text in shapes(args.size).items():
        took = timed(lambda t=text: scrub(t), args.rounds)
        ratios[name] = took / base
        print(f"  scrub {name!r:14} {took * 1e3:7.2f} ms; / baseline {took / base:7.2f}")
    return ratios


def get(url: str) -> float:
    """Seconds for one GET, body read (a megabyte page may take long on a busy machine)."""
    return timed_get(url, 120)


class Browser(threading.Thread):
    """Asks for one page back to back until stopped (an open tab, reloaded hard)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.halt, self.count = url, threading.Event(), 0

    def run(self) -> None:
        while not self.halt.is_set():
            get(self.url)
            self.count += 1

    def stop(self) -> int:
        self.halt.set()
        self.join(130)
        return self.count


def healthz(url: str, seconds: float) -> list[float]:
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(get(url + "/healthz"))
        time.sleep(0.02)
    return samples


def commit_to_visible(db: Any, legacy: Path, seconds: float, rate: float = 20.0
                      ) -> list[float]:
    """A legacy writer INSERTs epoch rows at `rate`; seconds from commit to seen."""
    watcher = start_watcher(db["epochs"])
    commits = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn = sqlite3.connect(legacy)  # the legacy pattern: connect, insert, commit, close
        try:
            rowid = conn.execute("INSERT INTO epoch_history (run_id, epoch, train_loss, "
                                 "val_loss) VALUES (2, 999, 0.5, 0.6)").lastrowid
            conn.commit()
            at = time.time()
        finally:
            conn.close()
        commits.append((derive_id(SOURCE_ID, "epoch_history", (rowid,)), at))
        time.sleep(1 / rate)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and watcher.first_seen(commits[-1][0]) is None:
        time.sleep(0.05)
    watcher.stop()
    return [seen - at for key, at in commits
            if (seen := watcher.first_seen(key)) is not None]


def server_part(args: argparse.Namespace) -> dict[str, float]:
    """Part 2: a real `syncd run` serving a page with a 1 MB value."""
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-hostile-"))
    legacy = work / "metadata.db"
    make_eeg2025(legacy, runs=5)
    with mongo_server(work / "mongo-state") as (url, _):
        return serve_and_measure(args, work, legacy, url)


def serve_and_measure(args: argparse.Namespace, work: Path, legacy: Path,
                      url: str) -> dict[str, float]:
    run = SyncdRun(work, "syncd", legacy, url, "bench_hostile", {"poll_seconds": 0.1}, http=True)
    out: dict[str, float] = {}
    try:
        client: MongoClient[Any] = MongoClient(url)
        db = client["bench_hostile"]
        run.start()
        run.wait_ready(db, 180)
        base = wait_url(run.state)
        legacy_write(legacy, "UPDATE training_runs SET notes = ? WHERE run_id = 1",
                     ("a" * args.size,))
        deadline = time.monotonic() + 120
        while len((db["experiments"].find_one({"run_id": 1}) or {}).get("notes") or "") \
                != args.size:
            if time.monotonic() > deadline:
                sys.exit(f"the 1 MB notes did not sync:\n{run.tail()}")
            time.sleep(0.1)
        for kind, path in (("page", "/experiments/"), ("JSON", "/api/experiments/")):
            small = timed(lambda p=path: get(base + p + "2"), args.rounds)
            big = timed(lambda p=path: get(base + p + "1"), args.rounds)
            out[kind] = big / small
            print(f"  {kind}: run 1 (1 MB notes) {big * 1e3:.1f} ms, run 2 {small * 1e3:.1f} ms")
        idle = healthz(base, args.seconds / 2)
        browser = Browser(base + "/experiments/1")
        browser.start()
        busy = healthz(base, args.seconds / 2)
        pages = browser.stop()
        out["healthz p99 idle"], out["healthz p99 busy"] = pct(idle, 99), pct(busy, 99)
        print(f"  /healthz p50/p99: idle {pct(idle, 50) * 1e3:.1f}/{pct(idle, 99) * 1e3:.1f} ms;"
              f" while the 1 MB page was served {pages} times {pct(busy, 50) * 1e3:.1f}/"
              f"{pct(busy, 99) * 1e3:.1f} ms")
        quiet = commit_to_visible(db, legacy, args.seconds)
        browser = Browser(base + "/experiments/1")
        browser.start()
        loaded = commit_to_visible(db, legacy, args.seconds)
        pages = browser.stop()
        for name, lat in (("idle", quiet), ("page", loaded)):
            out[f"visible p50 {name}"], out[f"visible p99 {name}"] = pct(lat, 50), pct(lat, 99)
        print(f"  commit -> visible p50/p99: idle {pct(quiet, 50) * 1e3:.1f}/"
              f"{pct(quiet, 99) * 1e3:.1f} ms ({len(quiet)} rows); with the 1 MB page served "
              f"{pages} times {pct(loaded, 50) * 1e3:.1f}/{pct(loaded, 99) * 1e3:.1f} ms "
              f"({len(loaded)} rows)")
        client.close()
    finally:
        run.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes of the value")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="seconds of each /healthz and commit -> visible phase")
    args = parser.parse_args()
    print(f"value: {args.size:,} characters; machine: {describe()}")
    ratios = scrub_part(args)
    served = server_part(args)
    worst = max(ratios, key=ratios.__getitem__)
    result("scrub 1 MB letters / str.replace 1 MB", f"{ratios['letters']:.2f}",
           " (goal: linear, a few passes; was quadratic: hours)")
    result(f"scrub worst 1 MB shape ({worst}) / str.replace 1 MB", f"{ratios[worst]:.0f}",
           " (goal: linear; per URL or parameter found, in Python, which lets other threads run)")
    result("experiment page with 1 MB notes / with a few bytes", f"{served['page']:.1f}",
           f"; its JSON: {served['JSON']:.1f}")
    result("/healthz p99 ms while the 1 MB page is served",
           f"{served['healthz p99 busy'] * 1e3:.1f}",
           f" (goal < 100; idle {served['healthz p99 idle'] * 1e3:.1f})")
    result("commit -> visible p99 with the 1 MB page served / idle",
           f"{served['visible p99 page'] / served['visible p99 idle']:.2f}",
           f" (p50 {served['visible p50 page'] / served['visible p50 idle']:.2f}; goal: its "
           "usual range)")


if __name__ == "__main__":
    main()
