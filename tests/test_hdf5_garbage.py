"""Garbage in the Redis cache is a counted miss that the next warm pass repairs, never
data and never a failed command; a quarantined file leaves no keys behind."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import redis

torch = pytest.importorskip("torch")

from syncd.api.hdf5 import hdf5_follower  # noqa: E402
from syncd.client.cache import WindowCache  # noqa: E402
from syncd.client.dataset import CachedWindowDataset  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.hdf5_support import make_settings, write_h5  # noqa: E402
from tests.test_hdf5_cli import config_file  # noqa: E402


def key_counts(client: redis.Redis, prefix: str) -> dict[str, int]:
    return {kind: sum(1 for _ in client.scan_iter(match=f"{prefix}:{kind}:*", count=1000))
            for kind in ("w", "l", "f", "file")}


def test_unreadable_metadata_is_a_miss_counted_and_rewritten(tmp_path, target_args, db,
                                                             redis_url, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    windows, _ = write_h5(d / "a.h5", n=20)
    cfg = config_file(tmp_path, prefix, extractors="[]")
    args = ["--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg, *target_args]
    assert run_cli("warm", *args).code == 0
    fid = rclient.hget(f"{prefix}:files", str(d / "a.h5")).decode()
    rclient.hset(f"{prefix}:file:{fid}", "n_windows", b"\xff\xfe{")

    ds = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    np.testing.assert_array_equal(ds[4][0].numpy(), windows[4])  # from the file
    assert ds.cache_counts()["hits"] == 0
    stats = run_cli("cache", "stats", "--json", "--redis-url", redis_url, "--config", cfg)
    assert stats.code == 0, stats
    assert [u["fid"] for u in json.loads(stats.out)["unreadable_metadata"]] == [fid]
    text = run_cli("cache", "stats", "--redis-url", redis_url, "--config", cfg)
    assert text.code == 0 and f"unreadable metadata for file id {fid}" in text.out

    warm = run_cli("warm", *args)
    assert warm.code == 0, warm
    assert f"unreadable cache metadata, written again: {d / 'a.h5'}" in warm.out
    assert WindowCache(rclient, prefix).file(str(d / "a.h5")).n_windows == 20
    again = run_cli("warm", "--json", *args)
    assert again.code == 0 and json.loads(again.out)["metadata_repaired"] == []
    stats = run_cli("cache", "stats", "--json", "--redis-url", redis_url, "--config", cfg)
    assert json.loads(stats.out)["unreadable_metadata"] == []
    ds = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    np.testing.assert_array_equal(ds[4][0].numpy(), windows[4])
    assert ds.cache_counts() == {"hits": 1, "misses": 0, "bad": 0}


def test_right_sized_garbage_is_a_counted_miss(tmp_path, db, rclient, redis_url, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    windows, _ = write_h5(d / "a.h5", n=10)
    hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient).warm()
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(d / "a.h5"))
    key = cache.keys.window
    size = len(rclient.get(key(meta.fid, meta.gen, 0)))
    rclient.set(key(meta.fid, meta.gen, 3), os.urandom(size))  # garbage of the right size
    rclient.set(key(meta.fid, meta.gen, 4), rclient.get(key(meta.fid, meta.gen, 5)))  # misplaced
    rclient.set(key(meta.fid, meta.gen, 6), windows[6].tobytes())  # right size, no checksum

    got = cache.get_windows(meta, list(range(10)))
    assert [i for i, w in enumerate(got) if w is None] == [3, 4, 6]
    assert cache.bad_values == 3
    ds = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    items = ds.__getitems__(list(range(10)))
    np.testing.assert_array_equal(np.stack([e.numpy() for e, _ in items]), windows)
    assert ds.cache_counts() == {"hits": 7, "misses": 3, "bad": 3}


def test_values_written_before_checksums_are_warmed_again(tmp_path, db, rclient, redis_url,
                                                          prefix):
    d = tmp_path / "h5"
    d.mkdir()
    windows, labels = write_h5(d / "a.h5", n=12)
    follower = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient)
    follower.warm()
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(d / "a.h5"))
    # What b72fb58 left in Redis: raw values, metadata without a format.
    for i in range(12):
        rclient.set(cache.keys.window(meta.fid, meta.gen, i), windows[i].tobytes())
    rclient.set(cache.keys.labels(meta.fid, meta.gen), labels.tobytes())
    rclient.hdel(cache.keys.file(meta.fid), "format")
    assert cache.file(meta.fid).format == 1
    ds = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    np.testing.assert_array_equal(ds[2][0].numpy(), windows[2])
    assert ds.cache_counts()["hits"] == 0  # an old format is a miss, not an error

    report = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient).scan_once()
    assert report.windows_written == 12 and report.windows_cached == 12
    got = cache.get_windows(str(d / "a.h5"), list(range(12)))
    np.testing.assert_array_equal(np.stack(got), windows)
    np.testing.assert_array_equal(cache.get_labels(str(d / "a.h5")), labels)
    ds = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    ds.__getitems__(list(range(12)))
    assert ds.cache_counts() == {"hits": 12, "misses": 0, "bad": 0}


def corrupt_last_chunk(path):
    with h5py.File(path, "r", locking=False) as f:
        ds = f["eeg"]
        info = ds.id.get_chunk_info_by_coord((ds.shape[0] - 1, 0, 0))
    with open(path, "r+b") as out:
        out.seek(info.byte_offset + 8)
        out.write(os.urandom(info.size - 16))


def test_a_file_quarantined_while_warming_leaves_no_keys(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=120, seed=1, times=1000, compression="gzip", chunks=(10, 8, 1000))
    settings = make_settings(tmp_path, [d], prefix, extractors=["band_power"])
    follower = hdf5_follower(settings, db, rclient)
    follower.warm()
    assert key_counts(rclient, prefix) == {"w": 120, "l": 1, "f": 120, "file": 1}
    # The file is rewritten with its last chunk corrupt: indexing succeeds, warming writes
    # the first slabs (1 MB: 30 windows each) with their features, then fails.
    write_h5(d / "a.h5", n=120, seed=1, times=1000, compression="gzip", chunks=(10, 8, 1000))
    corrupt_last_chunk(d / "a.h5")
    report = follower.warm()
    assert [q["path"] for q in report.quarantined] == [str(d / "a.h5")]
    assert key_counts(rclient, prefix) == {"w": 0, "l": 0, "f": 0, "file": 0}
    write_h5(d / "a.h5", n=120, seed=2, times=1000, compression="gzip", chunks=(10, 8, 1000))
    follower.warm()
    assert key_counts(rclient, prefix) == {"w": 120, "l": 1, "f": 120, "file": 1}


def test_a_retired_generation_left_by_a_crash_is_removed(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=300)
    follower = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient)
    follower.warm()
    # What a crash between quarantining the file in MongoDB and unlinking its keys leaves.
    doc = db.hdf5_files.find_one({"path": str(d / "a.h5")})
    db.hdf5_files.update_one({"_id": doc["_id"]}, {
        "$set": {"state": "quarantined", "error": "simulated"},
        "$push": {"stale_generations": {"generation": doc["generation"], "windows": 300,
                                        "features": []}}})
    assert key_counts(rclient, prefix)["w"] == 300
    follower.scan_once()
    assert key_counts(rclient, prefix) == {"w": 0, "l": 0, "f": 0, "file": 0}
    assert db.hdf5_files.find_one({"_id": doc["_id"]})["stale_generations"] == []
