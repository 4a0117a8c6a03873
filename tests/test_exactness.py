"""`syncd run` loses nothing to the moments the change log cannot replay.

Schema changes while the daemon is busy, a schema-change reconcile that fails or is
killed, a second consumer pruning the shared change log, and a target that loses
writes it acknowledged: each used to leave rows missing while syncd said "caught
up". Each test makes the moment happen on real servers and checks with
`syncd verify`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=10)
    return path


def create_with_rows(path: Path, table: str, rows: int) -> None:
    """A legacy script adding a table and filling it in one transaction."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT, value REAL)")
    conn.executemany(f"INSERT INTO {table} (name, value) VALUES (?, ?)",
                     [(f"n{i}", i / 7) for i in range(rows)])
    conn.commit()
    conn.close()


def recreate_config(path: Path) -> None:
    """A legacy script dropping and re-creating a synced table (its triggers go too)."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        BEGIN;
        CREATE TABLE config_new AS SELECT * FROM config;
        DROP TABLE config;
        CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT, description TEXT);
        INSERT INTO config SELECT * FROM config_new;
        DROP TABLE config_new;
        COMMIT;
    """)
    conn.close()


def triggers_on(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    n = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND "
                     "tbl_name = ?", (table,)).fetchone()[0]
    conn.close()
    return n


def paused(tmp_path: Path, point: str) -> dict[str, str]:
    return {"SYNCD_PAUSE_AT": point, "SYNCD_PAUSE_DIR": str(tmp_path)}


def test_schema_changes_during_a_reconcile_are_not_lost(tmp_path, legacy, target_args, db):
    """A table created, and another re-created, while a schema-change reconcile runs."""
    daemon = Daemon(tmp_path, legacy, target_args, extra=["--chunk-size", "50"],
                    env=paused(tmp_path, "reconcile.after_write"))
    try:
        daemon.wait_ready(db)
        legacy_write(legacy, "ALTER TABLE epoch_history ADD COLUMN note TEXT")
        wait_for(lambda: (tmp_path / "reconcile.after_write.paused").exists(), 60,
                 "the schema-change reconcile to be under way")
        create_with_rows(legacy, "annotations", 120)
        recreate_config(legacy)
        (tmp_path / "reconcile.after_write.resume").touch()
        wait_for(lambda: db.annotations.count_documents({}) == 120, 60,
                 "the table created during the reconcile")
        wait_for(lambda: triggers_on(legacy, "config") == 3, 30,
                 "triggers on the re-created table")
        legacy_write(legacy, "UPDATE config SET value = 'changed' WHERE key = 'cache_dir'")
        wait_for(lambda: (db.config.find_one({"key": "cache_dir"}) or {}).get("value")
                 == "changed", 30, "an update of the re-created table")
        wait_for(lambda: verified(legacy, target_args), 60, "source == target")
    finally:
        assert daemon.stop()[0] == 0


def test_a_table_created_during_the_start_up_backfill_syncs(tmp_path, legacy, target_args,
                                                            db):
    daemon = Daemon(tmp_path, legacy, target_args, extra=["--chunk-size", "50"],
                    env=paused(tmp_path, "copy.after_checkpoint"))
    try:
        wait_for(lambda: (tmp_path / "copy.after_checkpoint.paused").exists(), 60,
                 "the backfill to be under way")
        create_with_rows(legacy, "annotations", 80)
        recreate_config(legacy)
        (tmp_path / "copy.after_checkpoint.resume").touch()
        daemon.wait_ready(db)
        wait_for(lambda: db.annotations.count_documents({}) == 80, 60, "the new table")
        wait_for(lambda: triggers_on(legacy, "config") == 3, 30, "triggers on config")
        legacy_write(legacy, "DELETE FROM config WHERE key = 'cache_dir'")
        wait_for(lambda: db.config.find_one({"key": "cache_dir"}) is None, 30,
                 "a delete from the re-created table")
        wait_for(lambda: verified(legacy, target_args), 60, "source == target")
    finally:
        assert daemon.stop()[0] == 0


def test_a_schema_change_during_a_mongodb_outage_is_synced_after_it(tmp_path, legacy,
                                                                     own_mongo):
    mongo, client = own_mongo
    args = mongo.target_args("outage")
    daemon = Daemon(tmp_path, legacy, args)
    try:
        daemon.wait_ready(client.outage)
        mongo.stop()
        create_with_rows(legacy, "annotations", 500)
        legacy_write(legacy, "ALTER TABLE subjects ADD COLUMN site TEXT")
        legacy_write(legacy, "UPDATE subjects SET site = 'A'")
        local = tmp_path / "state" / "daemon.json"
        wait_for(lambda: json.loads(local.read_text()).get("outage"), 30, "the outage")
        mongo.start()
        wait_for(lambda: client.outage.annotations.count_documents({}) == 500, 60,
                 "the table created during the outage")
        wait_for(lambda: verified(legacy, args), 60, "source == target")
    finally:
        assert daemon.stop()[0] == 0


def test_a_schema_change_reconcile_killed_midway_is_finished_after_a_restart(
        tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args, extra=["--chunk-size", "100"],
                    env={"SYNCD_CRASH_AT": "reconcile.after_write"})
    daemon.wait_ready(db)
    create_with_rows(legacy, "annotations", 500)
    wait_for(lambda: daemon.proc.poll() is not None, 60, "the crash inside the reconcile")
    assert daemon.stop()[0] == -signal.SIGKILL
    assert db.annotations.count_documents({}) < 500
    daemon = Daemon(tmp_path, legacy, target_args, extra=["--chunk-size", "100"])
    try:
        daemon.wait_ready(db)
        wait_for(lambda: db.annotations.count_documents({}) == 500, 60, "every row")
        assert verified(legacy, target_args)
    finally:
        assert daemon.stop()[0] == 0


def home(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir(exist_ok=True)
    return tmp_path / name


def second_target(target_args: list[str], name: str) -> list[str]:
    args = list(target_args)
    args[args.index("--database") + 1] = name
    return args


def test_two_followers_of_one_change_log_each_get_every_row(tmp_path, legacy, target_args,
                                                            client, db_name):
    other = db_name + "_b"
    args_b = second_target(target_args, other)
    a = Daemon(home(tmp_path, "a"), legacy, target_args)
    b = Daemon(home(tmp_path, "b"), legacy, args_b)
    try:
        a.wait_ready(client[db_name])
        b.wait_ready(client[other])
        assert b.stop()[0] == 0
        for epoch in range(100, 160):  # written while b is stopped; a applies and prunes
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                         "VALUES (1, ?, 0.5)", (epoch,))
        wait_for(lambda: verified(legacy, target_args), 60, "a to catch up")
        assert a.status()["daemon"]["running"]
        b = Daemon(home(tmp_path, "b"), legacy, args_b)
        b.wait_ready(client[other])
        wait_for(lambda: verified(legacy, args_b), 60, "b to catch up")
        assert client[other].epochs.count_documents({"epoch": {"$gte": 100}}) == 60
        listed = run_cli("capture", "status", "--json", "--sqlite", legacy)
        assert listed.code == 0 and len(json.loads(listed.out)["consumers"]) == 2
    finally:
        for daemon in (a, b):
            assert daemon.stop()[0] == 0
        client.drop_database(other)


def test_a_gap_in_the_change_log_is_found_and_reconciled(tmp_path, legacy, target_args,
                                                         client, db_name):
    """A consumer away longer than the other's retention finds its entries pruned."""
    other = db_name + "_b"
    args_b = second_target(target_args, other)
    b = Daemon(home(tmp_path, "b"), legacy, args_b)
    b.wait_ready(client[other])
    assert b.stop()[0] == 0
    a = Daemon(home(tmp_path, "a"), legacy, target_args, "log_retention_seconds = 0.1\n")
    try:
        a.wait_ready(client[db_name])
        for epoch in range(100, 130):
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                         "VALUES (1, ?, 0.5)", (epoch,))
        legacy_write(legacy, "UPDATE training_runs SET status = 'failed' WHERE run_id = 2")

        def pruned() -> bool:
            conn = sqlite3.connect(legacy)
            n = conn.execute("SELECT count(*) FROM _syncd_changes WHERE seq > 0").fetchone()
            conn.close()
            return n[0] <= 1
        wait_for(pruned, 60, "a to prune past b's position")
        b = Daemon(home(tmp_path, "b"), legacy, args_b)
        b.wait_ready(client[other])
        wait_for(lambda: verified(legacy, args_b), 60, "b to reconcile the gap")
        assert client[other].experiments.find_one({"run_id": 2})["status"] == "failed"
    finally:
        for daemon in (a, b):
            code, err = daemon.stop()
            assert code == 0
    assert "gap" in err


def test_a_target_that_lost_acknowledged_writes_is_reconciled(tmp_path, legacy, own_mongo):
    mongo, client = own_mongo
    args = mongo.target_args("lossy", timeout=2)
    daemon = Daemon(tmp_path, legacy, args)
    try:
        daemon.wait_ready(client.lossy)
        for epoch in range(100, 120):
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                         "VALUES (1, ?, 0.5)", (epoch,))
        wait_for(lambda: client.lossy.epochs.count_documents({"epoch": {"$gte": 100}}) == 20,
                 30, "the writes")
        daemon.proc.send_signal(signal.SIGSTOP)
        # The server dies and comes back without the last writes it acknowledged.
        assert mongo.proc is not None
        mongo.proc.kill()
        mongo.proc.wait()
        mongo.start()
        client.lossy.epochs.delete_many({"epoch": {"$gte": 100}})
        daemon.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: client.lossy.epochs.count_documents({"epoch": {"$gte": 100}}) == 20,
                 60, "the lost writes to be made again")
        assert verified(legacy, args)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
        assert daemon.stop()[0] == 0


def test_reconcile_on_demand_while_the_daemon_runs(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        # Drift no trigger sees (as a VACUUM or INSERT OR REPLACE can cause).
        db.config.delete_one({"key": "cache_dir"})
        db.subjects.update_many({}, {"$set": {"age": -1}})
        result = run_cli("reconcile", "config", *daemon.args)
        assert result.code == 0, result
        assert "config" in result.out and db.config.find_one({"key": "cache_dir"})
        assert db.subjects.count_documents({"age": -1}) > 0  # only what was asked
        unknown = run_cli("reconcile", "no_such_table", *daemon.args)
        assert unknown.code == 1 and "not a synced table" in unknown.out
        daemon.proc.send_signal(signal.SIGUSR1)  # every table, without waiting
        wait_for(lambda: db.subjects.count_documents({"age": -1}) == 0, 60,
                 "the reconcile SIGUSR1 asks for")
        assert verified(legacy, target_args)
    finally:
        assert daemon.stop()[0] == 0
    gone = run_cli("reconcile", *daemon.args)
    assert gone.code == 1 and "no syncd run is following" in gone.err


def test_capture_uninstall_is_refused_while_a_daemon_follows(tmp_path, legacy, target_args,
                                                             db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        refused = run_cli("capture", "uninstall", "--sqlite", legacy)
        assert refused.code == 1 and "syncd run is following" in refused.err
        assert triggers_on(legacy, "config") == 3
    finally:
        assert daemon.stop()[0] == 0
    assert run_cli("capture", "uninstall", "--sqlite", legacy).code == 0
    assert triggers_on(legacy, "config") == 0
