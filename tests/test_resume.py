"""kill -9 at any point of `syncd migrate`: the next run loses and doubles nothing."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import NEWEST, run_cli, syncd_process

CHUNK = "400"


@pytest.fixture(scope="module")
def legacy_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("legacy") / "template.db"
    make_eeg2025(path, rows=8000)
    return path


@pytest.fixture
def legacy(tmp_path, legacy_template):
    path = tmp_path / "metadata.db"
    path.write_bytes(legacy_template.read_bytes())
    return path


def _counts(path):
    conn = sqlite3.connect(path)
    out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
           for t in ("training_runs", "epoch_history", "model_checkpoints", "subjects")}
    conn.close()
    return out


def _assert_exact(path, db, target_args):
    counts = _counts(path)
    assert db.experiments.count_documents({}) == counts["training_runs"]
    assert db.epochs.count_documents({}) == counts["epoch_history"]
    assert db.checkpoints.count_documents({}) == counts["model_checkpoints"]
    assert db.subjects.count_documents({}) == counts["subjects"]
    ids = [d["_id"] for d in db.epochs.find({}, {"_id": 1})]
    assert len(ids) == len(set(ids))
    verified = run_cli("verify", "--sqlite", path, "--json", *target_args)
    assert verified.code == 0, verified
    assert not [c for c in db.list_collection_names() if c.startswith("_syncd_stage.")]
    assert db["_syncd_state"].find_one({"_id": "job:testhost"}) is None


def _crash(path, target_args, point):
    proc = syncd_process("migrate", "--sqlite", path, "--chunk-size", CHUNK, *target_args,
                         env={"SYNCD_CRASH_AT": point})
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, (point, out, err[-2000:])


@pytest.mark.parametrize("point", [
    "copy.after_pending:3",
    "copy.after_insert:1",
    "copy.after_insert:17",
    "copy.after_checkpoint:9",
    "finish.before_changelog",
    "finish.before_clear",
])
def test_killed_migrate_resumes_exactly(point, legacy, target_args, db):
    _crash(legacy, target_args, point)
    resumed = run_cli("migrate", "--sqlite", legacy, "--json", *target_args)
    assert resumed.code == 0, resumed
    report = json.loads(resumed.out)
    assert report["to_version"] == NEWEST
    if point.startswith("copy."):
        assert report["resumed"] is True
    _assert_exact(legacy, db, target_args)
    assert [e["version"] for e in db["_syncd_changelog"].find().sort("version", 1)] == list(
        range(1, NEWEST + 1))


def test_rows_deleted_from_the_pending_chunk_do_not_come_back(legacy, target_args, db):
    """The chunk being written at the crash is undone, then read again from the legacy DB."""
    _crash(legacy, target_args, "copy.after_insert:4")
    job = db["_syncd_state"].find_one({"_id": "job:testhost"})
    assert job["pending"] and job["pending"]["ids"]
    entry = job["tables"][job["pending"]["index"]]
    position = entry["position"] or 0
    conn = sqlite3.connect(legacy)
    table = entry["table"]
    key = {"epoch_history": "id", "model_checkpoints": "checkpoint_id",
           "training_runs": "run_id"}.get(table, "rowid")
    deleted = conn.execute(f"DELETE FROM {table} WHERE {key} > ? AND {key} <= ? AND "
                           f"{key} % 3 = 0", (position, position + int(CHUNK))).rowcount
    conn.commit()
    conn.close()
    assert deleted > 0
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    # History's baseline holds no snapshot of a deleted row (a restore would bring it back).
    conn = sqlite3.connect(legacy)
    rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    conn.close()
    assert db["_syncd_history"].count_documents({"table": table}) == rows
    _assert_exact(legacy, db, target_args)


def test_killed_at_random_moments(legacy, target_args, db):
    rng = random.Random(7)
    for _ in range(3):
        proc = syncd_process("migrate", "--sqlite", legacy, "--chunk-size", "200", *target_args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is writing
            if db["_syncd_state"].find_one({"_id": "job:testhost"}) is not None:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    final = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert final.code == 0, final
    _assert_exact(legacy, db, target_args)


def test_second_migrate_is_a_no_op(legacy, target_args, db):
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    again = run_cli("migrate", "--sqlite", legacy, "--json", *target_args)
    report = json.loads(again.out)
    assert report["kind"] == "reconcile"
    assert report["written"] == 0 and report["deleted"] == 0
    assert report["unchanged"] == report["rows"] == sum(_counts(legacy).values()) + 14
    _assert_exact(legacy, db, target_args)


def test_version_move_builds_in_staging_and_readers_keep_the_old_version(
        tmp_path, legacy, target_args, db):
    """A new version of an existing collection is built aside; a crash leaves the old one."""
    import shutil

    from syncd.engine.migration_files import DEFAULT_DIR

    folder = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIR, folder, ignore=shutil.ignore_patterns("__*"))
    args = ["--sqlite", legacy, "--migrations", folder, *target_args]
    assert run_cli("migrate", *args).code == 0
    runs = _counts(legacy)["epoch_history"]
    (folder / f"{NEWEST + 1:04d}_epoch_rank.py").write_text(
        f"VERSION = {NEWEST + 1}\nDESCRIPTION = 'epochs carry a rank'\n"
        "def epoch(row, ctx):\n"
        "    return {'run_id': row['run_id'], 'epoch': row['epoch'], 'rank': 1}\n"
        "def upgrade(model):\n    model.map_table('epoch_history', 'epochs', build=epoch)\n")
    proc = syncd_process("migrate", "--chunk-size", CHUNK, *args,
                         env={"SYNCD_CRASH_AT": "copy.after_insert:20"})
    proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL
    assert [n for n in db.list_collection_names() if n.startswith("_syncd_stage.epochs.")]
    # Readers still see the whole version-2 collection, untouched.
    assert db.epochs.count_documents({}) == runs
    assert db.epochs.count_documents({"rank": {"$exists": True}}) == 0
    assert db.epochs.count_documents({"metrics.train_loss": {"$exists": True}}) == runs
    for point in ("swap.after_rename:2", None):
        env = {"SYNCD_CRASH_AT": point} if point else {}
        proc = syncd_process("migrate", "--chunk-size", CHUNK, *args, env=env)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == (-signal.SIGKILL if point else 0), err[-2000:]
    assert db.epochs.count_documents({"rank": 1}) == runs
    assert db.epochs.count_documents({"metrics": {"$exists": True}}) == 0
    assert run_cli("verify", *args).code == 0
