"""`syncd sample PATH --hdf5-dir DIR`: the newcomer's HDF5 caches, through warm and cache stats.

Real servers: SecantusDB (conftest) and a real Redis (tests/hdf5_support.py).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import redis

from syncd.client.cache import WindowCache
from tests.conftest import ROOT, run_cli

NAMES = ["challenge1_R1_windows.h5", "challenge2_R1_windows.h5", "challenge1_R2_windows.h5",
         "challenge2_R2_windows.h5"]


def config(tmp_path: Path, key_prefix: str) -> Path:
    """The quick start's settings: no [features] table (the defaults), a prefix of the test's."""
    path = tmp_path / "syncd.toml"
    path.write_text(f'[hdf5]\ndebounce_seconds = 0\n[cache]\nprefix = "{key_prefix}"\n')
    return path


def test_sample_writes_caches_the_metadata_db_names(tmp_path):
    d = tmp_path / "h5"
    result = run_cli("sample", tmp_path / "m.db", "--hdf5-dir", d)
    assert result.code == 0, result
    assert sorted(p.name for p in d.iterdir()) == sorted(NAMES)
    assert "next: syncd warm --hdf5-dir" in result.out
    conn = sqlite3.connect(tmp_path / "m.db")
    rows = conn.execute("SELECT challenge, release, file_path, n_windows, n_channels, n_times, "
                        "checksum FROM cache_files ORDER BY cache_id").fetchall()
    assert [Path(r[2]).name for r in rows] == NAMES
    for challenge, release, file_path, n, channels, times, checksum in rows:
        path = Path(file_path)
        assert path == (d / path.name).resolve()
        assert hashlib.md5(path.read_bytes()).hexdigest() == checksum
        with h5py.File(path, "r") as f:
            windows, labels = ("eeg", "labels") if challenge == 1 else ("data", "targets")
            assert f[windows].shape == (n, channels, times) == (10, 129, 200)
            assert f[windows].dtype == np.float32 and f[windows].compression == "gzip"
            assert f[labels].shape == (n,)
            assert f.attrs["release"] == release and f.attrs["n_windows"] == n
            assert f.attrs["sfreq"] == 100.0
    assert conn.execute("SELECT value FROM config WHERE key = 'cache_dir'").fetchone() == \
        (str(d.resolve()),)
    conn.close()
    total = sum(p.stat().st_size for p in d.iterdir())
    assert 1_000_000 < total < 8_000_000  # a few MB
    assert f"({total / 2**20:.1f} MiB, " in result.out, result  # the unit warm says

    # The other tables are the seed's, as without --hdf5-dir.
    run_cli("sample", tmp_path / "plain.db")
    for table in ("training_runs", "epoch_history", "subjects"):
        a, b = (sqlite3.connect(tmp_path / n).execute(f"SELECT * FROM {table}").fetchall()
                for n in ("m.db", "plain.db"))
        assert a == b


def test_sample_is_deterministic_and_refuses_to_overwrite(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run_cli("sample", tmp_path / f"{name}.db", "--hdf5-dir", tmp_path / name,
                       "--files", "3", "--seed", seed).code == 0
    assert len(list((tmp_path / "a").iterdir())) == 3
    for n in NAMES[:3]:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
        assert (tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes()

    before = (tmp_path / "a" / NAMES[0]).read_bytes()
    refused = run_cli("sample", tmp_path / "new.db", "--hdf5-dir", tmp_path / "a",
                      "--seed", "2")
    assert refused.code == 2 and "exists" in refused.err and "--force" in refused.err
    assert not (tmp_path / "new.db").exists()  # nothing written at all
    assert not (tmp_path / "a" / NAMES[3]).exists()
    assert (tmp_path / "a" / NAMES[0]).read_bytes() == before
    forced = run_cli("sample", tmp_path / "a.db", "--hdf5-dir", tmp_path / "a", "--seed", "2",
                     "--files", "3", "--force")
    assert forced.code == 0, forced
    assert (tmp_path / "a" / NAMES[0]).read_bytes() == (tmp_path / "c" / NAMES[0]).read_bytes()
    assert run_cli("sample", tmp_path / "x.db", "--hdf5-dir", tmp_path / "x",
                   "--files", "11").code == 2
    assert run_cli("sample", "--help").code == 0


def test_sample_caches_warm_and_show_in_cache_stats(tmp_path, target_args, redis_url,
                                                   prefix):
    d = tmp_path / "h5"
    assert run_cli("sample", tmp_path / "m.db", "--hdf5-dir", d).code == 0
    cfg = config(tmp_path, prefix)
    args = ["--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg, *target_args]
    warm = run_cli("warm", *args)
    assert warm.code == 0, warm
    assert "4 indexed" in warm.out and "0 quarantined" in warm.out, warm.out
    assert "40/40 windows (100%)" in warm.out

    stats = run_cli("cache", "stats", "--json", "--redis-url", redis_url, "--config", cfg)
    assert stats.code == 0, stats
    data = json.loads(stats.out)
    assert data["files"] == 4 and data["windows_cached"] == 40
    assert {Path(f["path"]).name for f in data["per_file"]} == set(NAMES)
    text = run_cli("cache", "stats", "--redis-url", redis_url, "--config", cfg)
    assert "4 file(s); 40/40 windows cached (100%)" in text.out

    cache = WindowCache(redis.Redis.from_url(redis_url), prefix)
    path = d / "challenge2_R1_windows.h5"
    with h5py.File(path, "r") as f:
        expected = f["data"][()]
    got = cache.get_windows(str(path), list(range(10)))
    np.testing.assert_array_equal(np.stack(got), expected)

    # What a training script then reads: the same tensors as h5py, both layouts.
    from syncd.client.dataset import CachedWindowDataset  # torch: the [torch] extra

    paths = [d / n for n in NAMES]
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix, local_bytes=0)
    assert len(ds) == 40
    eeg, label = ds[13]  # the second file's (challenge 2, data + targets) fourth window
    with h5py.File(paths[1], "r") as f:
        np.testing.assert_array_equal(eeg.numpy(), f["data"][3])
        assert float(label) == np.float32(f["targets"][3])


def test_warm_without_torch_skips_the_default_features(tmp_path, target_args,
                                                       redis_url, prefix):
    """The quick-start install has no torch: warm caches windows, says so in one line."""
    d = tmp_path / "h5"
    assert run_cli("sample", tmp_path / "m.db", "--hdf5-dir", d, "--files", "2").code == 0
    cfg = config(tmp_path, prefix)
    no_torch = ("import sys; sys.modules['torch'] = None\n"  # `import torch` fails, as uninstalled
                "from syncd.cli.main import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", no_torch, "warm", "--json", "--hdf5-dir", str(d),
         "--redis-url", redis_url, "--config", str(cfg), *target_args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["windows_written"] == 20 and report["features_written"] == 0
    notes = [line for line in proc.stderr.splitlines() if "torch is not installed" in line]
    assert len(notes) == 1, proc.stderr
    # installing torch later reaches a running `syncd run` only through a restart: said
    assert "restart syncd run: it looks for torch only when it starts" in notes[0], notes
    stats = subprocess.run(  # computes no features: nothing to say of torch
        [sys.executable, "-c", no_torch, "cache", "stats", "--redis-url", redis_url,
         "--config", str(cfg), *target_args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert stats.returncode == 0 and "torch" not in stats.stderr, stats.stderr

    # Features asked for by name still need torch: one line, exit 2.
    cfg.write_text(cfg.read_text() + '[features]\nextractors = ["band_power"]\n')
    asked = subprocess.run(
        [sys.executable, "-c", no_torch, "warm", "--hdf5-dir", str(d), "--redis-url",
         redis_url, "--config", str(cfg), *target_args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert asked.returncode == 2 and "features need torch" in asked.stderr, asked.stderr
