"""One HDF5 file, one record: whichever command saw it, and after an upgrade.

`syncd warm --hdf5-dir D` (source HOST) and `syncd run --sqlite DB --hdf5-dir D`
(source HOST:/path/DB) used to record and warm every file of D twice. A changed
`[hdf5] layouts` used to leave a quarantined file quarantined until it was touched,
and `CachedWindowDataset` ignored the setting.
"""

from __future__ import annotations

import datetime as dt
import json
import socket

import h5py
import numpy as np
import pytest

from syncd.api.hdf5 import hdf5_follower
from syncd.client.cache import WindowCache
from syncd.hdf5.files import HDF5_FILES, meta_for
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025
from syncd.sinks.cache import CacheWriter
from tests.conftest import run_cli
from tests.daemon_support import FAST, Daemon, wait_for
from tests.hdf5_support import make_settings, write_h5

HOST = socket.gethostname()


@pytest.fixture
def shared_args(target_args: list[str]) -> list[str]:
    """The target without --source-id: each command gets its default source."""
    i = target_args.index("--source-id")
    return target_args[:i] + target_args[i + 2:]


def keys_of(rclient, prefix: str, fid: str) -> list[bytes]:
    return [k for k in rclient.scan_iter(match=f"{prefix}:*", count=1000) if fid.encode() in k]


def test_warm_then_run_record_each_file_once_and_a_deleted_file_is_freed(
        tmp_path, shared_args, db, redis_url, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "r1.h5", n=20)
    write_h5(d / "r2.h5", n=10, seed=2)
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=3)
    config = (f"hdf5_rescan_seconds = 1.0\n[hdf5]\ndebounce_seconds = 0\n"
              f"[cache]\nprefix = \"{prefix}\"\n[features]\nextractors = []\n")
    cfg = tmp_path / "warm.toml"
    cfg.write_text(FAST + config)  # the daemon's file: hdf5_rescan_seconds is in [daemon]
    warmed = run_cli("warm", "--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg,
                     *shared_args)  # as docs/hdf5-cache.md shows it: no --sqlite
    assert warmed.code == 0, warmed

    daemon = Daemon(tmp_path, legacy, [*shared_args, "--redis-url", redis_url], config,
                    extra=["--hdf5-dir", str(d)])
    try:
        daemon.wait_ready(db)
        # Both commands have made a pass over D (each records its last one).
        wait_for(lambda: db["_syncd_state"].count_documents({"kind": "hdf5"}) == 2, 60,
                 "syncd run's first HDF5 pass")
        docs = list(db[HDF5_FILES].find())
        assert sorted(doc["path"] for doc in docs) == [str(d / "r1.h5"), str(d / "r2.h5")]
        status = run_cli("status", "--json", *daemon.args, "--hdf5-dir", d,
                         "--redis-url", redis_url)
        hdf5 = json.loads(status.out)["hdf5"]
        assert hdf5["files_total"] == 2 and hdf5["states"] == {"warm": 2}
        assert (hdf5["windows_cached"], hdf5["windows_total"]) == (30, 30)
        assert [f["path"] for f in hdf5["files"]] == [str(d / "r1.h5"), str(d / "r2.h5")]

        gone = db[HDF5_FILES].find_one({"path": str(d / "r2.h5")})
        assert keys_of(rclient, prefix, gone["fid"])
        (d / "r2.h5").unlink()
        wait_for(lambda: db[HDF5_FILES].count_documents({"path": str(d / "r2.h5")}) == 0, 30,
                 "the deleted file's record to go")
        assert keys_of(rclient, prefix, gone["fid"]) == []
        assert rclient.hget(f"{prefix}:files", str(d / "r2.h5")) is None
        after = json.loads(run_cli("status", "--json", *daemon.args, "--hdf5-dir", d,
                                   "--redis-url", redis_url).out)["hdf5"]
        assert after["files_total"] == 1 and after["windows_total"] == 20
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]


def _old_duplicate(db, writer: CacheWriter, doc: dict, source: str, newer: bool) -> dict:
    """The record (and cache keys) the old `syncd run` wrote beside `syncd warm`'s."""
    _id = derive_id(source, HDF5_FILES, (doc["path"],))
    dup = {**doc, "_id": _id, "fid": str(_id), "source_id": source}
    dup.pop("host", None)
    dup.pop("layouts_key", None)
    shift = 60 if newer else -60
    dup["updated_at"] = doc["updated_at"] + dt.timedelta(seconds=shift)
    db[HDF5_FILES].insert_one(dup)
    meta = meta_for(dup)
    meta.cached = dup["cached_windows"]
    writer.write_meta(meta)
    with h5py.File(dup["path"], "r", locking=False) as f:
        writer.put_windows(meta, 0, f["eeg"][()])
        writer.put_labels(meta, f["labels"][()])
    return dup


def test_duplicates_an_earlier_version_left_are_merged_and_their_keys_freed(
        tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    windows = {name: write_h5(d / name, n=12, seed=i)[0]
               for i, name in enumerate(("a.h5", "b.h5"))}
    settings = make_settings(tmp_path, [d], prefix)
    settings.source_id = HOST  # `syncd warm` without --sqlite
    assert hdf5_follower(settings, db, rclient).warm().windows_written == 24
    # The database as the earlier version left it: warm's records (no host) and, for
    # each file, run's record under its own source and file id, warmed too.
    db[HDF5_FILES].update_many({}, {"$unset": {"host": "", "layouts_key": ""}})
    writer = CacheWriter(rclient, prefix)
    run_source = f"{HOST}:{tmp_path / 'metadata.db'}"
    warm_docs = {doc["path"]: doc for doc in db[HDF5_FILES].find()}
    dup_a = _old_duplicate(db, writer, warm_docs[str(d / "a.h5")], run_source, newer=True)
    dup_b = _old_duplicate(db, writer, warm_docs[str(d / "b.h5")], run_source, newer=False)
    assert db[HDF5_FILES].count_documents({}) == 4
    assert keys_of(rclient, prefix, dup_b["fid"])
    assert hdf5_files_total(db) == 2  # status counts each file once even before the repair
    # Say b.h5 was warmed with `--source-id trainbox`: only the file itself names its host.
    db[HDF5_FILES].update_one({"_id": warm_docs[str(d / "b.h5")]["_id"]},
                              {"$set": {"source_id": "trainbox"}})

    report = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient).warm()
    assert report.windows_written == 0  # nothing warmed again: the kept records were warm

    docs = {doc["path"]: doc for doc in db[HDF5_FILES].find()}
    assert len(docs) == 2 == db[HDF5_FILES].count_documents({})
    # The newest state of each file is the one kept; the other's keys are freed.
    assert docs[str(d / "a.h5")]["_id"] == dup_a["_id"]
    assert docs[str(d / "b.h5")]["_id"] == warm_docs[str(d / "b.h5")]["_id"]
    assert all(doc["host"] == HOST and doc["state"] == "warm" for doc in docs.values())
    assert keys_of(rclient, prefix, warm_docs[str(d / "a.h5")]["fid"]) == []
    assert keys_of(rclient, prefix, dup_b["fid"]) == []
    cache = WindowCache(rclient, prefix)
    for name, expected in windows.items():
        meta = cache.file(str(d / name))
        assert meta is not None and meta.fid == docs[str(d / name)]["fid"]
        np.testing.assert_array_equal(np.stack(cache.get_windows(meta, list(range(12)))),
                                      expected)
    # 2 files x (12 windows + labels + metadata), the files index and the events stream.
    assert len(list(rclient.scan_iter(match=f"{prefix}:*", count=1000))) == 2 * 14 + 2


def hdf5_files_total(db) -> int:
    from syncd.hdf5.status import hdf5_status

    status = hdf5_status(db)
    assert status["windows_total"] == 12 * status["files_total"]
    return status["files_total"]


def _odd_layout(path, n: int = 9) -> np.ndarray:
    windows = np.random.default_rng(5).standard_normal((n, 4, 50)).astype("f4")
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=windows, compression="gzip")
        f.create_dataset("y", data=np.arange(n, dtype="f8"))
    return windows


def _toml(path, prefix: str, layouts: str = "") -> None:
    path.write_text(f"[hdf5]\ndebounce_seconds = 0\n{layouts}\n[cache]\nprefix = \"{prefix}\"\n"
                    "[features]\nextractors = []\n")


def test_a_layout_added_to_the_config_re_examines_quarantined_files(
        tmp_path, target_args, db, redis_url, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    _odd_layout(d / "odd.h5")
    write_h5(d / "plain.h5", n=5)
    cfg = tmp_path / "syncd.toml"
    _toml(cfg, prefix)
    args = ["--hdf5-dir", d, "--redis-url", redis_url, "--config", cfg, *target_args]
    first = json.loads(run_cli("warm", "--json", *args).out)
    assert [q["path"] for q in first["quarantined"]] == [str(d / "odd.h5")]
    before = (d / "odd.h5").stat().st_mtime_ns

    _toml(cfg, prefix, 'layouts = [["eeg", "labels"], ["X", "y"]]')
    second = json.loads(run_cli("warm", "--json", *args).out)
    assert (d / "odd.h5").stat().st_mtime_ns == before  # not touched
    assert second["indexed"] == [str(d / "odd.h5")] and second["quarantined"] == []
    assert second["unchanged"] == 1
    doc = db[HDF5_FILES].find_one({"path": str(d / "odd.h5")})
    assert doc["state"] == "warm" and doc["layout"] == {"windows": "X", "labels": "y"}
    third = json.loads(run_cli("warm", "--json", *args).out)
    assert third["unchanged"] == 2 and third["indexed"] == []


def test_the_dataset_takes_layouts_from_the_index_or_the_config(
        tmp_path, db, rclient, redis_url, prefix, monkeypatch):
    pytest.importorskip("torch")
    from syncd.client.dataset import CachedWindowDataset

    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    d = tmp_path / "h5"
    d.mkdir()
    windows = _odd_layout(d / "odd.h5")
    settings = make_settings(tmp_path, [d], prefix, hdf5={"layouts": [["X", "y"]]})
    assert hdf5_follower(settings, db, rclient).warm().windows_written == 9

    # No TOML: the layout syncd recorded for the file (in Redis).
    ds = CachedWindowDataset([d / "odd.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    eeg = [ds[i][0].numpy() for i in range(len(ds))]
    np.testing.assert_array_equal(np.stack(eeg), windows)
    assert ds.cache_counts()["hits"] == 9
    assert float(ds[3][1]) == 3.0

    # A file syncd never indexed: `[hdf5] layouts` of the TOML the CLI reads (and its
    # `[cache] prefix` for the indexed one).
    other = tmp_path / "other"
    other.mkdir()
    more = _odd_layout(other / "new.h5", n=4)
    with pytest.raises(Exception, match="layouts"):
        CachedWindowDataset([other / "new.h5"], redis_url=redis_url, prefix=prefix, local_bytes=0)
    cfg = tmp_path / "syncd.toml"
    _toml(cfg, prefix, 'layouts = [["X", "y"]]')
    monkeypatch.setenv("SYNCD_CONFIG", str(cfg))
    both = CachedWindowDataset([d / "odd.h5", other / "new.h5"], redis_url=redis_url, local_bytes=0)
    assert len(both) == 13
    np.testing.assert_array_equal(np.stack([both[i][0].numpy() for i in range(13)]),
                                  np.concatenate([windows, more]))
    assert both.cache_counts() == {"hits": 9, "misses": 4, "bad": 0}
    monkeypatch.delenv("SYNCD_CONFIG")
    argued = CachedWindowDataset([other / "new.h5"], config=cfg, redis_url=redis_url, local_bytes=0)
    np.testing.assert_array_equal(argued[2][0].numpy(), more[2])
