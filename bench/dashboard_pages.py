"""The dashboard's experiments list and compare page as the number of runs grows.

Starts one embedded SecantusDB (as users get it), writes `--small` experiment documents
of the EEG2025 model (migration 0002's shape, the newest migration's indexes, ~2/3 of
them with a best validation loss), serves them with a real `syncd dashboard` process
and times, over HTTP, the first, a middle and the last page of /experiments, a
filtered page, and a /compare page of three runs; then grows the collection to
`--runs` and times the same pages again. Each figure is the median of `--rounds`
requests. It prints the latencies at both sizes, the ratio large / small, one
`count_documents({})` from pymongo at both sizes (the server's cost of one pass over
the runs: the same-run baseline a page is made of), and the goal at `--runs` (< 0.5 s
a page).

    python -m bench.dashboard_pages [--runs 10000] [--small 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
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

from bench.harness import ROOT, describe, mongo_server
from syncd.embedded import free_port
from syncd.engine.migration_files import build_model, load_migrations

GOAL_SECONDS = 0.5


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


def timed(url: str, rounds: int) -> float:
    """Median seconds of `rounds` GETs of `url` (each read to the end)."""
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as answer:
            answer.read()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def floor(db: pymongo.database.Database, rounds: int) -> float:
    """Median seconds of one count_documents({}) of the runs: one pass of the server
    over them, the baseline a page's latency is made of."""
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        db["experiments"].count_documents({})
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def pages(runs: int) -> dict[str, str]:
    """The pages timed: name -> path."""
    last = max(1, -(-runs // 100))
    return {"page 1": "/experiments", "middle page": f"/experiments?page={last // 2 + 1}",
            "last page": f"/experiments?page={last}",
            "status=completed page 2": "/experiments?status=completed&page=2",
            "compare 3 runs": "/compare?runs=1,2,4"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    rng = random.Random(2025)
    with tempfile.TemporaryDirectory() as tmp, mongo_server(Path(tmp) / "state") as (url, _):
        dash = None
        try:
            db = pymongo.MongoClient(url)["bench"]
            migrations = load_migrations()
            model = build_model(migrations, len(migrations))
            for name in ("experiments", "epochs"):
                for spec in model.index_specs(name):
                    db[name].create_index(list(spec.keys), name=spec.name)
            db["experiments"].insert_many(experiments(1, args.small + 1, rng))
            port = free_port()
            dash = subprocess.Popen(
                [sys.executable, "-m", "syncd", "dashboard", "--listen", f"127.0.0.1:{port}",
                 "--mongo-url", url, "--database", "bench", "--state-dir", str(Path(tmp) / "d")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    timed(base + "/api/health", 1)
                    break
                except OSError:
                    if time.monotonic() > deadline or dash.poll() is not None:
                        raise SystemExit("syncd dashboard did not start") from None
                    time.sleep(0.2)
            small = {name: timed(base + path, args.rounds)
                     for name, path in pages(args.small).items()}
            small["(count_documents, pymongo)"] = floor(db, args.rounds)
            for start in range(args.small + 1, args.runs + 1, 2000):
                db["experiments"].insert_many(
                    experiments(start, min(start + 2000, args.runs + 1), rng))
            large = {name: timed(base + path, args.rounds)
                     for name, path in pages(args.runs).items()}
            large["(count_documents, pymongo)"] = floor(db, args.rounds)
        finally:
            if dash is not None:
                dash.terminate()
                dash.wait(30)
    print(f"{'page':<26}{args.small:>8,} runs{args.runs:>10,} runs{'ratio':>8}")
    for name in small:
        print(f"{name:<26}{small[name]:>11.3f} s{large[name]:>11.3f} s"
              f"{large[name] / small[name]:>8.2f}")
    worst = max(v for k, v in large.items() if not k.startswith("("))
    print(f"slowest page at {args.runs:,} runs: {worst:.3f} s (goal < {GOAL_SECONDS} s: "
          f"{'met' if worst < GOAL_SECONDS else 'NOT met'})")


if __name__ == "__main__":
    main()
