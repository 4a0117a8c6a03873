"""CachedWindowDataset: the same windows as h5py, from Redis, falling back to the files.

Tests of the Redis path pass `local_bytes=0` (no local tier: tests/test_local_tier.py);
the others run with the tier on, as users do (tests/conftest.py gives it a private
directory).
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, default_collate  # noqa: E402

from syncd.api.hdf5 import hdf5_follower  # noqa: E402
from syncd.client.cache import WindowCache  # noqa: E402
from syncd.client.dataset import CachedWindowDataset, collate_windows  # noqa: E402
from tests.hdf5_support import RedisProcess, make_settings, write_h5  # noqa: E402


def legacy_items(paths):
    """What the legacy h5py Dataset returns: every (eeg, label) in file order, as float32."""
    out = []
    for path in paths:
        # locking=False like the dataset's own handles: HDF5 refuses two opens of one file
        # with different locking flags inside one process.
        with h5py.File(path, "r", locking=False) as f:
            names = ("eeg", "labels") if "eeg" in f else ("data", "targets")
            eeg, labels = f[names[0]][()], f[names[1]][()]
        out += [(eeg[i].astype(np.float32), np.float32(labels[i])) for i in range(len(eeg))]
    return out


def assert_same(items, expected):
    assert len(items) == len(expected)
    for (eeg, label), (want_eeg, want_label) in zip(items, expected):
        assert eeg.dtype == torch.float32 and label.dtype == torch.float32
        np.testing.assert_array_equal(eeg.numpy(), want_eeg)
        assert label.item() == want_label


@pytest.fixture
def warmed(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=37, seed=1, compression="gzip", compression_opts=4)
    write_h5(d / "b.h5", n=23, seed=2, layout="data")
    write_h5(d / "c.h5", n=18, seed=3, dtype="f8", chunks=(5, 8, 100), shuffle=True,
             compression="gzip")
    settings = make_settings(tmp_path, [d], prefix)
    follower = hdf5_follower(settings, db, rclient)
    follower.warm()
    return d, [d / "a.h5", d / "b.h5", d / "c.h5"], follower


def test_same_length_order_and_values_as_h5py(warmed, redis_url, prefix):
    _, paths, _ = warmed
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix, local_bytes=0)
    expected = legacy_items(paths)
    assert len(ds) == len(expected) == 78
    assert_same([ds[i] for i in range(len(ds))], expected)
    assert ds.cache_counts() == {"hits": 78, "misses": 0, "bad": 0}
    assert_same(ds.__getitems__([77, 0, 40, 40, -1]),
                [expected[i] for i in (77, 0, 40, 40, 77)])
    with pytest.raises(IndexError):
        ds[78]


def test_dataloader_with_workers_and_a_query(warmed, db, redis_url, prefix):
    _, paths, _ = warmed
    ds = CachedWindowDataset(query={"attrs.release": "R1"}, db=db, redis_url=redis_url,
                             prefix=prefix)
    assert [s.path for s in ds.specs] == [str(p) for p in paths]
    expected = legacy_items(paths)
    order = list(np.random.default_rng(0).permutation(len(ds)))
    loader = DataLoader(ds, batch_size=8, sampler=order, num_workers=2)
    seen = []
    for eeg, label in loader:
        assert eeg.shape[1:] == (8, 100)
        seen += list(zip(eeg, label))
    assert_same(seen, [expected[i] for i in order])


def test_collate_windows_hands_on_one_tensor_per_batch(warmed, redis_url, prefix):
    """Workers fill one batch tensor each, from Redis and (an unwarmed file) from HDF5;
    kept batches are never overwritten, dropped ones are refilled with the right windows."""
    d, paths, _ = warmed
    write_h5(d / "late.h5", n=21, seed=5)  # not warmed: every window from the file
    paths = [*paths, d / "late.h5"]
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix)
    expected = legacy_items(paths)
    order = [int(i) for i in np.random.default_rng(1).permutation(len(ds))]
    loader = DataLoader(ds, batch_size=4, sampler=order, num_workers=2,
                        collate_fn=collate_windows)
    kept = []  # more batches than the workers' buffers: all must stay intact
    for eeg, label in loader:
        assert eeg.is_contiguous() and eeg.shape[1:] == (8, 100) and label.shape == eeg.shape[:1]
        kept.append((eeg, label))
    assert_same([w for eeg, label in kept for w in zip(eeg, label)],
                [expected[i] for i in order])
    views, view_windows = [], []
    for _ in range(2):  # batches dropped at once: buffers reused; a kept view stays intact
        seen = []
        for n, (eeg, label) in enumerate(loader):
            seen += [(e.clone(), lab.clone()) for e, lab in zip(eeg, label)]
            if n % 5 == 0:
                views.append(eeg[1])
                view_windows.append(len(seen) - len(eeg) + 1)
        assert_same(seen, [expected[i] for i in order])
    for view, at in zip(views, view_windows):
        np.testing.assert_array_equal(view.numpy(), expected[order[at]][0])


def test_the_readme_dataloader_gets_the_batch_tensor_without_a_copy(warmed, redis_url, prefix):
    """The README's `DataLoader(dataset, batch_size=.., shuffle=True, num_workers=2)`, no
    collate_fn: each batch reaches the loop in the worker's reusable buffer (as with
    `collate_windows`), not copied again into fresh shared memory; in one process the
    default collate hands on the batch tensor itself. Kept batches stay intact."""
    _, paths, _ = warmed
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix)
    expected = legacy_items(paths)
    batch = ds.__getitems__([5, 40, 77])
    eeg, label = default_collate(batch)
    assert eeg.data_ptr() == batch[0][0].data_ptr() and eeg.shape == (3, 8, 100)
    assert_same(list(zip(eeg, label)), [expected[i] for i in (5, 40, 77)])
    assert default_collate([ds[1], ds[2]])[0].shape == (2, 8, 100)  # single items: stacked

    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
    by_label = sorted(expected, key=lambda item: item[1])
    seen = []
    for eeg, label in loader:  # each batch dropped at once: its buffer is used again
        assert not eeg.is_shared() and eeg.shape[1:] == (8, 100)
        assert label.dtype == torch.float32 and label.shape == eeg.shape[:1]
        seen += [(e.clone(), lab) for e, lab in zip(eeg, label)]
    assert_same(sorted(seen, key=lambda item: item[1].item()), by_label)
    kept = [(eeg, label) for eeg, label in loader]  # 20 batches: more than the buffers
    assert_same(sorted(((e, lab) for eeg, label in kept for e, lab in zip(eeg, label)),
                       key=lambda item: item[1].item()), by_label)


def test_a_collate_fn_that_keeps_the_list(warmed, redis_url, prefix):
    """A worker may send `__getitems__`'s list as it is: it travels as plain pairs."""
    _, paths, _ = warmed
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=lambda items: items,
                        timeout=60)
    got = [pair for items in loader for pair in items]
    assert all(type(items) is list for items in loader)
    assert_same(got, legacy_items(paths))


def test_windows_of_different_shapes_in_one_batch(tmp_path, db, rclient, redis_url, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=5, seed=1)
    write_h5(d / "b.h5", n=5, seed=2, channels=4, times=50)
    hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient).warm()
    paths = [d / "a.h5", d / "b.h5"]
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix)
    items = ds.__getitems__([0, 9, 4, 5])
    expected = legacy_items(paths)
    assert_same(items, [expected[i] for i in (0, 9, 4, 5)])
    assert [tuple(e.shape) for e, _ in items] == [(8, 100), (4, 50), (8, 100), (4, 50)]
    with pytest.raises(RuntimeError):  # as the default collate: no batch of mixed shapes
        collate_windows(items)
    eeg, label = collate_windows(ds.__getitems__([5, 6]))
    assert eeg.shape == (2, 4, 50) and label.shape == (2,)


def test_falls_back_to_hdf5_for_what_is_not_cached(tmp_path, db, rclient, redis_url, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=60, seed=4)
    budget = 25 * (8 * 100 * 4 + 200)
    hdf5_follower(make_settings(tmp_path, [d], prefix, cache={"max_bytes": budget}), db,
                 rclient).warm()
    meta = WindowCache(rclient, prefix).file(str(d / "a.h5"))
    assert 0 < meta.cached < 60
    ds = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    assert_same(ds.__getitems__(list(range(60))), legacy_items([d / "a.h5"]))
    assert ds.cache_counts() == {"hits": meta.cached, "misses": 60 - meta.cached, "bad": 0}


def test_keys_deleted_under_a_running_dataloader(warmed, rclient, redis_url, prefix):
    _, paths, _ = warmed
    ds = CachedWindowDataset(paths, redis_url=redis_url, prefix=prefix, local_bytes=0)
    expected = legacy_items(paths)
    loader = DataLoader(ds, batch_size=6, num_workers=2, shuffle=False)
    seen = []
    for n, (eeg, label) in enumerate(loader):
        seen += list(zip(eeg, label))
        if n == 1:  # Redis loses every window key while the workers are running
            keys = list(rclient.scan_iter(match=f"{prefix}:w:*", count=1000))
            assert keys
            rclient.unlink(*keys)
    assert_same(seen, expected)


def test_redis_down_reads_the_files(warmed, own_redis):
    _, paths, _ = warmed
    url = own_redis.url
    own_redis.kill()
    ds = CachedWindowDataset(paths, redis_url=url)
    assert_same(ds.__getitems__(list(range(len(ds)))), legacy_items(paths))
    assert ds.cache_counts()["hits"] == 0


def test_a_rewritten_file_is_never_mixed(warmed, db, rclient, redis_url, prefix):
    _, paths, follower = warmed
    ds = CachedWindowDataset([paths[0]], redis_url=redis_url, prefix=prefix, recheck_seconds=0,
                             local_bytes=0)
    old = legacy_items([paths[0]])
    assert_same(ds.__getitems__(list(range(37))), old)

    first = WindowCache(rclient, prefix).file(str(paths[0])).gen
    write_h5(paths[0], n=37, seed=99)  # rewritten; the first generation is still in Redis
    new = legacy_items([paths[0]])
    assert not np.array_equal(old[0][0], new[0][0])
    # Before syncd re-indexes it: every window comes from the new file, none from the first.
    assert_same(ds.__getitems__(list(range(37))), new)
    follower.warm()
    assert WindowCache(rclient, prefix).file(str(paths[0])).gen > first
    before = ds.cache_counts()["hits"]
    assert_same(ds.__getitems__(list(range(37))), new)
    assert ds.cache_counts()["hits"] == before + 37  # served from the new generation


def test_a_pickled_value_is_never_unpickled(warmed, rclient, redis_url, prefix):
    _, paths, _ = warmed
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(paths[0]))
    payload = pickle.dumps(np.zeros((8, 100), np.float32))
    rclient.set(cache.keys.window(meta.fid, meta.gen, 3), payload)
    ds = CachedWindowDataset([paths[0]], redis_url=redis_url, prefix=prefix, local_bytes=0)
    eeg, _ = ds[3]
    np.testing.assert_array_equal(eeg.numpy(), legacy_items([paths[0]])[3][0])
    assert ds.cache_counts() == {"hits": 0, "misses": 1, "bad": 1}


def test_password_and_database_in_the_url(tmp_path, db):
    server = RedisProcess(tmp_path / "redis", "--requirepass", "s3cret pass")
    server.start()
    try:
        url = f"redis://:s3cret%20pass@127.0.0.1:{server.port}/3"
        d = tmp_path / "h5"
        d.mkdir()
        write_h5(d / "a.h5", n=9)
        from syncd.connect.redis import connect_redis

        client = connect_redis(url)
        hdf5_follower(make_settings(tmp_path, [d]), db, client).warm()
        assert client.dbsize() > 0 and client.connection_pool.connection_kwargs["db"] == 3
        ds = CachedWindowDataset([d / "a.h5"], redis_url=url, local_bytes=0)
        assert_same(ds.__getitems__(list(range(9))), legacy_items([d / "a.h5"]))
        assert ds.cache_counts() == {"hits": 9, "misses": 0, "bad": 0}
        client.close()
    finally:
        server.kill()
