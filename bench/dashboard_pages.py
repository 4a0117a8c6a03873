"""The dashboard's experiments list at `--runs` runs: its order kept in the dashboard
against the server-sorted pages, in the same run.

Starts one embedded SecantusDB (as users get it), writes `--runs` experiment documents
of the EEG2025 model (migration 0002's shape, the newest migration's indexes, ~2/3 of
them with a best validation loss) and two real `syncd dashboard` processes over them:
`[http] experiments_order = "server"` (the baseline: each page counted, sorted and
skipped by the server) and `"memory"` (the default: the order read once by the
dashboard's own thread, then kept by the change stream; a page fetched by `_id`).
Timed over HTTP, each the median of `--rounds`, the two dashboards in turn (ABBA):

- the first /experiments request once a dashboard answers /healthz (the first
  memory-order read is then still going on in the background);
- page 1, a middle page, the last page and a filtered page 2;
- page 1 and the middle page right after one run's loss changed (pymongo, acknowledged);
- `syncd experiments best` (its API) at the first and a late offset, against the server's
  sort+skip and count.

It prints RESULT lines (value, the baseline's, their ratio, and the goal: < 0.5 s).

    python -m bench.dashboard_pages [--runs 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pymongo
from bson import ObjectId

from bench.harness import ROOT, describe, load, median_seconds, mongo_server, result, say, timed_get
from syncd.client.tracker import SUMMARY, Tracker
from syncd.embedded import free_port
from syncd.engine.migration_files import build_model, load_migrations

GOAL_SECONDS = 0.5
ORDERS = ("server", "memory")  # baseline first


def experiments(first: int, last: int, rng: random.Random) -> list[dict]:
    """Documents of runs first..last-1 as migration 0002 projects training_runs rows."""
    return [{"_id": ObjectId(), "run_id": i, "challenge": rng.choice([1, 2]),
             "status": rng.choice(["completed", "running", "failed"]),
             "model": {"name": rng.choice(["EEGNet", "ShallowConvNet"])},
             "config": {"lr": rng.choice([1e-4, 1e-3, 1e-2]), "batch_size": 64,
                        "dropout": rng.choice([0.25, 0.5]), "epochs": 50},
             "metrics": {"best_val_loss": rng.random() if i % 3 else None,
                         "best_epoch": rng.randrange(50), "total_epochs": 50},
             "start_time": dt.datetime(2025, 1, 1) + dt.timedelta(minutes=i),
             "end_time": None, "notes": None, "_source": "bench", "_v": 2}
            for i in range(first, last)]


def pages(runs: int) -> dict[str, str]:
    """The pages timed: name -> path."""
    last = max(1, -(-runs // 100))
    return {"page 1": "/experiments", "middle page": f"/experiments?page={last // 2 + 1}",
            "last page": f"/experiments?page={last}",
            "status=completed page 2": "/experiments?status=completed&page=2"}


def start_dashboard(order: str, url: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """A `syncd dashboard` with `[http] experiments_order = order`, once it answers
    /healthz (which reads nothing); its base URL."""
    cfg = tmp / f"{order}.toml"
    cfg.write_text(f'[http]\nexperiments_order = "{order}"\n')
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "dashboard", "--config", str(cfg), "--listen",
         f"127.0.0.1:{port}", "--mongo-url", url, "--database", "bench", "--state-dir",
         str(tmp / order)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            timed_get(base + "/healthz", 5)
            return proc, base
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"syncd dashboard ({order}) did not start") from None
            time.sleep(0.05)


def ordered_by(base: str) -> str:
    with urllib.request.urlopen(base + "/api/experiments", timeout=60) as answer:
        return str(json.loads(answer.read())["ordered_by"])


def old_best(db: pymongo.database.Database, offset: int, n: int) -> None:
    """The server's path of `experiments best` before: a sorted, skipped find and a count."""
    match = Tracker.best_match(1, "completed")
    list(db["experiments"].find(match, SUMMARY).sort(
        [("metrics.best_val_loss", 1), ("run_id", 1), ("_id", 1)]).skip(offset).limit(n))
    db["experiments"].count_documents(match)


def new_best(db: pymongo.database.Database, offset: int, n: int) -> None:
    """`experiments best` now (its API): one projected pass, the page fetched by `_id`."""
    Tracker(db).best_page(1, n, "completed", offset)


def measure(args: argparse.Namespace, tmp: Path, url: str) -> dict[str, dict[str, float]]:
    """name -> {order: seconds}."""
    db = pymongo.MongoClient(url)["bench"]
    migrations = load_migrations()
    model = build_model(migrations, len(migrations))
    for spec in model.index_specs("experiments"):
        db["experiments"].create_index(list(spec.keys), name=spec.name)
    rng = random.Random(2025)
    for start in range(1, args.runs + 1, 2000):
        db["experiments"].insert_many(experiments(start, min(start + 2000, args.runs + 1), rng))
    got: dict[str, dict[str, float]] = {}
    procs: list[subprocess.Popen] = []
    try:
        bases = {}
        for order in ORDERS:  # one after the other: the first request meets no other work
            proc, bases[order] = start_dashboard(order, url, tmp)
            procs.append(proc)
            got.setdefault("first request after start", {})[order] = \
                timed_get(bases[order] + "/experiments", 60)
        deadline = time.monotonic() + 120
        while ordered_by(bases["memory"]) != "dashboard":
            if time.monotonic() > deadline:
                raise SystemExit("the memory order was not ready within 120 s")
            time.sleep(0.2)
        timings: dict[str, dict[str, list[float]]] = {}
        for r in range(args.rounds):
            for order in ORDERS if r % 2 == 0 else ORDERS[::-1]:
                for name, path in pages(args.runs).items():
                    timings.setdefault(name, {}).setdefault(order, []).append(
                        timed_get(bases[order] + path, 60))
                for name, path in (("page 1 after a change", "/experiments"),
                                   ("middle page after a change",
                                    pages(args.runs)["middle page"])):
                    db["experiments"].update_one({"run_id": rng.randrange(1, args.runs)},
                                                 {"$set": {"metrics.best_val_loss": rng.random()}})
                    timings.setdefault(name, {}).setdefault(order, []).append(
                        timed_get(bases[order] + path, 60))
        for name, by in timings.items():
            got[name] = {order: statistics.median(v) for order, v in by.items()}
        late = args.runs // 6 - 20  # challenge 1, completed: about 1/6 of the runs
        for name, offset in (("best offset 0", 0), (f"best offset {late}", late)):
            got[name] = {
                "server": median_seconds(lambda o=offset: old_best(db, o, 10), args.rounds),
                "memory": median_seconds(lambda o=offset: new_best(db, o, 10), args.rounds)}
        got["(one count_documents, pymongo)"] = {
            "server": median_seconds(lambda: db["experiments"].count_documents({}), 1)}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    say(f"machine: {describe()}; load before: {load()}")
    with tempfile.TemporaryDirectory() as tmp, mongo_server(Path(tmp) / "state") as (url, _):
        got = measure(args, Path(tmp), url)
    say(f"load after: {load()}")
    say(f"{'at ' + format(args.runs, ',') + ' runs':<30}{'server-sorted':>14}{'memory order':>14}")
    for name, by in got.items():
        mine = f"{by['memory']:>12.3f} s" if "memory" in by else ""
        say(f"{name:<30}{by['server']:>12.3f} s{mine}")
    groups = {"first page": ["page 1"],
              "later pages": ["middle page", "last page", "status=completed page 2"],
              "after a change": ["page 1 after a change", "middle page after a change"],
              "first request after start": ["first request after start"],
              "experiments best": [n for n in got if n.startswith("best ")]}
    for what, names in groups.items():
        mine = max(got[n]["memory"] for n in names)
        theirs = max(got[n]["server"] for n in names)
        result(f"{what}, slowest (memory order / server-sorted)", f"{mine:.3f} s",
               f" vs {theirs:.3f} s = {mine / theirs:.2f} (goal < {GOAL_SECONDS} s: "
               f"{'met' if mine < GOAL_SECONDS else 'NOT met'}; {args.runs:,} runs)")


if __name__ == "__main__":
    main()
