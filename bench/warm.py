"""Warm throughput and Redis memory, against h5py's own slab reads of the same file.

Writes a gzip window cache exactly as the legacy script does
(`create_dataset("eeg", data=X, compression="gzip", compression_opts=4)`, h5py's
automatic chunks), then, in the same run and alternating, for `--rounds` rounds:

- baseline: h5py reads the windows in chunk-aligned slabs (`ds[a:b]`), one thread;
- warm: a fresh `Hdf5Follower.warm()` (index with fingerprint, read, write to a real
  Redis), features off, timed end to end, with `--workers` inflating threads
  (default: `[hdf5] warm_workers`' default, one per usable CPU, at most 8).

It prints MB/s of window data for both and their ratio (goal >= 1.3 on 2 cores,
>= 3 on 8 or more), and the Redis memory used by the cache divided by the raw window
bytes (goal <= 1.10). For information: each round also warms with one worker (what
libdeflate alone gives, against what the threads add), and a last warm has band-power
features on.

    python -m bench.warm [--windows 2000] [--rounds 5] [--workers N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bench.harness import describe, redis_server, result
from legacy_adapters.hdf5_slabs import default_workers
from syncd.api.hdf5 import hdf5_follower
from syncd.api.options import endpoints
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.connect.redis import connect_redis
from syncd.hdf5.files import HDF5_FILES

CHANNELS, TIMES = 129, 200  # the EEG2025 windows: 129 channels x 2 s at 100 Hz


def write_legacy_file(path: Path, n: int) -> int:
    rng = np.random.default_rng(2025)
    with h5py.File(path, "w") as f:
        data = np.empty((n, CHANNELS, TIMES), np.float32)
        for a in range(0, n, 250):
            b = min(n, a + 250)
            walk = np.cumsum(rng.standard_normal((b - a, CHANNELS, TIMES), dtype=np.float32),
                             axis=2)
            data[a:b] = walk * 2 + rng.standard_normal((b - a, CHANNELS, TIMES),
                                                       dtype=np.float32) * 5
        f.create_dataset("eeg", data=data, compression="gzip", compression_opts=4)
        f.create_dataset("labels", data=rng.random(n), compression="gzip", compression_opts=4)
        f.attrs.update({"release": "R1", "n_windows": n, "n_channels": CHANNELS,
                        "n_timepoints": TIMES, "sfreq": 100.0})
        return int(data.nbytes)


def h5py_slab_read(path: Path) -> float:
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f["eeg"]
        c0 = ds.chunks[0]
        row = CHANNELS * TIMES * 4
        step = max(c0, (8 << 20) // row // c0 * c0)
        for a in range(0, ds.shape[0], step):
            ds[a:a + step]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="warm_workers (default: one per usable CPU, at most 8)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="syncd-bench-warm-"))
    (work / "h5").mkdir()
    path = work / "h5" / "R1_challenge1_windows.h5"
    raw = write_legacy_file(path, args.windows)
    with h5py.File(path, "r") as f:
        chunks = f["eeg"].chunks
    print(f"file: {args.windows} windows of {CHANNELS}x{TIMES} float32 = {raw / 1e6:.0f} MB raw, "
          f"{path.stat().st_size / 1e6:.0f} MB gzip-4 on disk, chunks {chunks}; "
          f"{args.workers} warm workers")

    try:
        with redis_server(work / "state") as url:
            client = connect_redis(url)
            try:
                rates = measure(args, work, path, raw, client)
            finally:
                client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_rates, warm_rates, one_rates, memory = rates
    report(base_rates, warm_rates, one_rates, memory)


def measure(args: argparse.Namespace, work: Path, path: Path, raw: int,
            client: Any) -> tuple[list[float], list[float], list[float], list[float]]:
    """Alternating rounds of h5py's slab read and syncd's warm: MB/s each, and memory."""
    settings = Settings(hdf5_dirs=[work / "h5"], state_dir=work / "state", source_id="bench")
    base_rates, warm_rates, one_rates, memory = [], [], [], []

    def warm_once(target: Any, workers: int, features: bool) -> tuple[float, int]:
        """A fresh warm of the file: (seconds, Redis memory it added)."""
        client.flushall()
        target.db[HDF5_FILES].delete_many({})
        settings.extra = {"hdf5": {"debounce_seconds": 0.0, "warm_workers": workers},
                          "cache": {"max_bytes": 4 * raw},
                          "features": {"extractors": ["band_power"] if features else []}}
        before = client.info("memory")["used_memory"]
        started = time.perf_counter()
        report = hdf5_follower(settings, target.db, client).warm()
        seconds = time.perf_counter() - started
        assert report.windows_written == args.windows, report
        return seconds, client.info("memory")["used_memory"] - before

    with open_target(endpoints(settings)) as target:
        for rnd in range(args.rounds):
            seconds = h5py_slab_read(path)
            warm_seconds, used = warm_once(target, args.workers, False)
            base_rates.append(raw / seconds / 1e6)
            warm_rates.append(raw / warm_seconds / 1e6)
            memory.append(used / raw)
            line = (f"round {rnd + 1}: h5py slab read {base_rates[-1]:.0f} MB/s, "
                    f"syncd warm {warm_rates[-1]:.0f} MB/s, "
                    f"ratio {warm_rates[-1] / base_rates[-1]:.2f}; "
                    f"Redis memory / raw {memory[-1]:.3f}")
            if args.workers != 1:
                one_rates.append(raw / warm_once(target, 1, False)[0] / 1e6)
                line += f"; one worker {one_rates[-1] / base_rates[-1]:.2f}"
            print(line)
        warm_seconds, _ = warm_once(target, args.workers, True)
        print(f"with band_power features (information): {raw / warm_seconds / 1e6:.0f}"
              f" MB/s of windows")
    return base_rates, warm_rates, one_rates, memory


def report(base_rates: list[float], warm_rates: list[float], one_rates: list[float],
           memory: list[float]) -> None:
    ratios = [w / b for w, b in zip(warm_rates, base_rates)]
    print(f"machine: {describe()} ({default_workers()} usable)")
    print(f"warm {statistics.median(warm_rates):.0f} MB/s against h5py "
          f"{statistics.median(base_rates):.0f} MB/s (medians of {len(ratios)} rounds; rounds "
          f"{min(ratios):.2f} to {max(ratios):.2f})")
    if one_rates:
        ones = [w / b for w, b in zip(one_rates, base_rates)]
        print(f"one worker / h5py (information): {statistics.median(ones):.2f} (rounds "
              f"{min(ones):.2f} to {max(ones):.2f})")
    result("warm / h5py single-thread", f"{statistics.median(ratios):.2f}",
           " (goal >= 1.3 on 2 cores, >= 3 on 8+ cores)")
    result("Redis memory / raw window bytes", f"{statistics.median(memory):.3f}",
           " (goal <= 1.10)")


if __name__ == "__main__":
    main()
