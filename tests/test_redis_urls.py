"""Redis URLs: what parses, what is refused (one line naming --redis-url, exit 2), what is
masked; and the upgrade of format-2 (untagged) and format-3 (one tag a file) cache keys."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from redis.crc import key_slot

from syncd.api.hdf5 import hdf5_follower
from syncd.client.cache import WindowCache
from syncd.connect.redis_urls import CLUSTER, SENTINEL, SINGLE, parse_redis_url
from syncd.errors import ConfigError
from syncd.logs import setup_logging
from syncd.redact import redact_url, register_url, scrub
from syncd.sinks.cache import Format2Keys, Format3Keys
from syncd.sinks.checksum import FORMAT
from syncd.sinks.slots import slot_tags
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
def test_new_schemes_are_masked(url, capsys):
    assert "s3cr3t" not in redact_url(f"connecting to {url} failed")
    register_url(url)
    assert "s3cr3t" not in scrub("AUTH s3cr3t refused")
    setup_logging()  # what every command does first: the handler masking each record
    logging.getLogger("syncd").warning("url %s", url)
    err = capsys.readouterr().err
    assert "WARNING syncd: url " in err and "s3cr3t" not in err


def test_every_cluster_slot_has_a_tag_of_its_own():
    """The cache spreads a file's blocks over chosen slots: each needs a tag landing there."""
    assert [key_slot(f"{{{tag}}}".encode()) for tag in slot_tags()] == list(range(16384))


@pytest.mark.parametrize("layout,fmt", [(Format2Keys, 2), (Format3Keys, 3)])
def test_older_format_keys_are_deleted_and_warmed_again(tmp_path, db, rclient, redis_url, prefix,
                                                        layout, fmt):
    """Keys of format 2 (no hash tag) or 3 (one tag per file generation): a miss to the
    Dataset (never data), then deleted and rewritten by the next warm."""
    (tmp_path / "h5").mkdir()
    path = tmp_path / "h5" / "r1.h5"
    windows, labels = write_h5(path, n=40)
    settings = make_settings(tmp_path, [tmp_path / "h5"], prefix)
    hdf5_follower(settings, db, rclient).warm()
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(path))
    old, new = layout(prefix), cache.keys
    # Make it what that format left: the same values under its names, its metadata format.
    for i in range(40):
        rclient.rename(new.window(meta.fid, meta.gen, i), old.window(meta.fid, meta.gen, i))
    if old.labels(meta.fid, meta.gen) != new.labels(meta.fid, meta.gen):
        rclient.rename(new.labels(meta.fid, meta.gen), old.labels(meta.fid, meta.gen))
    rclient.hset(new.file(meta.fid), "format", str(fmt))
    assert cache.file(str(path)).format == fmt
    assert not rclient.exists(*new.windows(meta.fid, meta.gen, range(40)))
    dataset = pytest.importorskip("syncd.client.dataset")  # needs torch
    ds = dataset.CachedWindowDataset([path], redis_url=redis_url, prefix=prefix, local_bytes=0)
    np.testing.assert_array_equal(np.stack([e.numpy() for e, _ in ds.__getitems__(
        list(range(40)))]), windows)
    assert ds.cache_counts() == {"hits": 0, "misses": 40, "bad": 0}
    ds.close()

    hdf5_follower(settings, db, rclient).warm()
    assert cache.file(str(path)).format == FORMAT
    assert rclient.exists(*old.windows(meta.fid, meta.gen, range(40))) == 0
    assert rclient.exists(*new.windows(meta.fid, meta.gen, range(40))) == 40
    np.testing.assert_array_equal(np.stack(cache.get_windows(str(path), list(range(40)))),
                                  windows)
    np.testing.assert_array_equal(cache.get_labels(str(path)), labels)

