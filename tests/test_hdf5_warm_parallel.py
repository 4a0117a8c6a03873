"""Warming with several inflating workers: every window as h5py reads it, writers never blocked."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from legacy_adapters.hdf5_slabs import MAX_WORKERS, default_workers, inflate
from syncd.api.hdf5_options import load_hdf5_config
from syncd.client.cache import WindowCache
from syncd.errors import ConfigError
from tests.conftest import run_cli
from tests.hdf5_support import WRITER, eeg_like, make_settings, write_h5


def h5py_windows(path: Path, name: str) -> np.ndarray:
    """The windows as h5py itself reads them, in native byte order (what the cache holds)."""
    with h5py.File(path, "r", locking=False) as f:
        data = f[name][()]
    return data.astype(data.dtype.newbyteorder("="))


def assert_cache_is_h5py(cache: WindowCache, path: Path, name: str) -> None:
    expected = h5py_windows(path, name)
    meta = cache.file(str(path))
    assert meta is not None and meta.cached == len(expected)
    got = cache.get_windows(meta, list(range(meta.n_windows)))
    assert all(g is not None for g in got)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == e.dtype and g.tobytes() == e.tobytes(), f"{path.name} window {i}"


def write_sparse(path: Path, n: int) -> None:
    """A gzip file whose middle chunks were never written: h5py fills them."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("eeg", shape=(n, 8, 100), dtype="f4", chunks=(6, 8, 50),
                              compression="gzip", fillvalue=-1.5)
        ds[:12] = eeg_like(12, seed=5)
        ds[n - 7:] = eeg_like(7, seed=6)
        f.create_dataset("labels", data=np.arange(n, dtype="f8"))


FILES = {  # name: (windows dataset, write_h5 arguments)
    "legacy.h5": ("eeg", {"n": 203, "compression": "gzip", "compression_opts": 4}),
    "edges.h5": ("eeg", {"n": 97, "seed": 2, "dtype": "f8", "chunks": (5, 3, 30),
                         "shuffle": True, "compression": "gzip"}),
    "int16.h5": ("data", {"n": 61, "seed": 3, "layout": "data", "dtype": "<i2",
                          "chunks": (4, 8, 100), "shuffle": True, "compression": "gzip"}),
    "bigendian.h5": ("eeg", {"n": 58, "seed": 4, "dtype": ">f4", "chunks": (9, 8, 100),
                             "compression": "gzip", "compression_opts": 9}),
    "lzf.h5": ("eeg", {"n": 44, "seed": 5, "compression": "lzf"}),  # decoded by h5py
    "plain.h5": ("data", {"n": 33, "seed": 6, "layout": "data"}),     # contiguous
}


def test_parallel_warm_caches_every_window_as_h5py_reads_it(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    for name, (_, kwargs) in FILES.items():
        write_h5(d / name, **kwargs)
    write_sparse(d / "sparse.h5", 40)
    names = {**{n: w for n, (w, _) in FILES.items()}, "sparse.h5": "eeg"}

    # First a part of every file (a budget too small), then the rest from a window that
    # is not on a chunk boundary: both passes with 3 workers and 64 KiB slabs.
    from syncd.api.hdf5 import hdf5_follower

    settings = make_settings(tmp_path, [d], prefix, cache={"max_bytes": 700_000},
                             hdf5={"warm_workers": 3})
    follower = hdf5_follower(settings, db, rclient)
    follower.config = dataclasses.replace(follower.config, slab_bytes=64 << 10)
    report = follower.warm()
    assert report.quarantined == [] and report.workers == 3
    assert 0 < report.windows_written < sum(a["n"] for _, a in FILES.values()) + 40

    follower.config = dataclasses.replace(follower.config, max_bytes=1 << 30)
    report = follower.warm()
    assert report.quarantined == [] and report.windows_cached == report.windows_total
    cache = WindowCache(rclient, prefix)
    for name, dataset in names.items():
        assert_cache_is_h5py(cache, d / name, dataset)
    with h5py.File(d / "sparse.h5", "r") as f:  # the unwritten chunks read as the fill value
        assert (f["eeg"][20] == -1.5).all()


def test_inflate_decodes_what_zlib_wrote_and_refuses_a_damaged_chunk():
    import zlib

    data = eeg_like(3).tobytes()
    packed = zlib.compress(data, 4)
    assert bytes(inflate(packed, len(data))) == data
    with pytest.raises(zlib.error):
        inflate(packed[:-6] + b"garbag", len(data))


def test_a_legacy_writer_appends_while_a_parallel_warm_reads(tmp_path, db, rclient, prefix):
    from syncd.api.hdf5 import hdf5_follower

    d = tmp_path / "h5"
    d.mkdir()
    path = d / "growing.h5"
    write_h5(path, n=400, growable=True, compression="gzip", compression_opts=4)
    settings = make_settings(tmp_path, [d], prefix, hdf5={"warm_workers": 4, "slab_mb": 1})
    results = []

    def append_while_open(p, done):
        if not results:  # the file is open and slabs are being inflated right now
            for _ in range(3):  # three legacy appends of 8 windows, each its own open
                proc = subprocess.run([sys.executable, "-c", WRITER, "a", str(path)],
                                      capture_output=True, text=True, timeout=60)
                results.append((proc.returncode, proc.stdout.strip(), proc.stderr[-2000:]))

    follower = hdf5_follower(settings, db, rclient, on_slab=append_while_open)
    report = follower.scan_once()
    assert len(results) == 3 and all(r[:2] == (0, "ok") for r in results), results
    assert str(path) in report.changed_while_warming

    follower.on_slab = None
    report = follower.warm()
    assert report.indexed == [str(path)] and report.workers == 4
    cache = WindowCache(rclient, prefix)
    assert cache.file(str(path)).n_windows == 424
    assert_cache_is_h5py(cache, path, "eeg")


def test_warm_workers_setting_and_flag(tmp_path, target_args, redis_url, prefix):
    usable = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
    config = load_hdf5_config(make_settings(tmp_path, [tmp_path], prefix))
    assert config.warm_workers == default_workers() <= usable
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert default_workers(quota) == usable
    quota.write_text("100000 100000\n")  # a container limited to one CPU
    assert default_workers(quota) == 1
    old_name = make_settings(tmp_path, [tmp_path], prefix, hdf5={"workers": 3})
    assert load_hdf5_config(old_name).warm_workers == 3
    for bad in (-1, 2.5, "four"):
        with pytest.raises(ConfigError, match="warm_workers"):
            load_hdf5_config(make_settings(tmp_path, [tmp_path], prefix,
                                           hdf5={"warm_workers": bad}))

    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "r1.h5", n=30, compression="gzip")
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f'[hdf5]\ndebounce_seconds = 0\nwarm_workers = 2\n[cache]\nprefix = "{prefix}"'
                   '\n[features]\nextractors = []\n')
    args = ["--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg, *target_args]
    result = run_cli("warm", "--json", *args)
    assert result.code == 0 and json.loads(result.out)["workers"] == 2, result
    result = run_cli("warm", "--workers", "3", *args)
    assert result.code == 0 and "(3 workers)" in result.out, result
    result = run_cli("warm", "--workers", "0", *args)
    assert result.code == 2 and "--workers" in result.err
