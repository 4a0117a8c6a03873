"""Redis URLs: what parses, what is refused (one line naming --redis-url, exit 2), what is
masked; and the upgrade of format-2 cache keys (untagged) on a single server."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from syncd.client.cache import WindowCache
from syncd.connect.redis_urls import CLUSTER, SENTINEL, SINGLE, parse_redis_url
from syncd.errors import ConfigError
from syncd.hdf5.follower import Hdf5Follower
from syncd.redact import redact_url, register_url, scrub
from syncd.sinks.cache import Format2Keys
from tests.conftest import run_cli
from tests.hdf5_support import make_settings, write_h5


@pytest.mark.parametrize("url,kind,tls,hosts,db,master", [
    ("redis://h:7000/3", SINGLE, False, [("h", 7000)], 3, None),
    ("rediss://:pw@h", SINGLE, True, [("h", 6379)], 0, None),
    ("redis+sentinel://a:26379,b:26380/mymaster", SENTINEL, False,
     [("a", 26379), ("b", 26380)], 0, "mymaster"),
    ("redis+sentinel://:p%40ss@a/mymaster/2", SENTINEL, False, [("a", 26379)], 2, "mymaster"),
    ("redis+cluster://n1:7000,n2:7001,[::1]:7002", CLUSTER, False,
     [("n1", 7000), ("n2", 7001), ("::1", 7002)], 0, None),
    ("rediss+cluster://u:pw@n1:7000/?ssl_cert_reqs=none", CLUSTER, True, [("n1", 7000)], 0,
     None),
])
def test_urls_that_parse(url, kind, tls, hosts, db, master):
    parsed = parse_redis_url(url)
    assert (parsed.kind, parsed.tls, parsed.hosts, parsed.db, parsed.master) == \
        (kind, tls, hosts, db, master)


def test_password_with_at_sign_and_user():
    parsed = parse_redis_url("redis+cluster://me:a@b:c@n1:7000")
    assert (parsed.username, parsed.password, parsed.hosts) == ("me", "a@b:c", [("n1", 7000)])
    assert parse_redis_url("redis+sentinel://:p%40ss@a/m").password == "p@ss"


@pytest.mark.parametrize("url,why", [
    ("http://h:1", "must start with"),
    ("redis+sentinel://a:1", "no master name"),
    ("redis+cluster://a:1/2", "database 0 only"),
    ("redis+cluster://a:x", "not a number"),
    ("redis+cluster://a:1,,b:2", "empty host"),
    ("redis://a:1,b:2", "one host only"),
    ("redis+cluster://a:70000", "out of range"),
    ("redis+cluster://a:1?foo=1", "unknown option"),
])
def test_bad_urls_are_one_config_error_naming_the_flag(url, why):
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert str(info.value).startswith("--redis-url ") and why in str(info.value)


def test_bad_url_on_the_command_line_exits_2_without_the_password(tmp_path):
    result = run_cli("status", "--redis-url", "redis+sentinel://:s3cr3t@a:1",
                     "--state-dir", tmp_path)
    assert result.code == 2, result
    assert "--redis-url" in result.err and "no master name" in result.err
    assert "s3cr3t" not in result.out + result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["redis+sentinel://:s3cr3t@a:1,b:2/m/0",
                                 "rediss+cluster://user:s3cr3t@a:1,b:2",
                                 "redis+cluster://:s3cr3t@a:1"])
def test_new_schemes_are_masked(url, caplog):
    assert "s3cr3t" not in redact_url(f"connecting to {url} failed")
    register_url(url)
    assert "s3cr3t" not in scrub("AUTH s3cr3t refused")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("syncd").warning("url %s", url)
    assert "s3cr3t" not in caplog.text


def test_format2_keys_are_deleted_and_warmed_again(tmp_path, db, rclient, prefix):
    """Keys of format 2 (no hash tag) on a single server: a miss, then deleted and rewritten."""
    (tmp_path / "h5").mkdir()
    path = tmp_path / "h5" / "r1.h5"
    windows, labels = write_h5(path, n=12)
    settings = make_settings(tmp_path, [tmp_path / "h5"], prefix)
    Hdf5Follower(settings, db, rclient).warm()
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(path))
    old, new = Format2Keys(prefix), cache.keys
    # Make it what format 2 left: the same values under untagged names, metadata format 2.
    for i in range(12):
        rclient.rename(new.window(meta.fid, meta.gen, i), old.window(meta.fid, meta.gen, i))
    rclient.rename(new.labels(meta.fid, meta.gen), old.labels(meta.fid, meta.gen))
    rclient.hset(new.file(meta.fid), "format", "2")
    assert cache.file(str(path)).format == 2

    Hdf5Follower(settings, db, rclient).warm()
    assert cache.file(str(path)).format == 3
    assert rclient.exists(*old.windows(meta.fid, meta.gen, range(12))) == 0
    assert not rclient.exists(old.labels(meta.fid, meta.gen))
    np.testing.assert_array_equal(np.stack(cache.get_windows(str(path), list(range(12)))),
                                  windows)
    np.testing.assert_array_equal(cache.get_labels(str(path)), labels)
