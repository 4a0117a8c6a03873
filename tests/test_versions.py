"""Migration versions: --to up and down, dry runs, the changelog's checksums, the lease."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from syncd.checkpoint.lease import Lease
from syncd.checkpoint.store import StateStore
from syncd.engine.migration_files import DEFAULT_DIR
from syncd.errors import MigrationError
from syncd.sample import make_eeg2025
from tests.conftest import NEWEST, run_cli


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=30)
    return path


def _collections(db):
    return sorted(c for c in db.list_collection_names() if not c.startswith("_syncd_"))


def test_to_moves_down_and_up(legacy, target_args, db):
    assert run_cli("migrate", "--sqlite", legacy, "--to", "1", *target_args).code == 0
    assert _collections(db) == ["cache_files", "config", "epoch_history", "model_checkpoints",
                                "subjects", "training_runs"]
    run = db.training_runs.find_one({"run_id": 1})
    assert isinstance(run["config"], str) and isinstance(run["start_time"], str)

    up = run_cli("migrate", "--sqlite", legacy, "--to", "2", "--json", *target_args)
    assert up.code == 0, up
    report = json.loads(up.out)
    assert (report["from_version"], report["to_version"]) == (1, 2)
    assert sorted(report["dropped"]) == ["epoch_history", "model_checkpoints", "training_runs"]
    assert _collections(db) == ["cache_files", "checkpoints", "config", "epochs",
                                "experiments", "subjects"]
    names = db.experiments.index_information()
    assert "challenge_1_metrics.best_val_loss_1" in names and "start_time_-1" in names
    assert not any(i.get("unique") for i in db.epochs.index_information().values()
                   if i["key"] != [("_id", 1)])
    # Same legacy row, same _id across versions (ids come from source, table, key).
    assert db.experiments.find_one({"run_id": 1})["_id"] == run["_id"]
    assert [e["version"] for e in db["_syncd_changelog"].find().sort("version", 1)] == [1, 2]

    latest = run_cli("migrate", "--sqlite", legacy, "--json", *target_args)
    assert json.loads(latest.out)["to_version"] == NEWEST
    assert "hdf5_files" in _collections(db)  # 0003 declares the HDF5 index collection
    assert "state_1" in db.hdf5_files.index_information()

    down = run_cli("migrate", "--sqlite", legacy, "--to", "1", "--json", *target_args)
    assert down.code == 0, down
    assert "experiments" not in _collections(db) and "hdf5_files" not in _collections(db)
    assert [e["version"] for e in db["_syncd_changelog"].find()] == [1]
    assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0

    zero = run_cli("migrate", "--sqlite", legacy, "--to", "0", *target_args)
    assert zero.code == 0, zero
    assert _collections(db) == []
    bad = run_cli("migrate", "--sqlite", legacy, "--to", "7", *target_args)
    assert bad.code == 2 and "--to 7" in bad.err


def test_dry_run_prints_the_plan_and_writes_nothing(legacy, target_args, db):
    result = run_cli("migrate", "--sqlite", legacy, "--dry-run", *target_args)
    assert result.code == 0, result
    assert f"version 0 -> {NEWEST} (rebuild)" in result.out
    assert "training_runs" in result.out and "experiments" in result.out
    assert "0002 EEG2025 experiment model" in result.out
    assert "nothing was written" in result.out
    assert db.list_collection_names() == []
    plan = json.loads(run_cli("migrate", "--sqlite", legacy, "--dry-run", "--json",
                              *target_args).out)
    rows = {t["table"]: t["rows"] for t in plan["tables"]}
    assert rows["training_runs"] == 30
    assert db.list_collection_names() == []


def test_changed_applied_migration_is_refused(tmp_path, legacy, target_args, db):
    folder = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIR, folder, ignore=shutil.ignore_patterns("__*"))
    args = ["--sqlite", legacy, "--migrations", folder, *target_args]
    assert run_cli("migrate", *args).code == 0
    path = folder / "0005_lossless_experiments.py"  # the latest mapping of experiments
    path.write_text(path.read_text().replace('"notes": row["notes"]', '"remark": row["notes"]'))
    refused = run_cli("migrate", *args)
    assert refused.code == 1
    assert "0005_lossless_experiments.py has changed since it was applied" in refused.err
    assert db.experiments.find_one({"remark": {"$exists": True}}) is None
    assert run_cli("verify", *args).code == 1
    # The way out the message names: move below it, then up again with the new file.
    assert run_cli("migrate", *args, "--to", "1").code == 0
    assert run_cli("migrate", *args).code == 0
    assert db.experiments.find_one({"run_id": 3})["remark"] is None
    assert run_cli("verify", *args).code == 0


def test_added_migration_applies_on_top(tmp_path, legacy, target_args, db):
    folder = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIR, folder, ignore=shutil.ignore_patterns("__*"))
    args = ["--sqlite", legacy, "--migrations", folder, *target_args]
    assert run_cli("migrate", *args).code == 0
    (folder / f"{NEWEST + 1:04d}_no_subjects.py").write_text(
        f"VERSION = {NEWEST + 1}\nDESCRIPTION = 'stop syncing subjects'\n"
        "def upgrade(model):\n    model.exclude_table('subjects')\n"
        "    model.create_index('epochs', [('metrics.val_loss', 1)])\n")
    result = run_cli("migrate", *args, "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["dropped"] == ["subjects"]
    assert "metrics.val_loss_1" in db.epochs.index_information()
    gap = folder / f"{NEWEST + 3:04d}_gap.py"
    gap.write_text(f"VERSION = {NEWEST + 3}\ndef upgrade(model):\n    pass\n")
    broken = run_cli("migrate", *args)
    assert broken.code == 2 and f"expected version {NEWEST + 2:04d} next" in broken.err


def test_a_held_lease_stops_a_second_migrate(legacy, target_args, db):
    holder = Lease(StateStore(db, "testhost"), "migrate")
    holder.host = "another-host"  # a live holder elsewhere: its lease must be respected
    holder.acquire()
    refused = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert refused.code == 1
    assert "holds the migrate lease" in refused.err
    assert "experiments" not in db.list_collection_names()
    holder.release()
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0


def test_reconcile_repairs_exactly_what_changed(legacy, target_args, db):
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    conn = sqlite3.connect(legacy)
    conn.execute("UPDATE training_runs SET status = 'failed', notes = 'oom' WHERE run_id = 4")
    conn.execute("DELETE FROM epoch_history WHERE id IN (1, 2)")
    conn.execute("INSERT INTO config VALUES ('new_key', 'v', 'added later')")
    conn.commit()
    conn.close()
    # A document of this source no legacy row projects to, and another source's document
    # (never this source's to compare or delete).
    db.checkpoints.insert_one({"stray": True, "_source": "testhost"})
    db.checkpoints.insert_one({"theirs": True, "_source": "otherhost"})

    found = run_cli("verify", "--sqlite", legacy, "--json", *target_args)
    assert found.code == 1
    checks = {c["collection"]: c for c in json.loads(found.out)["collections"]}
    assert checks["experiments"]["different"] == 1
    assert checks["experiments"]["samples"]["different"] == [{"run_id": 4}]
    assert checks["epochs"]["extra"] == 2
    assert checks["config"]["missing"] == 1
    assert checks["config"]["samples"]["missing"] == [{"key": "new_key"}]
    assert checks["checkpoints"]["extra"] == 1
    text = run_cli("verify", "--sqlite", legacy, *target_args)
    assert "DIFFERENCES FOUND" in text.out and "different, e.g." in text.out

    repaired = run_cli("migrate", "--sqlite", legacy, "--json", *target_args)
    report = json.loads(repaired.out)
    assert report["kind"] == "reconcile"
    assert report["written"] == 2 and report["deleted"] == 3
    assert db.experiments.find_one({"run_id": 4})["status"] == "failed"
    assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0
    assert db.checkpoints.count_documents({"theirs": True}) == 1


def test_another_source_id_for_the_same_file_is_refused(legacy, target_args, db):
    """Two ids for one file would mirror it twice; the file's host and path name it."""
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    other = [a if a != "testhost" else "otherhost" for a in target_args]
    refused = run_cli("migrate", "--sqlite", legacy, *other)
    assert refused.code == 2, refused
    assert "'testhost'" in refused.err and len(refused.err.strip().splitlines()) == 1


def test_a_lease_held_by_a_dead_or_reborn_process_here_is_taken_over(legacy, target_args, db):
    """kill -9 leaves the lease behind; a restarted container reuses host name and pid."""
    store = StateStore(db)
    holder = Lease(store, "run")
    holder.acquire()
    # Same host and pid as this test process, but another process (its start differs):
    store.state.update_one({"_id": store.key("lease")}, {"$set": {"process": "boot:12345"}})
    taker = Lease(store, "migrate")
    taker.acquire()
    assert store.state.find_one({"_id": store.key("lease")})["owner"] == taker.owner
    taker.release()
    # A live holder on this host with a matching process token is respected.
    holder.acquire()
    with pytest.raises(MigrationError, match="holds the run lease"):
        Lease(store, "migrate").acquire()
    holder.release()


def test_0004_indexes_the_list_and_hdf5_files_up_from_3_and_down(legacy, target_args, db):
    assert run_cli("migrate", "--sqlite", legacy, "--to", "3", *target_args).code == 0
    assert "metrics.best_val_loss_1_run_id_1" not in db.experiments.index_information()
    assert "host_1_path_1" not in db.hdf5_files.index_information()

    up = run_cli("migrate", "--sqlite", legacy, "--to", "4", "--json", *target_args)
    assert up.code == 0, up
    assert (json.loads(up.out)["from_version"], json.loads(up.out)["to_version"]) == (3, 4)
    loss = db.experiments.index_information()["metrics.best_val_loss_1_run_id_1"]
    assert loss["key"] == [("metrics.best_val_loss", 1), ("run_id", 1)]
    assert db.hdf5_files.index_information()["host_1_path_1"]["key"] == [("host", 1),
                                                                          ("path", 1)]
    assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0

    down = run_cli("migrate", "--sqlite", legacy, "--to", "3", "--json", *target_args)
    assert down.code == 0, down
    assert "metrics.best_val_loss_1_run_id_1" not in db.experiments.index_information()
    assert "host_1_path_1" not in db.hdf5_files.index_information()
    assert [e["version"] for e in db["_syncd_changelog"].find().sort("version", 1)] == [1, 2, 3]
