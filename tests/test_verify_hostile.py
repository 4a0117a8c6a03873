"""`syncd verify` against a target changed behind syncd's back: history versions, documents
of no source, cache values and metadata in Redis. Each must be a difference (exit 1) that
names what differs, and the cache's must be repaired by a warm."""

from __future__ import annotations

import json

import numpy as np
import redis
from bson import ObjectId

from syncd.client.cache import WindowCache
from syncd.sample import make_eeg2025
from syncd.sinks.checksum import unseal
from tests.conftest import run_cli
from tests.hdf5_support import make_settings, write_h5


def _migrated(tmp_path, target_args):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=2, seed=5)
    done = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert done.code == 0, done
    assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0
    return legacy


def test_history_that_no_longer_gives_the_rows_back_is_a_difference(tmp_path, target_args,
                                                                      db):
    legacy = _migrated(tmp_path, target_args)
    history = db["_syncd_history"]
    run = history.find_one({"table": "training_runs", "key": [1]})
    status = run["cols"].index("status")
    history.update_one({"_id": run["_id"]}, {"$set": {f"vals.{status}": "tampered"}})
    subject = history.find_one({"table": "subjects"})
    history.delete_one({"_id": subject["_id"]})
    history.insert_one(dict(run, _id=ObjectId(), doc=ObjectId(), key=[999], rowid=999))

    found = run_cli("verify", "--sqlite", legacy, *target_args)
    assert found.code == 1, found
    assert "the row's last version in history differs from the row, e.g. " \
           '{"run_id": 1}' in found.out
    assert "history holds no version of the row" in found.out
    assert 'history holds a row the table no longer has (no delete recorded), e.g. ' \
           '{"key": [999]}' in found.out
    totals = json.loads(run_cli("verify", "--json", "--sqlite", legacy, *target_args).out)
    assert totals["totals"]["history_different"] == 1
    assert totals["totals"]["history_missing"] == 1
    assert totals["totals"]["history_extra"] == 1


def test_a_document_of_no_source_is_a_difference(tmp_path, target_args, db):
    """Every reader (`syncd experiments`, the dashboard) shows it; no source compares it."""
    legacy = _migrated(tmp_path, target_args)
    stray = db.experiments.find_one()
    stray.pop("_source")
    stray["_id"] = ObjectId()
    db.experiments.insert_one(stray)
    found = run_cli("verify", "--sqlite", legacy, *target_args)
    assert found.code == 1, found
    assert f"collection experiments: 1 document(s) of no source (no _source), e.g. " \
           f"{stray['_id']}: no source's verify compares them" in found.out


def test_a_bad_cache_value_or_metadata_is_named_and_a_warm_repairs_it(
        tmp_path, target_args, db, redis_url, prefix):
    legacy = _migrated(tmp_path, target_args)
    d = tmp_path / "h5"
    d.mkdir()
    a, _ = write_h5(d / "a.h5", n=6, seed=1)
    b, _ = write_h5(d / "b.h5", n=6, seed=2)
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f'[hdf5]\ndebounce_seconds = 0\n[cache]\nprefix = "{prefix}"\n'
                   "[features]\nextractors = []\n")
    args = ["--sqlite", legacy, "--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg,
            *target_args]
    assert run_cli("warm", *args).code == 0
    clean = run_cli("verify", *args)
    assert clean.code == 0 and "cache: 2 file(s), 14 value(s) checked: each as written" \
        in clean.out, clean

    client = redis.Redis.from_url(redis_url)
    cache = WindowCache(client, prefix)
    ma, mb = cache.file(str(d / "a.h5")), cache.file(str(d / "b.h5"))
    key = cache.keys.window(ma.fid, ma.gen, 2)
    value = bytearray(client.get(key))
    value[10] ^= 0xFF  # same length
    client.set(key, bytes(value))
    k0, k1 = cache.keys.windows(mb.fid, mb.gen, [0, 1])
    v0, v1 = client.get(k0), client.get(k1)
    client.set(k0, v1)
    client.set(k1, v0)
    found = run_cli("verify", *args)
    assert found.code == 1, found
    assert f"cache: {d / 'a.h5'} window 2: cached value fails its checksum ({key})" in found.out
    assert f"cache: {d / 'b.h5'} window 0: cached value fails its checksum" in found.out
    assert f"cache: {d / 'b.h5'} window 1: cached value fails its checksum" in found.out

    # Metadata that reads as other data: readers would take int32 for the float32 windows.
    client.hset(cache.keys.file(ma.fid), "window_dtype", '"<i4"')
    found = run_cli("verify", *args)
    assert found.code == 1
    assert "Redis' metadata and the index (hdf5_files) disagree on window_dtype (Redis '<i4', " \
           "index '<f4')" in found.out

    assert run_cli("warm", *args).code == 0  # the repair
    again = run_cli("verify", *args)
    assert again.code == 0, again
    np.testing.assert_array_equal(np.stack(cache.get_windows(str(d / "a.h5"), range(6))), a)
    np.testing.assert_array_equal(np.stack(cache.get_windows(str(d / "b.h5"), range(6))), b)
    assert cache.bad_values == 0


def test_the_daemons_full_passes_find_a_bad_value_within_their_share(tmp_path, db, rclient,
                                                                      prefix):
    """`syncd run` reads back a share of the values per full pass (here two windows), from
    where the last one stopped and going round every file: a corrupted value in the file
    warmed last is found and written again."""
    from syncd.api.hdf5 import hdf5_follower

    (tmp_path / "h5").mkdir()
    last = tmp_path / "h5" / "last.h5"
    windows, _ = write_h5(last, n=8, seed=1)
    write_h5(tmp_path / "h5" / "first.h5", n=8, seed=2)  # newer: warmed and read first
    settings = make_settings(tmp_path, [tmp_path / "h5"], prefix, hdf5={"verify_seconds": 0})
    follower = hdf5_follower(settings, db, rclient, scrub_bytes=2 * windows[0].nbytes)
    follower.warm()
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(last))
    key = cache.keys.window(meta.fid, meta.gen, 5)
    value = bytearray(rclient.get(key))
    value[-1] ^= 1
    rclient.set(key, bytes(value))

    passes = 0
    while passes < 12:
        passes += 1
        if follower.scan_once().windows_written:
            break
    unseal(key, rclient.get(key), meta.window_bytes)  # raises if still bad
    assert passes > 1  # a share per pass, not the whole cache
    assert follower.scan_once().windows_written == 0  # nothing rewritten again
