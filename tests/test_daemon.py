"""`syncd run` follows every committed change of the legacy scripts, exactly."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=20)
    return path


def test_triggers_mode_follows_every_kind_of_change(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        assert verified(legacy, target_args)
        run = legacy_write(legacy, "INSERT INTO training_runs (challenge, model_name, "
                           "start_time, status, config) VALUES (2, 'EEGNeX', "
                           "'2025-10-20T10:00:00', 'running', '{\"batch_size\": 64}')")
        for epoch in (1, 2, 3):
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, train_loss, "
                         "val_loss, learning_rate, duration_seconds, timestamp) VALUES "
                         "(?, ?, 0.1, 0.2, 0.002, 60.0, '2025-10-20T10:01:00')", (run, epoch))
        legacy_write(legacy, "UPDATE training_runs SET status = 'completed', "
                     "best_val_loss = 0.2 WHERE run_id = ?", (run,))
        legacy_write(legacy, "DELETE FROM model_checkpoints WHERE checkpoint_id = 1")
        legacy_write(legacy, "UPDATE config SET key = 'cache_root' WHERE key = 'cache_dir'")
        legacy_write(legacy, "INSERT INTO subjects (subject_id, age) VALUES ('NDAR_NEW', 9.5)")
        # A legacy bug: an UPDATE naming a column that does not exist fails; nothing to sync.
        with pytest.raises(sqlite3.OperationalError):
            legacy_write(legacy, "UPDATE training_runs SET status = 'x' WHERE id = 1")

        wait_for(lambda: verified(legacy, target_args), 60, "the changes to be synced")
        exp = db.experiments.find_one({"run_id": run})
        assert exp["status"] == "completed" and exp["config"] == {"batch_size": 64}
        assert db.epochs.count_documents({"experiment_id": exp["_id"]}) == 3
        assert db.config.find_one({"key": "cache_root"}) is not None
        assert db.config.find_one({"key": "cache_dir"}) is None
        assert db.subjects.find_one({"subject_id": "NDAR_NEW"})["age"] == 9.5

        # Applied log entries are pruned (the last applied one stays as a marker).
        def pruned() -> bool:
            conn = sqlite3.connect(legacy)
            n = conn.execute("SELECT count(*) FROM _syncd_changes WHERE seq > 0").fetchone()[0]
            conn.close()
            return n <= 1
        wait_for(pruned, 30, "the change log to be pruned")
        status = daemon.status()
        assert status["daemon"]["running"] and status["daemon"]["mode"] == "triggers"
        tables = {t["table"]: t for t in status["daemon"]["tables"]}
        assert tables["epoch_history"]["applied"] >= 3
        assert tables["epoch_history"]["lag_rows"] == 0
        assert tables["training_runs"]["last_applied_at"]
        assert tables["config"]["deleted"] >= 1  # cache_dir
        text = run_cli("status", *daemon.args).out.splitlines()  # as the dashboard shows it
        top = next(i for i, ln in enumerate(text)
                   if ln.startswith("table ") and " last applied " in ln)
        header = text[top]
        row = next(ln for ln in text[top:] if ln.startswith("config "))
        at = header.index(" deleted ") + 1
        assert row[at:].split()[0] == str(tables["config"]["deleted"]), text
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert "stopped cleanly" in err
    after = run_cli("status", "--json", *daemon.args)
    assert json.loads(after.out)["daemon"]["running"] is False


def test_scan_mode_writes_nothing_to_the_legacy_database(tmp_path, legacy, target_args, db):
    conn = sqlite3.connect(legacy)
    schema_before = conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    daemon = Daemon(tmp_path, legacy, target_args, "reconcile_seconds = 1.0\n",
                    extra=["--capture", "scan"])
    try:
        daemon.wait_ready(db)
        run = legacy_write(legacy, "INSERT INTO training_runs (challenge, status) "
                           "VALUES (1, 'running')")
        wait_for(lambda: db.experiments.find_one({"run_id": run}), 30, "the new row")
        legacy_write(legacy, "UPDATE training_runs SET status = 'failed' WHERE run_id = 2")
        legacy_write(legacy, "DELETE FROM epoch_history WHERE id = 5")
        wait_for(lambda: verified(legacy, target_args), 60, "the reconcile to catch up")
        assert db.experiments.find_one({"run_id": 2})["status"] == "failed"
        tables = {t["table"]: t for t in daemon.status()["daemon"]["tables"]}
        assert tables["training_runs"]["mode"] == "scan"
        assert tables["training_runs"]["checkpoint"]["hwm"] >= run
    finally:
        code, err = daemon.stop(signal.SIGINT)
    assert code == 0, err[-3000:]
    conn = sqlite3.connect(legacy)
    assert conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall() == schema_before
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_killed_daemon_resumes_without_loss_or_doubles(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args,
                    env={"SYNCD_CRASH_AT": "daemon.after_apply"})
    try:
        daemon.wait_ready(db)
        ids = [legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                            "VALUES (3, ?, 0.5)", (e,)) for e in range(100, 110)]
        daemon.proc.communicate(timeout=60)
    finally:
        daemon.stop()  # a no-op once it died; never leave it running
    assert daemon.proc.returncode == -signal.SIGKILL  # died applying, before its checkpoint
    legacy_write(legacy, "DELETE FROM epoch_history WHERE id = ?", (ids[-1],))
    # The first row was applied before the crash (the crash came right after that
    # apply); logged as an INSERT and changed since, the restart's insert of it meets
    # the old document, which must be replaced.
    legacy_write(legacy, "UPDATE epoch_history SET val_loss = 0.25 WHERE id = ?", (ids[0],))
    again = Daemon(tmp_path, legacy, target_args)
    try:
        again.wait_ready(db)
        wait_for(lambda: verified(legacy, target_args), 60, "the restart to catch up")
        assert db.epochs.count_documents({"run_id": 3, "epoch": {"$gte": 100}}) == 9
        assert db.epochs.find_one({"run_id": 3, "epoch": 100})["metrics"]["val_loss"] == 0.25
        assert db["_syncd_quarantine"].count_documents({}) == 0
    finally:
        assert again.stop()[0] == 0


def test_killed_scan_daemon_resumes_on_the_rows_current_state(tmp_path, legacy,
                                                               target_args, db):
    """Scan mode, killed after applying rows but before saving its high-water mark:
    the restart meets those rows again, with documents that exist and have changed
    since, and lands on the rows' current state without quarantining anything."""
    daemon = Daemon(tmp_path, legacy, target_args, 'capture = "scan"\n',
                    env={"SYNCD_CRASH_AT": "daemon.after_apply"})
    try:
        daemon.wait_ready(db)
        first = legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                             "VALUES (3, 200, 0.5)")
        daemon.proc.communicate(timeout=60)
    finally:
        daemon.stop()
    assert daemon.proc.returncode == -signal.SIGKILL
    assert db.epochs.find_one({"run_id": 3, "epoch": 200})["metrics"]["val_loss"] == 0.5
    legacy_write(legacy, "UPDATE epoch_history SET val_loss = 0.125 WHERE id = ?", (first,))
    again = Daemon(tmp_path, legacy, target_args, 'capture = "scan"\n')
    try:
        again.wait_ready(db)
        wait_for(lambda: db.epochs.find_one({"run_id": 3, "epoch": 200})["metrics"]["val_loss"]
                 == 0.125, 60, "the re-applied row to be replaced")
        assert db["_syncd_quarantine"].count_documents({}) == 0
        assert verified(legacy, target_args)
    finally:
        assert again.stop()[0] == 0


def test_schema_drift_without_a_restart(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        legacy_write(legacy, "ALTER TABLE config ADD COLUMN scope TEXT")
        legacy_write(legacy, "INSERT INTO config VALUES ('gpu', 'rx5600', 'the GPU', 'host')")
        wait_for(lambda: (db.config.find_one({"key": "gpu"}) or {}).get("scope") == "host",
                 30, "the new column in a new document")
        # Existing documents get the new column too (the table is reconciled).
        wait_for(lambda: db.config.count_documents({"scope": {"$exists": False}}) == 0, 30,
                 "the new column in old documents")
        legacy_write(legacy, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        legacy_write(legacy, "INSERT INTO notes (text) VALUES ('first')")
        wait_for(lambda: db.notes.find_one({"text": "first"}), 30, "the new table")
        legacy_write(legacy, "INSERT INTO notes (text) VALUES ('second')")
        wait_for(lambda: db.notes.find_one({"text": "second"}), 30, "a row of the new table")
        # A legacy script drops and recreates a table: its triggers are gone with it.
        conn = sqlite3.connect(legacy)
        conn.executescript("DROP TABLE subjects; CREATE TABLE subjects (subject_id TEXT "
                           "PRIMARY KEY, age REAL); INSERT INTO subjects VALUES ('S1', 7.0);")
        conn.close()
        wait_for(lambda: db.subjects.count_documents({}) == 1, 30, "the recreated table")
        legacy_write(legacy, "INSERT INTO subjects VALUES ('S2', 8.0)")
        wait_for(lambda: db.subjects.find_one({"subject_id": "S2"}), 30,
                 "a change caught by the reinstalled triggers")
        wait_for(lambda: verified(legacy, target_args), 30, "source == target")
        legacy_write(legacy, "DROP TABLE cache_files")
        tables = wait_for(lambda: {t["table"]: t for t in daemon.status()["daemon"]["tables"]
                                   if t.get("dropped_at")}, 30, "the dropped table reported")
        assert "cache_files" in tables
    finally:
        assert daemon.stop()[0] == 0


def test_migrate_is_refused_while_the_daemon_runs(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        refused = run_cli("migrate", "--sqlite", legacy, *target_args)
        assert refused.code == 1 and "holds the run lease" in refused.err
    finally:
        assert daemon.stop()[0] == 0


def test_capture_uninstall_leaves_the_database_as_it_was(tmp_path, legacy):
    def snapshot():
        conn = sqlite3.connect(legacy)
        try:
            return (list(conn.iterdump()), conn.execute("PRAGMA journal_mode").fetchone(),
                    conn.execute("PRAGMA user_version").fetchone())
        finally:
            conn.close()

    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY, b)")  # no AUTOINCREMENT anywhere
    conn.commit()
    conn.close()
    for path in (legacy, plain):
        before = snapshot() if path == legacy else None
        installed = run_cli("capture", "install", "--sqlite", path)
        assert installed.code == 0, installed
        status = json.loads(run_cli("capture", "status", "--json", "--sqlite", path).out)
        assert status["log"] and set(status["tables"].values()) == {"yes"}
        assert run_cli("capture", "uninstall", "--sqlite", path).code == 0
        if before is not None:
            assert snapshot() == before
        conn = sqlite3.connect(path)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        conn.close()
        assert not [n for n in names if n.startswith("_syncd")]
        if path == plain:
            assert "sqlite_sequence" not in names


def test_capture_removed_under_the_daemon_is_recreated_and_caught_up(tmp_path, legacy,
                                                                     target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        for n in range(5):  # move the log's position well past where a new log starts
            legacy_write(legacy, "INSERT INTO config VALUES (?, 'v', 'd')", (f"k{n}",))
        wait_for(lambda: db.config.find_one({"key": "k4"}), 30, "the first changes")
        # Refused while the daemon follows the log (tests/test_exactness.py); forced here.
        assert run_cli("capture", "uninstall", "--force", "--sqlite", legacy).code == 0
        legacy_write(legacy, "INSERT INTO config VALUES ('unlogged', 'v', 'd')")
        wait_for(lambda: db.config.find_one({"key": "unlogged"}), 30,
                 "the change made while the log was gone")
        legacy_write(legacy, "INSERT INTO config VALUES ('after', 'v', 'd')")
        wait_for(lambda: db.config.find_one({"key": "after"}), 30, "a change in the new log")
        assert verified(legacy, target_args)
    finally:
        assert daemon.stop()[0] == 0


def test_nice_lowers_the_daemons_priority_and_bad_values_are_refused(tmp_path, legacy,
                                                                      target_args, db):
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    daemon = Daemon(tmp_path, legacy, target_args, "nice = 5\n")
    try:
        daemon.wait_ready(db)
        assert os.getpriority(os.PRIO_PROCESS, daemon.proc.pid) == min(19, base + 5)
    finally:
        assert daemon.stop()[0] == 0
    bad = tmp_path / "bad.toml"
    for setting in ("nice = 40", "events_maxlen = 0"):
        bad.write_text(f"[daemon]\n{setting}\n")
        refused = run_cli("run", "--sqlite", legacy, "--config", bad, *target_args)
        assert refused.code == 2 and f"[daemon] {setting}" in refused.err, refused
