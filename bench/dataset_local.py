"""The local tier's part of bench/dataset.py (issue 24), against one numpy memmap.

The baseline is the same windows (and labels) written once as one uncompressed `.npy`
and read through `np.load(mmap_mode="r")`, page cache warm: a random batch of 64 is
`torch.from_numpy(windows[idx])` plus `labels[idx]`. In the same run:

- the Dataset in-process with its local tier warm (its batch fetch plus DataLoader's
  default collate, as `num_workers=0` runs them) against the memmap batch, alternating
  batch by batch (goal >= 0.5);
- the README's DataLoader (2 and 4 workers, tier warm) against memmap loops of as
  many batches right before and after it (goal >= 0.5);
- a first epoch with the tier cold (filled from Redis while the epoch runs) against
  the same epoch with the tier off (today's Redis path), the README loader with 2
  workers, worker start included, alternating cold / off (goal: no slower, >= 1.0).
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from bench.harness import result
from syncd.client.dataset import CachedWindowDataset

BATCH = 64


def write_memmap(paths: list[Path], folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The files' windows (float32) and labels as one memmap each (written by the first
    round), read back mapped, page cache warm."""
    if not (folder / "labels.npy").exists():
        windows, labels = [], []
        for path in paths:
            with h5py.File(path, "r") as f:  # as the legacy Dataset of the same run opens it
                windows.append(f["eeg"][()].astype(np.float32))
                labels.append(f["labels"][()])
        np.save(folder / "windows.npy", np.concatenate(windows))
        np.save(folder / "labels.npy", np.concatenate(labels))
    mm = np.load(folder / "windows.npy", mmap_mode="r")
    lab = np.load(folder / "labels.npy", mmap_mode="r")
    np.asarray(mm).sum()  # every page read once
    return mm, lab


def memmap_batch(mm: np.ndarray, lab: np.ndarray, idx: list[int]) -> tuple[torch.Tensor, ...]:
    return torch.from_numpy(mm[idx]), torch.from_numpy(lab[idx]).float()


def memmap_rate(mm: np.ndarray, lab: np.ndarray, batches: list[list[int]]) -> float:
    memmap_batch(mm, lab, batches[0])
    started = time.perf_counter()
    for idx in batches[1:]:
        memmap_batch(mm, lab, idx)
    return BATCH * (len(batches) - 1) / (time.perf_counter() - started)


def in_process(ds: CachedWindowDataset, mm: np.ndarray, lab: np.ndarray,
               batches: list[list[int]]) -> tuple[float, float]:
    """Windows/s of the Dataset's batch (plus the default collate) and of the memmap
    batch, alternating batch by batch."""
    default_collate(ds.__getitems__(batches[0]))
    ours = base = 0.0
    for idx in batches[1:]:
        t0 = time.perf_counter()
        default_collate(ds.__getitems__(idx))
        t1 = time.perf_counter()
        memmap_batch(mm, lab, idx)
        t2 = time.perf_counter()
        ours += t1 - t0
        base += t2 - t1
    n = BATCH * (len(batches) - 1)
    return n / ours, n / base


def readme_rate(dataset: Dataset, workers: int, epochs: int = 3,
                collate_fn: object = None) -> tuple[float, float]:
    """The README's loader exactly as a user copies it: `DataLoader(dataset,
    batch_size=64, shuffle=True, num_workers=workers)`, no collate_fn, iterated
    `for eeg, label in loader` for `epochs` epochs. Windows/s reaching the loop over
    epochs 2.., each timed from its first batch (the README's loader starts its
    workers again every epoch: that start is left out, as in `batched_rate`), and the
    same with each epoch's start counted (information)."""
    extra = {} if collate_fn is None else {"collate_fn": collate_fn}
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, **extra)
    flowing = whole = 0.0
    seen = counted = 0
    for epoch in range(epochs):
        started = time.perf_counter()
        first = None
        for eeg, _ in loader:
            if first is None:
                first = time.perf_counter()
                n_first = len(eeg)
                continue
            seen += len(eeg) if epoch else 0
        ended = time.perf_counter()
        if epoch and first is not None:
            flowing += ended - first
            whole += ended - started
            counted += n_first
    return seen / flowing, (seen + counted) / whole


def first_epoch(ds: CachedWindowDataset, workers: int) -> float:
    """Windows/s of one README-loader epoch, worker start and (cold tier) fills included."""
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers)
    started, seen = time.perf_counter(), 0
    for eeg, _ in loader:
        seen += len(eeg)
    return seen / (time.perf_counter() - started)


def measure_local(rates: dict[str, list[float]], paths: list[Path], repeat: int, url: str,
                  work: Path, batches: list[list[int]]) -> None:
    """One round of the local-tier figures, appended to `rates`."""
    if "memmap" not in rates:
        (work / "memmap").mkdir(exist_ok=True)
        rates["memmap"] = []
    mm, lab = write_memmap(paths, work / "memmap")
    warm_dir = work / "tier-warm"
    ds = CachedWindowDataset(paths, redis_url=url, local_dir=warm_dir, local_bytes=1 << 40)
    ds.__getitems__(list(range(len(ds))))  # fills the tier
    ours, base = in_process(ds, mm, lab, batches)
    rates.setdefault("local0", []).append(ours)
    rates["memmap"].append(base)
    readme = CachedWindowDataset(paths * repeat, redis_url=url, local_dir=warm_dir,
                                 local_bytes=1 << 40)
    for workers in (2, 4):
        before = memmap_rate(mm, lab, batches)
        flowing, _ = readme_rate(readme, workers)
        after = memmap_rate(mm, lab, batches)
        rates.setdefault(f"local_readme{workers}", []).append(flowing)
        rates.setdefault(f"memmap{workers}", []).append(2 / (1 / before + 1 / after))
    cold_dir = work / "tier-cold"
    shutil.rmtree(cold_dir, ignore_errors=True)
    cold = CachedWindowDataset(paths * repeat, redis_url=url, local_dir=cold_dir,
                               local_bytes=1 << 40)
    off = CachedWindowDataset(paths * repeat, redis_url=url, local_bytes=0)
    rates.setdefault("cold_epoch", []).append(first_epoch(cold, 2))
    rates.setdefault("redis_epoch", []).append(first_epoch(off, 2))
    shutil.rmtree(cold_dir, ignore_errors=True)


def report_local(rates: dict[str, list[float]]) -> None:
    def med(k: str) -> float:
        return statistics.median(rates[k])

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    print(f"one numpy memmap (page cache warm), in-process: {med('memmap'):,.0f} windows/s")
    print(f"CachedWindowDataset, local tier warm, in-process: {med('local0'):,.0f} windows/s")
    for w in (2, 4):
        print(f"README DataLoader, {w} workers, local tier warm: "
              f"{med(f'local_readme{w}'):,.0f} windows/s (memmap before and after: "
              f"{med(f'memmap{w}'):,.0f})")
    print(f"first epoch (README loader, 2 workers, start included): tier cold "
          f"{med('cold_epoch'):,.0f} windows/s, tier off (Redis) {med('redis_epoch'):,.0f}")
    result("local tier warm / memmap (in-process)", f"{ratio('local0', 'memmap'):.2f}",
           " (goal >= 0.5)")
    for w in (2, 4):
        result(f"README DataLoader {w} workers, local tier warm / memmap",
               f"{ratio(f'local_readme{w}', f'memmap{w}'):.2f}", " (goal >= 0.5)")
    result("first epoch, local tier cold / tier off (Redis)",
           f"{ratio('cold_epoch', 'redis_epoch'):.2f}", " (goal >= 1.0: no slower)")
