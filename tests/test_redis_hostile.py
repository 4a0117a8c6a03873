"""A hostile Redis under the window cache: lost writes, full memory, neighbours' keys.

Real redis-server processes (tests/hdf5_support.RedisProcess) that the tests restart
from an older snapshot, fill to `maxmemory`, or write into behind syncd's back. The
rule: a reader never gets a wrong window (a miss read from the file is fine), and
what syncd says about a failure is one line that says what to do.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from syncd.api.hdf5 import hdf5_follower  # noqa: E402
from syncd.client.cache import WindowCache  # noqa: E402
from syncd.client.dataset import CachedWindowDataset  # noqa: E402
from syncd.hdf5.files import HDF5_FILES  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.hdf5_support import RedisProcess, make_settings, write_h5  # noqa: E402
from tests.test_hdf5_dataset import assert_same, legacy_items  # noqa: E402


@pytest.fixture
def redis_server(tmp_path):
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def small_redis_and_files(tmp_path, policy: str):
    """A Redis of 2 MB `maxmemory` with `policy`, started, and four files holding 2.6 MB
    of windows (200 each) in tmp_path/h5."""
    server = RedisProcess(tmp_path / policy, "--maxmemory", "2mb",
                          "--maxmemory-policy", policy)
    server.start()
    d = tmp_path / "h5"
    d.mkdir()
    paths = [d / f"f{i}.h5" for i in range(4)]
    for i, path in enumerate(paths):
        write_h5(path, n=200, seed=i)
    return server, d, paths


def test_a_redis_that_lost_writes_never_serves_a_deleted_files_windows(tmp_path, db,
                                                                        redis_server):
    """A file deleted and written again at the same path (new content, same shape), then
    Redis restarted from a snapshot taken before: the snapshot still holds the old
    content's windows and labels. Neither the warm nor a reader may take them for the
    new content's, also after the file is touched (same bytes, new mtime)."""
    d = tmp_path / "h5"
    d.mkdir()
    path = d / "a.h5"
    write_h5(path, n=20, seed=1)
    settings = make_settings(tmp_path, [d])
    client = redis_server.client()
    hdf5_follower(settings, db, client).warm()
    client.save()  # what a Redis with `save` rules has on disk
    path.unlink()
    follower = hdf5_follower(settings, db, client)
    follower.scan_once()
    assert db[HDF5_FILES].count_documents({}) == 0
    write_h5(path, n=20, seed=99)
    follower.warm()
    client.close()

    redis_server.kill()
    redis_server.start()  # loads the older snapshot: acknowledged writes are lost
    client = redis_server.client()
    follower = hdf5_follower(settings, db, client)
    follower.warm()
    os.utime(path)  # a touch: same bytes, new mtime
    follower.warm()

    expected = legacy_items([path])
    cache = WindowCache(client, "syncd")
    meta = cache.file(str(path))
    for i, value in enumerate(cache.get_windows(meta, list(range(20)))):
        assert value is None or np.array_equal(value, expected[i][0]), f"window {i}"
    ds = CachedWindowDataset([path], redis_url=redis_server.url, prefix="syncd",
                             local_bytes=0)
    assert_same(ds.__getitems__(list(range(len(ds)))), expected)
    ds.close()
    # The old content's keys (of a generation no document names any more) are gone.
    values = [k for k in client.scan_iter(match="syncd:[wl]:*") if f":{meta.gen}".encode()
              not in k]
    assert values == []
    client.close()


def test_a_full_redis_with_noeviction_is_one_line_that_says_what_to_do(tmp_path, db,
                                                                        target_args):
    """Redis at `maxmemory` with `noeviction` refuses writes (OOM): `syncd warm` stops
    with exit 1 and a line naming the setting to change, and its summary counts every
    file's windows, not only those of the files it got to."""
    server, d, _ = small_redis_and_files(tmp_path, "noeviction")
    try:
        cfg = tmp_path / "syncd.toml"
        cfg.write_text("[hdf5]\ndebounce_seconds = 0\n[features]\nextractors = []\n")
        result = run_cli("warm", "--hdf5-dir", d, "--redis-url", server.url, "--config", cfg,
                         *target_args)
        assert result.code == 1, result
        failed = [line for line in result.out.splitlines() if line.startswith("failed:")]
        assert len(failed) == 1, result
        assert "maxmemory" in failed[0] and "[cache] max_bytes" in failed[0], failed
        cache_line = next(line for line in result.out.splitlines() if line.startswith("cache:"))
        assert "/800 windows" in cache_line and "(100%)" not in cache_line, cache_line
    finally:
        server.kill()


def test_a_tls_url_against_a_plain_text_redis_says_so(tmp_path, db, target_args, redis_server):
    """`rediss://` to a port serving plain text: the TLS handshake never completes. One
    line that says the port may not serve TLS (not only "not reachable"), without the
    password."""
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=4)
    url = f"rediss://:hunter2secret@127.0.0.1:{redis_server.port}/0"
    result = run_cli("warm", "--hdf5-dir", d, "--redis-url", url, "--redis-timeout", "1",
                     *target_args)
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "TLS" in lines[0], result
    assert "hunter2secret" not in result.out + result.err


def test_windows_evicted_by_allkeys_lru_are_read_from_the_files(tmp_path, db, caplog):
    """A shared Redis smaller than the cache (`maxmemory` + `allkeys-lru`): it evicts
    windows, labels and metadata as it likes. The Dataset reads what is gone from the
    files, never takes an absent key for anything else, and the next pass sees the
    evictions and warms again. syncd says once that the budget is above maxmemory (the
    churn is otherwise silent)."""
    server, d, paths = small_redis_and_files(tmp_path, "allkeys-lru")
    try:
        client = server.client()
        follower = hdf5_follower(make_settings(tmp_path, [d]), db, client)
        with caplog.at_level("WARNING", logger="syncd"):
            follower.warm()
        said = [r.getMessage() for r in caplog.records if "maxmemory" in r.getMessage()]
        assert len(said) == 1 and "below [cache] max_bytes (1024.0 MiB)" in said[0], said
        assert client.info("stats")["evicted_keys"] > 0
        ds = CachedWindowDataset(paths, redis_url=server.url, prefix="syncd", local_bytes=0)
        assert_same(ds.__getitems__(list(range(len(ds)))), legacy_items(paths))
        counts = ds.cache_counts()
        assert counts["misses"] > 0 and counts["bad"] == 0, counts
        ds.close()
        caplog.clear()
        assert follower.scan_once().windows_written > 0  # the evictions were noticed
        assert not [r for r in caplog.records if "maxmemory" in r.getMessage()]  # said once
        client.close()
    finally:
        server.kill()
