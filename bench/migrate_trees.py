"""`syncd migrate` end to end (bench/backfill.py (a)) for several source trees, alternated.

For a change whose effect on (a) is small beside the machine's noise: each round runs
every tree's `python -m syncd migrate` (PYTHONPATH set to the tree) into a fresh
database of one embedded SecantusDB (`--sync-on-commit`), in order, then reversed the
next round (A B, B A, ...), and reads per run the wall time, the CPU time of the
`syncd migrate` process and the CPU time of the server. The first tree is the baseline.

    python -m bench.migrate_trees [--rows 50000] [--rounds 4] \
        main=/tmp/main-tree branch=.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from syncd.embedded import EmbeddedMongo
from syncd.sample import make_eeg2025


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("trees", nargs="+", help="NAME=PATH of a source tree")
    args = parser.parse_args()
    trees = [(n, str(Path(p).resolve())) for n, p in (t.split("=", 1) for t in args.trees)]
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-trees-"))
    db_path = work / "metadata.db"
    rows = sum(make_eeg2025(db_path, rows=args.rows).values())
    mongo = EmbeddedMongo(work / "state")
    url = mongo.start()
    server = mongo.process.pid if mongo.process is not None else None
    runs: dict[str, list[tuple[float, float, float]]] = {n: [] for n, _ in trees}
    try:
        for r in range(args.rounds):
            for name, tree in trees if r % 2 == 0 else trees[::-1]:
                cmd = [sys.executable, "-m", "syncd", "-q", "migrate", "--sqlite", str(db_path),
                       "--mongo-url", url, "--database", f"trees_{r}_{name}",
                       "--source-id", "bench-host", "--timezone", "UTC", "--chunk-size", "5000"]
                cpu0 = children_cpu()
                srv0 = cpu_seconds(server) if server else 0.0
                started = time.perf_counter()
                done = subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": tree},
                                      capture_output=True, text=True)
                wall = time.perf_counter() - started
                if done.returncode:
                    sys.exit(f"{name}: syncd migrate failed:\n{done.stderr[-2000:]}")
                run = (wall, children_cpu() - cpu0,
                       (cpu_seconds(server) - srv0) if server else float("nan"))
                runs[name].append(run)
                print(f"round {r} {name}: {wall:.2f} s; syncd CPU {run[1]:.2f} s, "
                      f"server CPU {run[2]:.2f} s", flush=True)
    finally:
        mongo.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = trees[0][0]

    def mean(name: str, i: int) -> float:
        return sum(r[i] for r in runs[name]) / len(runs[name])

    print(f"{rows:,} rows, {args.rounds} rounds, alternated; means (x the first tree's):")
    for name, _ in trees:
        print(f"{name}: wall {mean(name, 0):.2f} s (x{mean(name, 0) / mean(base, 0):.3f}), "
              f"min {min(r[0] for r in runs[name]):.2f} s; syncd CPU {mean(name, 1):.2f} s "
              f"(x{mean(name, 1) / mean(base, 1):.3f}); server CPU {mean(name, 2):.2f} s "
              f"(x{mean(name, 2) / mean(base, 2):.3f})")


if __name__ == "__main__":
    main()
