"""Training-side read speed: CachedWindowDataset against the legacy h5py Dataset and raw MGET.

Writes `--files` gzip window caches as the legacy script does (h5py's automatic
chunks), warms them into a real Redis, and then, in the same run, measures
windows per second of:

- CachedWindowDataset through `DataLoader(batch_size=64, shuffled, num_workers=1)`;
- the legacy Dataset (the EEG2025 project's HDF5Dataset pattern: handles opened once,
  `f["eeg"][i]` per window, `torch.from_numpy(...).float()`), same DataLoader settings;
- CachedWindowDataset's batch fetch plus DataLoader's default collate, as DataLoader
  runs them with `num_workers=0`, against a bare `MGET` of the same keys (bytes only,
  no decoding, no tensors): in one process, alternating batch by batch, so both see
  the same machine (it is shared, and its speed varies by the second);
- the README's own loader, as a user copies it: `DataLoader(dataset, batch_size=64,
  shuffle=True, num_workers=2 and 4)`, no collate_fn, over 3 epochs of a Dataset of
  the files listed `--readme-repeat` times (its workers, and their batch buffers,
  start anew every epoch: an epoch must be long enough to be one), timed over the
  last two from each epoch's first batch (with each epoch's start: printed too),
  against raw MGET loops of as many shuffled batches right before and after it; then
  the same loader with the copying default collate it had before issue 21
  (information);
- CachedWindowDataset through `DataLoader(batch_size=64, shuffled, num_workers=2 and 4,
  collate_fn=collate_windows)` (one batch tensor from each worker, passed on as it is),
  timed after a first epoch (workers starting) over two more, against raw MGET loops
  of the same keys and batches run in this process right before and right after it:
  the rate at which batches reach the training loop.

Ratios printed (median of `--rounds` rounds, each ratio taken within its round):
cached / legacy with one worker each (goal >= 3), cached / raw MGET, both in-process
(goal >= 0.7), and the README's DataLoader and the collate_windows one, with 2 and with
4 workers / raw MGET (goal >= 0.8;
workers need cores of their own: on a machine with fewer free cores than workers plus
Redis plus the training loop they are CPU-bound). Also for information: the legacy
Dataset on files chunked one window per chunk (h5py's best case), and the one-worker
default-collate figure against raw MGET.

`--device cuda` also moves every batch of the 2-worker DataLoader (pinned memory) to
the GPU with `non_blocking=True`, synchronises at the end and prints batches and
windows per second arriving on the GPU; without CUDA it says so and exits with 2.

The local tier (issue 24: bench/dataset_local.py) against one numpy memmap of the same
windows, in the same run; `--only local` measures that part alone. The Redis-path
figures above run with the local tier off (`local_bytes=0`).

    python -m bench.dataset [--files 3] [--windows 600] [--legacy-windows 256]
                            [--rounds 3] [--readme-repeat 4] [--device cpu|cuda]
                            [--only local]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from bench.dataset_local import measure_local, readme_rate, report_local
from bench.harness import describe, load, redis_server, result
from syncd.api.hdf5 import hdf5_follower
from syncd.api.options import endpoints
from syncd.client.dataset import CachedWindowDataset, collate_windows
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.connect.redis import connect_redis

CHANNELS, TIMES, BATCH = 129, 200, 64
# 4 workers on fewer cores is measured on purpose (and said so in the output).
warnings.filterwarnings("ignore", message="This DataLoader will create")


class LegacyHDF5Dataset(Dataset):
    """The legacy per-window h5py Dataset (as the EEG2025 training scripts use it)."""

    def __init__(self, paths: list[Path]) -> None:
        self.files = [h5py.File(p, "r") for p in paths]
        self.cumulative = np.cumsum([0] + [len(f["eeg"]) for f in self.files])

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(np.searchsorted(self.cumulative, idx, side="right") - 1)
        local = idx - self.cumulative[j]
        eeg = torch.from_numpy(self.files[j]["eeg"][local]).float()
        label = torch.tensor(self.files[j]["labels"][local]).float()
        return eeg, label


def write_files(folder: Path, count: int, n: int, chunks: object = True) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        walk = np.cumsum(rng.standard_normal((n, CHANNELS, TIMES), dtype=np.float32), axis=2)
        data = (walk * 2 + rng.standard_normal((n, CHANNELS, TIMES), dtype=np.float32) * 5)
        path = folder / f"R{i + 1}_challenge1_windows.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("eeg", data=data.astype(np.float32), compression="gzip",
                             compression_opts=4, chunks=chunks)
            f.create_dataset("labels", data=rng.random(n), compression="gzip",
                             compression_opts=4)
            f.attrs.update({"release": f"R{i + 1}", "sfreq": 100.0})
        paths.append(path)
    return paths


def loader_rate(dataset: Dataset, limit: int, workers: int = 1) -> float:
    """Windows per second through DataLoader(batch 64, shuffled), `limit` windows."""
    sampler = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler[:limit].tolist(),
                        num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up is not part of the rate
    started, seen = time.perf_counter(), 0
    for eeg, _ in it:
        seen += len(eeg)
    return seen / (time.perf_counter() - started)


def batches_of(n: int, limit: int, epochs: int = 1) -> list[list[int]]:
    """`epochs` shuffled passes over the first `limit` windows of a permutation, as
    index batches of 64 (the same for every measure in a run)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].tolist()
    return [order[a:a + BATCH] for _ in range(epochs) for a in range(0, limit, BATCH)]


def raw_mget_rate(client: object, keys: list[str], batches: list[list[int]]) -> float:
    """Windows/s of bare `MGET`s of the batches' keys in this process (bytes only)."""
    client.mget([keys[i] for i in batches[0]])
    started = time.perf_counter()
    for batch in batches[1:]:
        client.mget([keys[i] for i in batch])
    return BATCH * (len(batches) - 1) / (time.perf_counter() - started)


def batched_rate(dataset: Dataset, batches: list[list[int]], workers: int,
                 device: str = "cpu", warm_up: int = 0) -> tuple[float, float]:
    """Windows/s and batches/s reaching the training loop (on `device`: moved there
    from pinned memory with non_blocking=True, synchronised at the end) through
    `DataLoader(num_workers=workers, collate_fn=collate_windows)`, timed after the
    first `warm_up` batches (workers starting, connecting, filling their buffers)."""
    cuda = device == "cuda"
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                        collate_fn=collate_windows, pin_memory=cuda)
    started, seen, count = time.perf_counter(), 0, 0
    for n, (eeg, labels) in enumerate(loader):
        if cuda:
            eeg = eeg.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
        if n < warm_up:
            continue
        if n == warm_up:
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            continue
        seen += len(eeg)
        count += 1
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return seen / elapsed, count / elapsed


def loader_against_raw(dataset: Dataset, client: object, keys: list[str],
                       batches: list[list[int]], workers: int, warm_up: int,
                       device: str = "cpu") -> tuple[float, float, float]:
    """The DataLoader's rate between two raw MGET loops over the same batches (the
    raw rate is their mean, time-weighted, so a drift in the machine's load while
    measuring weighs on both sides): (loader windows/s, batches/s, raw windows/s)."""
    before = raw_mget_rate(client, keys, batches[warm_up:])
    windows, per_batch = batched_rate(dataset, batches, workers, device, warm_up)
    after = raw_mget_rate(client, keys, batches[warm_up:])
    return windows, per_batch, 2 / (1 / before + 1 / after)


def copying_collate(batch: list) -> list:
    """What the README's loader ran before issue 21: the default collate stacking a copy
    of every batch (the pairs as plain tuples, so the batch tensor is not recognised)."""
    return default_collate([tuple(pair) for pair in batch])


def readme_against_raw(dataset: Dataset, client: object, keys: list[str],
                       batches: list[list[int]], workers: int
                       ) -> tuple[float, float, float, float]:
    """`readme_rate` between two raw MGET loops of as many shuffled batches of 64 (the
    raw rate their time-weighted mean), then the same loader with `copying_collate`:
    (loader windows/s, the same with each epoch's worker start, raw windows/s, the
    copying loader's windows/s)."""
    before = raw_mget_rate(client, keys, batches)
    flowing, whole = readme_rate(dataset, workers)
    after = raw_mget_rate(client, keys, batches)
    copying, _ = readme_rate(dataset, workers, collate_fn=copying_collate)
    return flowing, whole, 2 / (1 / before + 1 / after), copying


def interleaved_rates(dataset: CachedWindowDataset, client: object, keys: list[str],
                      limit: int) -> tuple[float, float]:
    """In one process, batch by batch and alternating (so both see the same machine):
    windows/s of the Dataset's batch fetch plus DataLoader's default collate, and of a
    bare `MGET` of the same keys (bytes only, no decoding, no tensors)."""
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))[:limit]
    batches = [order[a:a + BATCH].tolist() for a in range(0, limit, BATCH)]
    dataset_s = mget_s = 0.0
    default_collate(dataset.__getitems__(batches[0]))
    for batch in batches[1:]:
        t0 = time.perf_counter()
        default_collate(dataset.__getitems__(batch))
        t1 = time.perf_counter()
        client.mget([keys[i] for i in batch])
        t2 = time.perf_counter()
        dataset_s += t1 - t0
        mget_s += t2 - t1
    n = BATCH * (len(batches) - 1)
    return n / dataset_s, n / mget_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--windows", type=int, default=600, help="windows per file")
    parser.add_argument("--legacy-windows", type=int, default=256,
                        help="windows the (slow) legacy Dataset reads a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--readme-repeat", type=int, default=4,
                        help="the README loader's Dataset lists the files this many times")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: also measure batches arriving on the GPU")
    parser.add_argument("--only", choices=("local",), help="local: the local tier alone")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda: CUDA is not available here (torch {torch.__version__}); "
              "nothing measured", file=sys.stderr)
        sys.exit(2)

    work = Path(tempfile.mkdtemp(prefix="syncd-bench-dataset-"))
    (work / "h5").mkdir()
    (work / "h5-per-window").mkdir()
    paths = write_files(work / "h5", args.files, args.windows)
    per_window = write_files(work / "h5-per-window", args.files, args.windows,
                             chunks=(1, CHANNELS, TIMES))
    with h5py.File(paths[0], "r") as f:
        print(f"{args.files} files x {args.windows} windows of {CHANNELS}x{TIMES} float32, "
              f"gzip-4, chunks {f['eeg'].chunks} (h5py's automatic choice)")

    try:
        with redis_server(work / "state") as url:
            client = connect_redis(url)
            try:
                rates = measure(args, work, paths, per_window, url, client)
            finally:
                client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, rates)


def measure(args: argparse.Namespace, work: Path, paths: list[Path], per_window: list[Path],
            url: str, client: object) -> dict[str, list[float]]:
    """Warm the files, then `--rounds` rounds of every reader: windows/s by name."""
    total = args.files * args.windows
    settings = Settings(hdf5_dirs=[work / "h5"], state_dir=work / "state", source_id="b",
                        extra={"hdf5": {"debounce_seconds": 0.0},
                               "features": {"extractors": []}})
    with open_target(endpoints(settings)) as target:
        report = hdf5_follower(settings, target.db, client).warm()
        assert report.windows_cached == total, report

    cached = CachedWindowDataset(paths, redis_url=url, local_bytes=0)
    assert len(cached) == total
    # The README's loader starts its workers (and their batch buffers) anew every
    # epoch: measured on the files listed --readme-repeat times, so that an epoch
    # is long enough to be one (a real one is tens of thousands of windows or more).
    readme_set = CachedWindowDataset(paths * args.readme_repeat, redis_url=url, local_bytes=0)
    keys = []
    for spec in cached.specs:
        fid = client.hget(cached.keys.files, spec.path).decode()
        gen = int(client.hget(cached.keys.file(fid), "gen"))
        keys += cached.keys.windows(fid, gen, range(spec.n))

    limit = total - total % BATCH
    rates: dict[str, list[float]] = {k: [] for k in (
        "cached1", "cached0", "mget", "legacy", "best", "raw2", "loader2", "raw4",
        "loader4", "readme_raw2", "readme2", "readme2_start", "readme_raw4", "readme4",
        "readme4_start", "readme2_copying", "readme4_copying", "gpu", "gpu_batches", "raw_gpu")}
    epochs = batches_of(total, limit, epochs=3)
    warm_up = limit // BATCH  # the first epoch: workers start and fill their buffers
    legacy = LegacyHDF5Dataset(paths)
    best = LegacyHDF5Dataset(per_window)
    for _ in range(args.rounds):
        measure_local(rates, paths, args.readme_repeat, url, work, epochs[:warm_up])
        if args.only == "local":
            print("round: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items() if v))
            continue
        rates["cached1"].append(loader_rate(cached, limit, workers=1))
        rates["legacy"].append(loader_rate(legacy, args.legacy_windows, workers=1))
        rates["best"].append(loader_rate(best, limit, workers=1))
        in_process, bare = interleaved_rates(cached, client, keys, limit)
        rates["cached0"].append(in_process)
        rates["mget"].append(bare)
        for workers in (2, 4):
            windows, _, raw = loader_against_raw(cached, client, keys, epochs, workers,
                                                 warm_up)
            rates[f"raw{workers}"].append(raw)
            rates[f"loader{workers}"].append(windows)
            flowing, whole, raw, copying = readme_against_raw(readme_set, client, keys,
                                                              epochs[warm_up:], workers)
            rates[f"readme{workers}_copying"].append(copying)
            rates[f"readme_raw{workers}"].append(raw)
            rates[f"readme{workers}"].append(flowing)
            rates[f"readme{workers}_start"].append(whole)
        if args.device == "cuda":
            windows, batches, raw = loader_against_raw(cached, client, keys, epochs, 2,
                                                       warm_up, "cuda")
            rates["gpu"].append(windows)
            rates["gpu_batches"].append(batches)
            rates["raw_gpu"].append(raw)
        print("round: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items() if v))
    return rates


def report(args: argparse.Namespace, rates: dict[str, list[float]]) -> None:
    if args.only == "local":
        print(f"machine: {describe()}, torch {torch.__version__}, load average {load()}")
        return report_local(rates)
    med = {k: statistics.median(v) for k, v in rates.items() if v}

    def ratio(a: str, b: str) -> float:  # per round (same moment), then the median
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    print(f"CachedWindowDataset, 1 worker:             {med['cached1']:,.0f} windows/s")
    print(f"legacy h5py Dataset, 1 worker, same files: {med['legacy']:,.1f} windows/s "
          f"({args.legacy_windows} windows a round)")
    print(f"legacy h5py Dataset, one window per chunk: {med['best']:,.0f} windows/s "
          "(information: h5py's best case)")
    print(f"CachedWindowDataset, in-process:           {med['cached0']:,.0f} windows/s")
    print(f"raw MGET loop, same keys and batches:      {med['mget']:,.0f} windows/s")
    for workers in (2, 4):
        print(f"DataLoader, {workers} workers, collate_windows: {med[f'loader{workers}']:,.0f} "
              f"windows/s (raw MGET just before and after: {med[f'raw{workers}']:,.0f} "
              "windows/s)")
    for workers in (2, 4):
        print(f"README DataLoader (shuffle, default collate), {workers} workers: "
              f"{med[f'readme{workers}']:,.0f} windows/s, {med[f'readme{workers}_start']:,.0f} "
              f"with each epoch's worker start (raw MGET just before and after: "
              f"{med[f'readme_raw{workers}']:,.0f} windows/s); with the copying collate it "
              f"had before issue 21: {med[f'readme{workers}_copying']:,.0f} windows/s")
    if args.device == "cuda":
        print(f"on the GPU ({torch.cuda.get_device_name()}), 2 workers, pinned memory, "
              f"non_blocking copies: {med['gpu_batches']:,.1f} batches/s, "
              f"{med['gpu']:,.0f} windows/s ({ratio('gpu', 'raw_gpu'):.2f} of raw MGET)")
    print(f"machine: {describe()}, torch {torch.__version__}, load average {load()}")
    report_local(rates)
    if (os.cpu_count() or 1) < 6:
        print("note: the DataLoader ratios need a core for each worker, the training loop and "
              "Redis; on this machine the workers share too few cores (CPU-bound)")
    result("cached / legacy (1 worker each)", f"{ratio('cached1', 'legacy'):,.1f}",
           f" (goal >= 3); against h5py's best case: {ratio('cached1', 'best'):.1f}")
    result("cached / raw MGET (in-process)", f"{ratio('cached0', 'mget'):.2f}",
           f" (goal >= 0.7); with 1 worker: {ratio('cached1', 'mget'):.2f}")
    for workers in (2, 4):
        result(f"DataLoader {workers} workers / raw MGET",
               f"{ratio(f'loader{workers}', f'raw{workers}'):.2f}", " (goal >= 0.8)")
    for workers in (2, 4):
        result(f"README DataLoader (batch_size=64, shuffle=True, num_workers={workers}, "
               "no collate_fn) / raw MGET",
               f"{ratio(f'readme{workers}', f'readme_raw{workers}'):.2f}",
               " (goal >= 0.8); with each epoch's worker start: "
               f"{ratio(f'readme{workers}_start', f'readme_raw{workers}'):.2f}; the copying "
               "collate it had before: "
               f"{ratio(f'readme{workers}_copying', f'readme_raw{workers}'):.2f}")


if __name__ == "__main__":
    main()
