"""The local tier (issue 24): shards of file generations under Redis, on real servers.

Every test has its own tier directory (and XDG_CACHE_HOME, tests/conftest.py) and a
real Redis warmed by syncd's own follower; values are compared with h5py's.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from syncd.api.hdf5 import hdf5_follower  # noqa: E402
from syncd.client import batch_pool  # noqa: E402
from syncd.client.cache import WindowCache  # noqa: E402
from syncd.client.dataset import CachedWindowDataset  # noqa: E402
from syncd.client.local_tier import LocalTier, LocalTierOptions  # noqa: E402
from tests.hdf5_support import make_settings, write_h5  # noqa: E402
from tests.test_hdf5_dataset import assert_same, legacy_items  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GB = 1 << 30


def shard_bytes(n: int, channels: int = 8, times: int = 100) -> int:
    """A shard's size for n windows of the test shape (float64 labels), header included."""
    return 4096 + -(-(n * channels * times * 4) // 64) * 64 + n * 8


@pytest.fixture
def files(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=30, seed=1, compression="gzip")
    write_h5(d / "b.h5", n=20, seed=2, layout="data")
    write_h5(d / "c.h5", n=25, seed=3, dtype="f8", chunks=(5, 8, 100), compression="gzip")
    write_h5(d / "d.h5", n=30, seed=4)
    follower = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient)
    follower.warm()
    return [d / "a.h5", d / "b.h5", d / "c.h5", d / "d.h5"], follower


def dataset(paths, redis_url, prefix, tier_dir, budget=GB, **kw):
    return CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix, local_dir=tier_dir,
                               local_bytes=budget, **kw)


def tier_stats(tier_dir, budget=GB):
    return LocalTier(LocalTierOptions(tier_dir, budget)).stats()


def test_batches_come_from_the_shards_exactly(files, redis_url, prefix, tmp_path):
    paths, _ = files
    tier = tmp_path / "tier"
    ds = dataset(paths[:3], redis_url, prefix, tier)
    expected = legacy_items(paths[:3])
    order = [int(i) for i in np.random.default_rng(0).permutation(len(ds))]
    assert_same(ds.__getitems__(order), [expected[i] for i in order])  # fills, then reads
    assert ds.local_counts()["fills"] == 3
    assert_same(ds.__getitems__(order[:10]), [expected[i] for i in order[:10]])
    assert_same(ds.__getitems__([0, 1, 29]), [*expected[0:2], expected[29]])  # one file
    assert ds.local_counts()["hits"] == len(order) + 13
    assert ds.cache_counts()["hits"] == 0  # Redis was read only to fill
    ds.close()
    assert {k: tier_stats(tier)[k] for k in ("shards", "fills", "bad", "filling")} == \
        {"shards": 3, "fills": 3, "bad": 0, "filling": 0}
    assert sorted(p.stat().st_mode & 0o777 for p in tier.glob("*.shard")) == [0o600] * 3

    # Two workers map the same shards (no new fill) and hand on the batch tensor.
    loader = DataLoader(ds, batch_size=8, sampler=order, num_workers=2)
    seen = [w for eeg, label in loader for w in zip(eeg, label)]
    assert_same(seen, [expected[i] for i in order])
    assert tier_stats(tier)["fills"] == 3 and tier_stats(tier)["hits"] >= 2 * len(order)


@pytest.mark.parametrize("budget", [GB, 0])
def test_without_redis_the_warning_says_where_windows_come_from(tmp_path, monkeypatch, caplog,
                                                                budget):
    """No Redis anywhere: the one warning names the local tier when it is on (it fills
    from the files and serves every batch after), the HDF5 files when it is off."""
    monkeypatch.delenv("SYNCD_REDIS_URL", raising=False)
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    path, tier = tmp_path / "a.h5", tmp_path / "tier"
    write_h5(path, n=12, seed=5)
    with caplog.at_level(logging.WARNING, logger="syncd.client.dataset"):
        ds = CachedWindowDataset([path], state_dir=tmp_path / "no-state", local_dir=tier,
                                 local_bytes=budget)
    (line,) = [r.getMessage() for r in caplog.records if "no Redis cache" in r.getMessage()]
    for _ in range(2):
        assert_same(ds.__getitems__(list(range(12))), legacy_items([path]))
    counts = ds.local_counts()
    ds.close()
    if budget:
        assert "local tier" in line and str(tier) in line, line
        assert counts["fills"] == 1 and counts["hits"] == 24, counts
    else:
        assert "the HDF5 files" in line and "local tier" not in line, line
        assert counts["hits"] == 0, counts


def test_window_cache_reads_and_fills_the_tier(files, rclient, prefix, tmp_path):
    paths, _ = files
    tier = LocalTier(LocalTierOptions(tmp_path / "tier", GB))
    cache = WindowCache(rclient, prefix, local_tier=tier)
    meta = cache.file(str(paths[2]))
    from_redis = cache.get_windows(meta, [4, 0, 24])
    labels = cache.get_labels(meta)
    assert cache.local_shard(meta) is None
    shard = cache.fill_local(meta)
    assert shard is not None and cache.local_shard(meta) is shard
    for got, want in zip(cache.get_windows(meta, [4, 0, 24]), from_redis):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_array_equal(cache.get_labels(meta), labels)


def test_a_rewrite_in_use_serves_only_the_new_generation(files, redis_url, prefix, tmp_path):
    paths, follower = files
    tier = tmp_path / "tier"
    ds = dataset([paths[0]], redis_url, prefix, tier, recheck_seconds=0.3)
    old = legacy_items([paths[0]])
    assert_same(ds.__getitems__(list(range(30))), old)
    assert ds.local_counts()["fills"] == 1

    write_h5(paths[0], n=30, seed=99)  # rewritten while the Dataset holds the old shard
    new = legacy_items([paths[0]])
    assert not np.array_equal(old[0][0], new[0][0])
    for _ in range(3):  # at once and after: never a window of the old generation
        assert_same(ds.__getitems__(list(range(30))), new)
    follower.warm()  # Redis gets the next generation
    time.sleep(0.35)  # the recheck interval: the new generation gets its shard
    hits = ds.local_counts()["hits"]
    assert_same(ds.__getitems__(list(range(30))), new)
    assert ds.local_counts()["fills"] == 2 and ds.local_counts()["hits"] == hits + 30
    assert len(list(tier.glob("*.shard"))) == 1  # the old generation's was unlinked


FILL_SCRIPT = """
import sys, time
from pathlib import Path
from syncd.client.cache import WindowCache
from syncd.client.local_tier import LocalTier, LocalTierOptions
from syncd.connect.redis import connect_redis
url, prefix, path, tier, start = sys.argv[1:6]
while not Path(start).exists():
    time.sleep(0.005)
cache = WindowCache(connect_redis(url), prefix,
                    local_tier=LocalTier(LocalTierOptions(Path(tier), 1 << 30)))
shard = cache.fill_local(str(path), wait=True)
cache.local_tier.flush()
print("filled" if cache.local_tier.counts["fills"] else "found", shard.layout.size)
"""


def run_fill(redis_url, prefix, path, tier, start, env=None):
    return subprocess.Popen([sys.executable, "-c", FILL_SCRIPT, redis_url, prefix, str(path),
                             str(tier), str(start)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_kill_9_during_a_fill_leaves_no_shard_that_is_read(files, redis_url, prefix, tmp_path):
    paths, _ = files
    tier = tmp_path / "tier"
    start = tmp_path / "go"
    start.touch()
    proc = run_fill(redis_url, prefix, paths[0], tier, start, {"SYNCD_CRASH_AT": "local_fill"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    assert [p.suffix for p in tier.glob("*.*tmp")] == [".tmp"]  # the fill's remains only
    assert not list(tier.glob("*.shard")) and tier_stats(tier)["shards"] == 0

    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([paths[0]]))
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 1, "bad": 0}
    assert not list(tier.glob("*.tmp"))  # the killed fill's file was removed


def test_a_truncated_or_overwritten_shard_is_rebuilt_never_served(files, redis_url, prefix,
                                                                  tmp_path):
    paths, _ = files
    tier = tmp_path / "tier"
    expected = legacy_items([paths[0]])
    ds = dataset([paths[0]], redis_url, prefix, tier)
    ds.__getitems__([0])
    ds.close()
    (shard,) = tier.glob("*.shard")
    full = shard.stat().st_size
    os.truncate(shard, full - 5000)  # nobody maps it now (a reader that did would SIGBUS)

    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), expected)
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 1, "bad": 1}
    assert shard.stat().st_size == full
    ds.close()

    with shard.open("r+b") as f:  # same size, other bytes: the stamp no longer matches
        f.seek(full - 100)
        f.write(b"\x7f" * 50)
    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), expected)
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 1, "bad": 1}
    assert tier_stats(tier)["bad"] == 2


def test_the_budget_holds_with_more_files_than_fit(files, redis_url, prefix, tmp_path):
    paths, _ = files
    tier = tmp_path / "tier"
    budget = shard_bytes(30) * 2 + shard_bytes(20) // 2  # a.h5 and d.h5 fit, not a third
    for path in [paths[0], paths[1], paths[3], paths[2], paths[0]]:
        ds = dataset([path], redis_url, prefix, tier, budget)
        assert_same(ds.__getitems__(list(range(len(ds)))), legacy_items([path]))
        assert ds.local_counts()["hits"] == len(ds)
        assert tier_stats(tier, budget)["bytes"] <= budget
        ds.close()
    assert tier_stats(tier, budget)["shards"] == 2

    # Shards in use are never evicted: c.h5 then is served from Redis, and a.h5 stays.
    held = dataset([paths[0], paths[3]], redis_url, prefix, tier, budget)
    held.__getitems__([0, 40])
    assert held.local_counts()["hits"] == 2
    other = dataset([paths[2]], redis_url, prefix, tier, budget)
    assert_same(other.__getitems__(list(range(25))), legacy_items([paths[2]]))
    assert other.local_counts()["misses"] == 25 and other.cache_counts()["hits"] == 25
    assert held.local_counts()["hits"] == 2 and tier_stats(tier, budget)["shards"] == 2
    assert_same(held.__getitems__(list(range(60))), legacy_items([paths[0], paths[3]]))


def test_two_processes_filling_one_shard_make_one_good_shard(files, redis_url, prefix,
                                                             tmp_path):
    paths, _ = files
    tier = tmp_path / "tier"
    start = tmp_path / "go"
    procs = [run_fill(redis_url, prefix, paths[3], tier, start) for _ in range(2)]
    time.sleep(1.0)  # both started and waiting
    start.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(out.split()[0] for out, _ in outs) == ["filled", "found"]
    assert len(list(tier.glob("*.shard"))) == 1 and not list(tier.glob("*.tmp"))
    assert tier_stats(tier)["fills"] == 1
    ds = dataset([paths[3]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([paths[3]]))
    assert ds.local_counts()["fills"] == 0 and ds.local_counts()["bad"] == 0


def test_workers_send_a_buffer_descriptor_once(files, redis_url, prefix, tmp_path):
    """Issue 21 item 10: after a buffer's first batch only a token travels; the training
    process maps each buffer once and forgets the buffers of workers that exited."""
    paths, _ = files
    ds = dataset(paths, redis_url, prefix, tmp_path / "tier")
    expected = sorted(legacy_items(paths), key=lambda item: item[1])
    for _ in range(2):  # each epoch starts new workers (new pools)
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
        seen = []
        for eeg, label in loader:  # 27 batches, each dropped at once
            seen += [(e.clone(), lab) for e, lab in zip(eeg, label)]
        assert_same(sorted(seen, key=lambda item: item[1].item()), expected)
        assert 0 < len(batch_pool._mapped) <= 2 * batch_pool.MAX_BUFFERS < 27  # mapped once
    tokens = {token for token, _ in batch_pool._mapped}
    assert len(tokens) <= 2  # the first epoch's workers' mappings are gone


def test_warm_local_fills_the_tier_and_cache_stats_shows_it(tmp_path, target_args, redis_url,
                                                            prefix):
    """`syncd warm --local` then `syncd cache stats`: the host's tier, its bytes and
    counters (the tier under XDG_CACHE_HOME, tests/conftest.py)."""
    import json

    from tests.conftest import run_cli
    from tests.test_hdf5_cli import config_file

    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "r1.h5", n=25, compression="gzip")
    write_h5(d / "r2.h5", n=5, layout="data")
    cfg = config_file(tmp_path, prefix, extractors="[]")
    args = ["--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg, *target_args]
    result = run_cli("warm", "--local", *args)
    assert result.code == 0, result
    tier = Path(os.environ["XDG_CACHE_HOME"]) / "syncd" / "local"
    assert f"local tier {tier}: 2 file(s) filled, 0 already there" in result.out
    assert len(list(tier.glob("*.shard"))) == 2
    again = run_cli("warm", "--local", "--json", *args)
    assert again.code == 0, again
    assert len(json.loads(again.out)["local"]["present"]) == 2

    ds = CachedWindowDataset([d / "r1.h5", d / "r2.h5"], config=cfg, redis_url=redis_url)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([d / "r1.h5", d / "r2.h5"]))
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 0, "bad": 0}
    ds.close()
    stats = run_cli("cache", "stats", "--json", "--redis-url", redis_url, "--config", cfg)
    local = json.loads(stats.out)["local"]
    assert {k: local[k] for k in ("directory", "shards", "hits", "misses", "fills")} == \
        {"directory": str(tier), "shards": 2, "hits": 30, "misses": 0, "fills": 2}
    text = run_cli("cache", "stats", "--redis-url", redis_url, "--config", cfg)
    assert f"local tier (this host) {tier}: " in text.out and "30 hits" in text.out


def test_the_dashboard_shows_the_hosts_local_tier(files, db, rclient, redis_url, prefix,
                                                  tmp_path):
    import json

    from syncd.api.http_options import http_context, http_options
    from syncd.config import load_settings
    from syncd.http.app import build_app
    from syncd.http.server import HttpServer
    from tests.http_support import request

    paths, _ = files
    tier = tmp_path / "tier"
    ds = dataset(paths[:2], redis_url, prefix, tier)
    ds.__getitems__(list(range(50)))
    ds.close()
    cfg = tmp_path / "http.toml"
    cfg.write_text('[http]\nlisten = "127.0.0.1:0"\n')
    settings = load_settings({"config": str(cfg), "database": db.name})
    options = http_options(settings)
    ctx = http_context(settings, db, rclient, local_tier=LocalTierOptions(tier, GB))
    with HttpServer(build_app(ctx, options), options) as server:
        status, _, body = request(server, "/api/cache")
        assert status == 200
        local = json.loads(body)["local"]
        assert (local["shards"], local["fills"], local["hits"]) == (2, 2, 50)
        status, _, html = request(server, "/cache")
        assert status == 200 and 'data-testid="local-tier"' in html and str(tier) in html
