"""`syncd warm`, `syncd cache stats` and the HDF5 part of `syncd status`, end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import redis

from syncd.client.cache import CacheError, FileMeta, WindowCache, check_dtype, decode
from syncd.embedded import EmbeddedRedis
from tests.conftest import run_cli
from tests.hdf5_support import write_h5


def config_file(tmp_path, prefix, extractors='["band_power"]', extra=""):
    path = tmp_path / "syncd.toml"
    path.write_text(f"""
[hdf5]
debounce_seconds = 0
[cache]
prefix = "{prefix}"
max_bytes = 50_000_000
[features]
extractors = {extractors}
{extra}
""")
    return path


def test_warm_then_status_and_cache_stats(tmp_path, target_args, db, redis_url, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    windows, _ = write_h5(d / "r1.h5", n=25, compression="gzip", compression_opts=4)
    write_h5(d / "r2.h5", n=5, layout="data")
    (d / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    cfg = config_file(tmp_path, prefix, extractors="[]")
    args = ["--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg, *target_args]

    result = run_cli("warm", *args)
    assert result.code == 0, result
    assert "30 windows" in result.out
    assert "1 quarantined" in result.out and "quarantined " + str(d / "broken.h5") in result.out
    assert "30/30 windows (100%)" in result.out

    cache = WindowCache(redis.Redis.from_url(redis_url), prefix)
    got = cache.get_windows(str(d / "r1.h5"), list(range(25)))
    np.testing.assert_array_equal(np.stack(got), windows)

    status = run_cli("status", "--json", *args)
    assert status.code == 3, status  # no syncd run follows this database
    hdf5 = json.loads(status.out)["hdf5"]
    assert hdf5["states"] == {"warm": 2, "quarantined": 1}
    assert hdf5["windows_cached"] == 30 and hdf5["coverage"] == 1.0
    assert hdf5["quarantined"][0]["path"] == str(d / "broken.h5")
    assert hdf5["memory"]["budget_bytes"] == 50_000_000
    assert hdf5["memory"]["redis_used_memory"] > 0
    text = run_cli("status", *args)
    assert "hdf5 files: 3 (1 quarantined, 2 warm)" in text.out
    assert f"quarantined {d / 'broken.h5'}: " in text.out

    stats = run_cli("cache", "stats", "--json", "--redis-url", redis_url, "--config", cfg)
    assert stats.code == 0, stats
    data = json.loads(stats.out)
    assert data["files"] == 2 and data["windows_cached"] == 30
    assert {f["path"] for f in data["per_file"]} == {str(d / "r1.h5"), str(d / "r2.h5")}

    again = run_cli("warm", "--json", *args)
    assert again.code == 0, again
    report = json.loads(again.out)
    assert report["windows_written"] == 0 and report["unchanged"] == 3


def test_warm_without_redis_url_runs_an_embedded_redis(tmp_path, target_args, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "r1.h5", n=4)
    state = tmp_path / "state"
    cfg = config_file(tmp_path, prefix, extractors="[]")
    result = run_cli("warm", "--hdf5-dir", d, "--state-dir", state, "--config", cfg,
                     *target_args)
    assert result.code == 0, result
    assert f"(embedded, data in {state / 'redis'}; saved and stopped when syncd exits)" \
        in result.out
    assert (state / "redis" / "redis.conf").exists()
    # It stopped with the command, saving its snapshot; the next command starts it again
    # on the same data, so the warm cache is still there.
    assert EmbeddedRedis(state).running_url() is None
    again = run_cli("warm", "--json", "--hdf5-dir", d, "--state-dir", state, "--config", cfg,
                    *target_args)
    assert again.code == 0, again
    report = json.loads(again.out)
    assert report["windows_written"] == 0 and report["windows_cached"] == 4


def test_configuration_errors_are_one_line_exit_2(tmp_path, target_args, redis_url, prefix,
                                                  monkeypatch):
    d = tmp_path / "h5"
    d.mkdir()
    cfg = config_file(tmp_path, prefix, extractors="[]")
    missing = run_cli("warm", "--redis-url", redis_url, "--config", cfg, *target_args)
    assert missing.code == 2 and "--hdf5-dir is not set" in missing.err
    assert len(missing.err.strip().splitlines()) == 1

    nodir = run_cli("warm", "--hdf5-dir", tmp_path / "nope", "--redis-url", redis_url,
                    "--config", cfg, *target_args)
    assert nodir.code == 2 and "no such directory" in nodir.err

    bad = config_file(tmp_path, prefix, extractors='["wavelets"]')
    unknown = run_cli("warm", "--hdf5-dir", d, "--redis-url", redis_url, "--config", bad,
                      *target_args)
    assert unknown.code == 2 and "unknown extractor 'wavelets'" in unknown.err

    typo = config_file(tmp_path, prefix, extractors="[]")
    typo.write_text(typo.read_text().replace("max_bytes", "max_byte"))
    wrong = run_cli("warm", "--hdf5-dir", d, "--redis-url", redis_url, "--config", typo,
                    *target_args)
    assert wrong.code == 2 and "unknown key 'max_byte'" in wrong.err

    # No torch installed (simulated): features fail with one clear line, nothing traced.
    monkeypatch.setitem(sys.modules, "torch", None)
    need_torch = run_cli("warm", "--hdf5-dir", d, "--redis-url", redis_url, "--config",
                         config_file(tmp_path, prefix), *target_args)
    assert need_torch.code == 2, need_torch
    assert "features need torch" in need_torch.err and "extractors = []" in need_torch.err
    assert "Traceback" not in need_torch.err

    pw = run_cli("cache", "stats", "--redis-url", "redis://:hunter2@127.0.0.1:1/0",
                 "--mongo-timeout", "0.5", "--config", cfg)
    assert pw.code == 2 and "not reachable" in pw.err
    assert "hunter2" not in pw.err + pw.out


def test_codec_refuses_anything_but_plain_numeric_arrays():
    assert check_dtype("<f4") == np.dtype("<f4")
    for bad in ("O", "|V8", "<c16", "<U4", "[('a', '<f4')]"):
        with pytest.raises(CacheError):
            check_dtype(bad)
    arr = np.arange(12, dtype="<f4").reshape(3, 4)
    np.testing.assert_array_equal(decode(arr.tobytes(), np.dtype("<f4"), (3, 4)), arr)
    with pytest.raises(CacheError, match="47 bytes, expected 48"):
        decode(arr.tobytes()[:-1], np.dtype("<f4"), (3, 4))
    raw = {b"fid": b"x", b"gen": b"1", b"path": b'"p"', b"n_windows": b"2",
           b"window_shape": b"[100000, 100000]", b"window_dtype": b'"<f8"',
           b"label_shape": b"[]", b"label_dtype": b'"<f4"'}
    with pytest.raises(CacheError, match="exceeds the value limit"):
        FileMeta.from_hash(raw)  # an 80 GB window
    raw[b"window_shape"], raw[b"window_dtype"] = b"[3]", b'"O"'
    with pytest.raises(CacheError, match="not allowed"):
        FileMeta.from_hash(raw)


def test_hdf5_events_trim_the_stream_to_the_configured_events_maxlen(
        tmp_path, target_args, redis_url, rclient, prefix):
    """`[daemon] events_maxlen = 10`: `syncd warm`'s HDF5 events (as syncd run's) trim a
    stream of 300 to about 10 (Redis trims whole nodes of 100: ~101), not to 100,000;
    and WindowCache(events_maxlen=10).publish does too."""
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "r1.h5", n=4)
    stream = f"{prefix}:events"
    for _ in range(300):
        rclient.xadd(stream, {"event": "{}"})
    cfg = config_file(tmp_path, prefix, extractors="[]", extra="[daemon]\nevents_maxlen = 10")
    result = run_cli("warm", "--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg,
                     *target_args)
    assert result.code == 0, result
    assert rclient.xlen(stream) < 150, rclient.xlen(stream)
    for _ in range(300):
        rclient.xadd(stream, {"event": "{}"})
    WindowCache(rclient, prefix, events_maxlen=10).publish({"type": "training.epoch"})
    assert rclient.xlen(stream) < 150, rclient.xlen(stream)


def test_client_put_get_and_events(rclient, prefix):
    cache = WindowCache(rclient, prefix)
    meta = cache.register("new-script", [4, 10], "float32", n_windows=3)
    windows = np.random.default_rng(0).standard_normal((3, 4, 10)).astype(np.float32)
    cache.put_windows(meta, 0, windows)
    cache.put_window(meta, 1, windows[2])
    got = cache.get_windows("new-script", [0, 1, 2])
    np.testing.assert_array_equal(got[0], windows[0])
    np.testing.assert_array_equal(got[1], windows[2])
    with pytest.raises(CacheError, match="do not match"):
        cache.put_window(meta, 0, windows[0].astype(np.float64))
    first = cache.publish({"type": "training.epoch", "epoch": 1, "val_loss": 0.5})
    cache.publish({"type": "training.epoch", "epoch": 2, "val_loss": 0.4})
    events = []
    for event_id, event in cache.subscribe("0", block_ms=50, stop=lambda: len(events) >= 2):
        events.append((event_id, event))
    assert events[0][0] == first
    assert [e["epoch"] for _, e in events] == [1, 2]


def test_migration_0003_declares_hdf5_files_and_verify_ignores_it(
        fixture_db, tmp_path, target_args, db, redis_url, prefix):
    migrated = run_cli("migrate", "--sqlite", fixture_db, *target_args)
    assert migrated.code == 0, migrated
    assert "hdf5_files" in db.list_collection_names()
    names = {ix["name"] for ix in db.hdf5_files.list_indexes()}
    assert {"source_id_1_path_1", "state_1", "mtime_ns_-1"} <= names

    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "r1.h5", n=3)
    cfg = config_file(tmp_path, prefix, extractors="[]")
    warmed = run_cli("warm", "--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg,
                     *target_args)
    assert warmed.code == 0, warmed
    # Replaying the tables neither touches nor complains about the indexer's collection.
    again = run_cli("migrate", "--sqlite", fixture_db, *target_args)
    assert again.code == 0, again
    assert db.hdf5_files.count_documents({}) == 1
    verified = run_cli("verify", "--sqlite", fixture_db, *target_args)
    assert verified.code == 0, verified
