"""The real EEG2025 metadata.db, end to end: migrate, the tracker model, verify."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from bson import ObjectId

from syncd.client.tracker import Tracker
from syncd.projection.ids import derive_id
from tests.conftest import run_cli


def test_fixture_migrates_into_the_tracker_model(fixture_db, target_args, db):
    result = run_cli("migrate", "--sqlite", fixture_db, *target_args)
    assert result.code == 0, result
    assert db.experiments.count_documents({}) == 37
    assert db.epochs.count_documents({}) == 5
    assert db.checkpoints.count_documents({}) == 5
    assert db.config.count_documents({}) == 4
    assert db.subjects.count_documents({}) == 0
    assert db.cache_files.count_documents({}) == 0
    assert "_syncd_stage.experiments" not in db.list_collection_names()

    conn = sqlite3.connect(fixture_db)
    row = conn.execute("SELECT run_id, challenge, model_name, start_time, status, config "
                       "FROM training_runs WHERE run_id = 34").fetchone()
    exp = db.experiments.find_one({"run_id": 34})
    assert exp["_id"] == derive_id("testhost", "training_runs", (34,))
    assert isinstance(exp["_id"], ObjectId)
    assert exp["challenge"] == row[1]
    assert exp["model"] == {"name": row[2]}
    assert exp["status"] == row[4]
    assert exp["config"] == json.loads(row[5])  # parsed into an embedded document
    assert isinstance(exp["config"], dict) and exp["config"]["batch_size"] == 128
    # ISO text (naive, read as UTC here) became a BSON datetime (millisecond precision).
    start = dt.datetime.fromisoformat(row[3])
    assert exp["start_time"] == start.replace(microsecond=start.microsecond // 1000 * 1000)
    assert exp["end_time"] is None
    assert set(exp["metrics"]) == {"best_val_loss", "best_epoch", "total_epochs"}
    assert "_flags" not in exp

    epochs = list(db.epochs.find({"run_id": 34}).sort("epoch", 1))
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(e["experiment_id"] == exp["_id"] for e in epochs)
    legacy = conn.execute("SELECT train_loss, val_loss, learning_rate, duration_seconds "
                          "FROM epoch_history WHERE run_id = 34 ORDER BY epoch").fetchall()
    assert [(e["metrics"]["train_loss"], e["metrics"]["val_loss"], e["metrics"]["learning_rate"],
             e["timing"]["duration_seconds"]) for e in epochs] == legacy

    ckpts = list(db.checkpoints.find({"run_id": 34}).sort("epoch", 1))
    # The legacy scripts stored numpy.bool_ True (a one-byte BLOB): a real boolean now.
    assert [c["is_best"] for c in ckpts] == [True, True]
    assert ckpts[0]["file"]["path"].endswith("challenge2_r1r2_epoch1.pth")
    assert ckpts[0]["file"]["size_mb"] is None
    assert ckpts[0]["experiment_id"] == exp["_id"]

    config = db.config.find_one({"key": "db_version"})
    assert config["value"] == "1.0" and config["description"] == "Database schema version"
    conn.close()

    verified = run_cli("verify", "--sqlite", fixture_db, *target_args)
    assert verified.code == 0, verified
    assert "source == target" in verified.out


def test_views_are_reported_not_synced(fixture_db, target_args, db):
    plan = run_cli("migrate", "--sqlite", fixture_db, "--dry-run", "--json", *target_args)
    assert plan.code == 0, plan
    data = json.loads(plan.out)
    assert data["views_not_synced"] == ["best_models", "training_summary"]
    assert {t["table"] for t in data["tables"]} == {
        "cache_files", "config", "epoch_history", "model_checkpoints", "subjects",
        "training_runs"}
    assert db.list_collection_names() == []  # dry run wrote nothing


def test_tracker_read_api(fixture_db, target_args, db):
    assert run_cli("migrate", "--sqlite", fixture_db, *target_args).code == 0
    tracker = Tracker(db)
    history = tracker.history(35)
    assert history["experiment"]["run_id"] == 35
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert len(history["checkpoints"]) == 2
    same = tracker.history(str(history["experiment"]["_id"]))
    assert same["experiment"] == history["experiment"]
    compared = tracker.compare([35, 34, 1])
    assert [c["run_id"] for c in compared] == [35, 34, 1]
    running = tracker.search({"status": "running"})
    assert len(running) == 37
    # Every fixture run is still 'running': none is a completed best model yet.
    assert tracker.best_experiments(2) == []
    assert [e["run_id"] for e in tracker.best_experiments(2, n=3, status=None)] == []

    out = run_cli("experiments", "history", "35", "--json", *target_args)
    assert out.code == 0, out
    assert [e["epoch"] for e in json.loads(out.out)["epochs"]] == [1, 2]
    missing = run_cli("experiments", "history", "9999", *target_args)
    assert missing.code == 1 and "no experiment" in missing.err
