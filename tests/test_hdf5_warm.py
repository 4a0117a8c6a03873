"""Indexing and warming: layouts, compression, generations, quarantine, budget, Redis loss."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from syncd.api.hdf5 import hdf5_follower
from syncd.client.cache import WindowCache
from syncd.hdf5.files import HDF5_FILES
from syncd.hdf5.status import hdf5_status
from tests.hdf5_support import WRITER, make_settings, write_h5


def cached_windows(cache: WindowCache, path: Path) -> np.ndarray:
    meta = cache.file(str(path))
    assert meta is not None, f"{path} is not in the cache"
    values = cache.get_windows(meta, list(range(meta.n_windows)))
    assert all(v is not None for v in values), "some windows are missing"
    return np.stack(values)


@pytest.mark.parametrize("layout,kwargs", [
    ("eeg", {"compression": "gzip", "compression_opts": 4}),   # the legacy writer's call
    ("data", {}),                                             # contiguous, uncompressed
    ("eeg", {"compression": "gzip", "shuffle": True, "chunks": (3, 5, 30)}),
    ("data", {"compression": "lzf"}),                          # decoded by h5py itself
    ("eeg", {"dtype": ">f4", "chunks": (7, 8, 100)}),           # big-endian, chunked, raw
])
def test_warm_caches_every_window_and_label_exactly(tmp_path, db, rclient, prefix, layout,
                                                    kwargs):
    (tmp_path / "h5").mkdir()
    path = tmp_path / "h5" / "r1.h5"
    windows, labels = write_h5(path, n=45, layout=layout, **kwargs)
    settings = make_settings(tmp_path, [tmp_path / "h5"], prefix)
    report = hdf5_follower(settings, db, rclient).warm()
    assert report.indexed == [str(path)] and report.quarantined == []
    assert report.windows_written == 45

    cache = WindowCache(rclient, prefix)
    got = cached_windows(cache, path)
    assert got.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(got, windows.astype("<f4"))
    np.testing.assert_array_equal(cache.get_labels(str(path)), labels)

    doc = db[HDF5_FILES].find_one({"path": str(path)})
    assert doc["state"] == "warm" and doc["generation"] > 1_700_000_000_000  # ms: never reused
    assert doc["n_windows"] == 45 and doc["window_shape"] == [8, 100]
    assert doc["cached_windows"] == 45
    expected = {"windows": "eeg", "labels": "labels"} if layout == "eeg" else \
        {"windows": "data", "labels": "targets"}
    assert doc["layout"] == expected
    assert doc["attrs"] == {"release": "R1", "n_windows": 45, "n_channels": 8,
                            "n_timepoints": 100, "sfreq": 100.0}
    assert doc["size"] == path.stat().st_size and doc["fingerprint"].startswith("sha256-tree:")
    eeg = next(d for d in doc["datasets"] if d["name"] == ("eeg" if layout == "eeg" else "data"))
    assert eeg["compression"] == kwargs.get("compression")
    assert eeg["shape"] == [45, 8, 100]

    # A second pass finds nothing to do.
    again = hdf5_follower(settings, db, rclient).scan_once()
    assert again.indexed == [] and again.windows_written == 0 and again.unchanged == 1


def test_rewritten_file_is_a_new_generation_and_old_keys_go(tmp_path, db, rclient, prefix):
    (tmp_path / "h5").mkdir()
    path = tmp_path / "h5" / "r1.h5"
    write_h5(path, n=30, seed=1)
    settings = make_settings(tmp_path, [tmp_path / "h5"], prefix)
    follower = hdf5_follower(settings, db, rclient)
    follower.warm()
    cache = WindowCache(rclient, prefix)
    fid, first = cache.file(str(path)).fid, cache.file(str(path)).gen
    assert rclient.exists(cache.keys.window(fid, first, 0))
    assert len(list(rclient.scan_iter(match=cache.keys.values_pattern(fid, first),
                                      count=1000))) \
        == 30 + 30 * len(cache.file(fid).features)

    new_windows, new_labels = write_h5(path, n=36, seed=2)  # the legacy script rewrites it
    report = follower.warm()
    assert report.indexed == [str(path)]
    meta = cache.file(str(path))
    assert meta.gen > first and meta.n_windows == 36
    np.testing.assert_array_equal(cached_windows(cache, path), new_windows)
    np.testing.assert_array_equal(cache.get_labels(meta), new_labels)
    # Nothing of the first generation is left.
    assert list(rclient.scan_iter(match=cache.keys.values_pattern(fid, first),
                                  count=1000)) == []
    assert list(rclient.scan_iter(match=f"{prefix}:*{cache.keys.tag(fid, first)}*",
                                  count=1000)) == []
    assert not rclient.exists(cache.keys.labels(fid, first))
    doc = db[HDF5_FILES].find_one({"path": str(path)})
    assert doc["generation"] == meta.gen and doc.get("stale_generations") == []

    # Touching the file (same bytes) keeps the generation and the keys.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 10**9))
    report = follower.warm()
    assert report.indexed == [] and report.windows_written == 0
    assert cache.file(str(path)).gen == meta.gen
    assert cache.file(str(path)).mtime_ns == path.stat().st_mtime_ns


def test_bad_files_are_quarantined_and_the_rest_syncs(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    good_windows, _ = write_h5(d / "good.h5", n=20)
    write_h5(d / "truncated.h5", n=50, compression="gzip")
    with open(d / "truncated.h5", "r+b") as handle:
        handle.truncate((d / "truncated.h5").stat().st_size // 2)
    (d / "garbage.h5").write_bytes(b"this is not an HDF5 file\n" * 40)
    (d / "empty.h5").write_bytes(b"")
    with h5py.File(d / "other.h5", "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    # A file whose structure is fine but whose compressed chunk bytes are corrupt.
    write_h5(d / "corrupt.h5", n=40, compression="gzip", chunks=(4, 8, 100))
    with h5py.File(d / "corrupt.h5", "r") as f:
        offset = f["eeg"].id.get_chunk_info(3).byte_offset
    with open(d / "corrupt.h5", "r+b") as handle:
        handle.seek(offset + 10)
        handle.write(b"\xff" * 64)

    settings = make_settings(tmp_path, [d], prefix)
    report = hdf5_follower(settings, db, rclient).warm()
    bad = {Path(q["path"]).name: q["error"] for q in report.quarantined}
    assert set(bad) == {"truncated.h5", "garbage.h5", "empty.h5", "other.h5", "corrupt.h5"}
    assert "no known windows/labels datasets" in bad["other.h5"]
    assert "weights" in bad["other.h5"]
    np.testing.assert_array_equal(cached_windows(WindowCache(rclient, prefix), d / "good.h5"),
                                  good_windows)

    status = hdf5_status(db, rclient)
    assert status["states"] == {"warm": 1, "quarantined": 5}
    assert {Path(q["path"]).name for q in status["quarantined"]} == set(bad)
    assert all(q["error"] for q in status["quarantined"])
    assert WindowCache(rclient, prefix).file(str(d / "corrupt.h5")) is None

    # A quarantined file that is written again properly is picked up.
    fixed, _ = write_h5(d / "garbage.h5", n=10, seed=5)
    report = hdf5_follower(settings, db, rclient).warm()
    assert report.indexed == [str(d / "garbage.h5")]
    np.testing.assert_array_equal(
        cached_windows(WindowCache(rclient, prefix), d / "garbage.h5"), fixed)
    doc = db[HDF5_FILES].find_one({"path": str(d / "garbage.h5")})
    assert doc["state"] == "warm" and doc["error"] is None


def test_incomplete_file_waits_for_the_debounce_window(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    path = d / "fresh.h5"
    write_h5(path, n=12)
    settings = make_settings(tmp_path, [d], prefix, hdf5={"debounce_seconds": 3600.0})
    follower = hdf5_follower(settings, db, rclient)
    report = follower.scan_once()
    assert report.pending == [str(path)] and report.indexed == []
    assert db[HDF5_FILES].count_documents({}) == 0
    assert follower.next_due() is not None
    # Once its mtime is older than the debounce window, it is complete.
    old = path.stat().st_mtime_ns - 7200 * 10**9
    os.utime(path, ns=(old, old))
    report = follower.scan_once()
    assert report.indexed == [str(path)] and report.pending == []
    assert follower.next_due() is None


def test_removed_file_loses_its_document_and_keys(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=10)
    write_h5(d / "b.h5", n=10, seed=3)
    settings = make_settings(tmp_path, [d], prefix)
    follower = hdf5_follower(settings, db, rclient)
    follower.warm()
    fid = WindowCache(rclient, prefix).file(str(d / "a.h5")).fid
    (d / "a.h5").unlink()
    report = follower.scan_once()
    assert report.removed == [str(d / "a.h5")]
    assert db[HDF5_FILES].count_documents({}) == 1
    assert list(rclient.scan_iter(match=f"{prefix}:*{fid}*", count=1000)) == []
    assert rclient.hget(f"{prefix}:files", str(d / "a.h5")) is None


def test_memory_budget_newest_first_then_trims(tmp_path, db, own_redis):
    d = tmp_path / "h5"
    d.mkdir()
    paths = []
    for i, name in enumerate(["old.h5", "mid.h5", "new.h5"]):
        write_h5(d / name, n=50, seed=i)
        t = 1_700_000_000 + i * 1000
        os.utime(d / name, (t, t))
        paths.append(d / name)
    client = own_redis.client()
    window = 8 * 100 * 4
    budget = 75 * (window + 200)  # room for about a file and a half
    settings = make_settings(tmp_path, [d], cache={"max_bytes": budget})
    before = client.info("memory")["used_memory"]
    report = hdf5_follower(settings, db, client).warm()
    cached = {p.name: db[HDF5_FILES].find_one({"path": str(p)})["cached_windows"]
              for p in paths}
    assert cached["new.h5"] == 50
    assert 0 < cached["mid.h5"] < 50
    assert cached["old.h5"] == 0
    assert report.used_bytes <= budget
    assert client.info("memory")["used_memory"] - before <= budget * 1.1
    status = hdf5_status(db, client)
    assert status["windows_total"] == 150
    assert status["windows_cached"] == sum(cached.values())
    assert status["memory"]["budget_bytes"] == budget
    assert status["memory"]["used_bytes"] <= budget

    # Configured globs go first; lowering the budget trims the excess keys.
    before_mid = cached["mid.h5"]
    settings = make_settings(tmp_path, [d], cache={"max_bytes": budget // 3,
                                                   "warm_first": ["old.*"]})
    report = hdf5_follower(settings, db, client).warm()
    cached = {p.name: db[HDF5_FILES].find_one({"path": str(p)})["cached_windows"]
              for p in paths}
    assert cached["old.h5"] > 0 and cached["new.h5"] == 0 and cached["mid.h5"] == 0
    assert report.windows_trimmed == 50 + before_mid
    cache = WindowCache(client, "syncd")
    meta_new = cache.file(str(d / "new.h5"))
    assert not client.exists(cache.keys.window(meta_new.fid, meta_new.gen, 0))
    client.close()


def test_redis_killed_mid_warm_and_restarted(tmp_path, db, own_redis):
    d = tmp_path / "h5"
    d.mkdir()
    windows, _ = write_h5(d / "big.h5", n=400, compression="gzip", chunks=(10, 8, 100))
    settings = make_settings(tmp_path, [d], hdf5={"slab_mb": 1})
    client = own_redis.client()
    slabs = []

    def kill_after_first_slab(path, done):
        slabs.append(done)
        if len(slabs) == 1:
            own_redis.kill()

    follower = hdf5_follower(settings, db, client, on_slab=kill_after_first_slab)
    report = follower.scan_once()
    assert report.redis_error is not None
    doc = db[HDF5_FILES].find_one({})
    assert doc["state"] == "warming"

    own_redis.start()  # same port, empty: everything was lost
    report = follower.scan_once()
    assert report.redis_error is None
    assert report.windows_written == 400
    np.testing.assert_array_equal(cached_windows(WindowCache(client, "syncd"), d / "big.h5"),
                                  windows)
    assert db[HDF5_FILES].find_one({})["state"] == "warm"

    # Keys lost behind syncd's back (an eviction, a FLUSHALL) are warmed again on a check.
    client.flushall()
    follower.config = dataclasses.replace(follower.config, verify_seconds=0.0)
    report = follower.scan_once()
    assert report.windows_written == 400
    client.close()




def test_legacy_writers_succeed_while_syncd_warms(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    path = d / "growing.h5"
    write_h5(path, n=300, growable=True, compression="gzip", compression_opts=4)
    settings = make_settings(tmp_path, [d], prefix, hdf5={"slab_mb": 1})
    results = []

    def write_during_warm(p, done):
        if results:
            return
        for mode, target in (("a", path), ("w", d / "new.h5")):
            proc = subprocess.run([sys.executable, "-c", WRITER, mode, str(target)],
                                  capture_output=True, text=True, timeout=60)
            results.append((mode, proc.returncode, proc.stderr[-2000:]))

    follower = hdf5_follower(settings, db, rclient, on_slab=write_during_warm)
    report = follower.scan_once()
    first = db[HDF5_FILES].find_one({"path": str(path)})["generation"]
    assert [(m, code) for m, code, _ in results] == [("a", 0), ("w", 0)], results
    assert str(path) in report.changed_while_warming

    follower.on_slab = None
    report = follower.warm()
    assert set(report.indexed) == {str(path), str(d / "new.h5")}
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(path))
    assert meta.gen > first and meta.n_windows == 308
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(cached_windows(cache, path), f["eeg"][()])
    with h5py.File(d / "new.h5", "r") as f:
        np.testing.assert_array_equal(cached_windows(cache, d / "new.h5"), f["eeg"][()])
    old = cache.keys.values_pattern(meta.fid, 1)
    assert list(rclient.scan_iter(match=old, count=1000)) == []


def test_events_announce_what_a_pass_did(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=5)
    settings = make_settings(tmp_path, [d], prefix)
    hdf5_follower(settings, db, rclient).warm()
    events = []
    for _, event in WindowCache(rclient, prefix).subscribe("0", block_ms=50,
                                                            stop=lambda: len(events) >= 2):
        events.append(event)
    assert [e["type"] for e in events] == ["hdf5.indexed", "hdf5.warmed"]
    assert events[1]["path"] == str(d / "a.h5") and events[1]["cached"] == 5


def test_watch_paths_and_wants(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    follower = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient)
    assert follower.watch_paths() == [d.absolute()]
    assert follower.wants(d / "sub" / "x.h5")
    assert not follower.wants(d / "x.txt")
    assert not follower.wants(tmp_path / "elsewhere.h5")



def test_an_unmounted_directory_removes_nothing(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=6)
    follower = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient)
    follower.warm()
    d.rename(tmp_path / "elsewhere")  # the volume goes away for a while
    report = follower.scan_once()
    assert report.removed == [] and db[HDF5_FILES].count_documents({}) == 1
    assert WindowCache(rclient, prefix).file(str(d / "a.h5")).cached == 6


HOLDER = textwrap.dedent("""
    import sys, h5py, numpy as np
    f = h5py.File(sys.argv[1], "w")  # a legacy writer in the middle of its work
    f.create_dataset("eeg", data=np.zeros((5, 8, 100), "f4"), maxshape=(None, 8, 100))
    f.flush()
    print("open", flush=True)
    sys.stdin.readline()
    f.create_dataset("labels", data=np.arange(5.0))
    f.close()
""")


def test_a_file_open_for_writing_is_pending_not_quarantined(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    path = d / "being_written.h5"
    writer = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        follower = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient)
        report = follower.scan_once()
        assert report.pending == [str(path)]
        assert report.quarantined == [] and db[HDF5_FILES].count_documents({}) == 0
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(30) == 0
    finally:
        writer.kill()
    report = follower.warm()
    assert report.indexed == [str(path)] and report.pending == []
    assert WindowCache(rclient, prefix).file(str(path)).cached == 5
