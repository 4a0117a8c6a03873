"""What legacy scripts do to metadata.db while `syncd run` follows it, on real servers:
VACUUM (which renumbers the rowids of tables without a primary key and fires no
trigger), schema drift, odd keys, a writer holding its write lock."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from syncd.sample import make_eeg2025
from syncd.sinks.history_reader import HistoryReader
from tests.daemon_support import Daemon, legacy_write, verified, wait_for

SOURCE = "testhost"  # tests/conftest.py target_args


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=3)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE logs (msg TEXT, n INTEGER)")  # keyed by rowid
    conn.executemany("INSERT INTO logs VALUES (?, ?)", [(f"m{i}", i) for i in range(10)])
    conn.commit()
    conn.close()
    return path


def _vacuum(path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.close()


def _rows(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT msg, n FROM logs"))
    finally:
        conn.close()


def _history_now(db) -> list[tuple]:
    return sorted((r["msg"], r["n"]) for r in HistoryReader(db, SOURCE).rows_as_of("logs"))


def test_vacuum_renumbering_rowids_is_followed_running_and_stopped(tmp_path, legacy,
                                                                   target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        legacy_write(legacy, "DELETE FROM logs WHERE n IN (1, 2, 3)")
        wait_for(lambda: db.logs.count_documents({}) == 7, 30, "the delete")
        _vacuum(legacy)  # rowids 1,4..10 become 1..7
        legacy_write(legacy, "UPDATE logs SET msg = 'changed' WHERE n = 4")
        legacy_write(legacy, "DELETE FROM logs WHERE n = 9")
        wait_for(lambda: verified(legacy, target_args), 30, "the mirror after a VACUUM")
        assert sorted((d["msg"], d["n"]) for d in db.logs.find()) == _rows(legacy)
        wait_for(lambda: _history_now(db) == _rows(legacy), 30, "history now == the rows")
    finally:
        assert daemon.stop()[0] == 0
    # The same while syncd is stopped: its log resumes, and still nothing says the
    # rowids moved.
    legacy_write(legacy, "DELETE FROM logs WHERE n IN (0, 5)")
    _vacuum(legacy)
    legacy_write(legacy, "UPDATE logs SET msg = 'again' WHERE n = 7")
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        wait_for(lambda: verified(legacy, target_args), 30, "the mirror after a VACUUM")
        assert sorted((d["msg"], d["n"]) for d in db.logs.find()) == _rows(legacy)
        wait_for(lambda: _history_now(db) == _rows(legacy), 30, "history now == the rows")
    finally:
        assert daemon.stop()[0] == 0


class LongWriter:
    """A legacy script that holds its write transaction (BEGIN IMMEDIATE or EXCLUSIVE)
    for `seconds`, longer than every busy timeout, then commits."""

    def __init__(self, path, mode: str, seconds: float, sql: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"BEGIN {mode}")
        self.conn.execute(sql)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._commit, args=(seconds,))
        self.thread.start()

    def _commit(self, seconds: float) -> None:
        try:
            time.sleep(seconds)
            self.conn.execute("COMMIT")
        except BaseException as exc:  # the test asserts there was none
            self.error = exc
        finally:
            self.conn.close()

    def join(self) -> None:
        self.thread.join()
        assert self.error is None, self.error


@pytest.mark.parametrize("mode", ["IMMEDIATE", "EXCLUSIVE"])
def test_start_waits_out_a_writer_holding_its_lock(tmp_path, legacy, target_args, db, mode):
    """Triggers cannot be installed (IMMEDIATE), nor the schema read (EXCLUSIVE), while
    a writer holds the lock past the 5 s busy timeout: `syncd run` says what it waits
    for and goes on when the writer commits (it had exited 1 or 2: "database is locked")."""
    writer = LongWriter(legacy, mode, 12, "INSERT INTO config VALUES ('held', 'v', 'd')")
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        writer.join()
        wait_for(lambda: db.config.find_one({"key": "held"}), 30, "the writer's row")
        legacy_write(legacy, "INSERT INTO config VALUES ('after', 'v', 'd')")
        wait_for(lambda: verified(legacy, target_args), 30, "source == target")
    finally:
        writer.thread.join()
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    if mode == "IMMEDIATE":  # (reads under EXCLUSIVE may get through on their retries)
        assert "has held the database locked for over 5 s" in err, err


def test_syncd_own_trigger_install_is_not_taken_for_a_vacuum(tmp_path, legacy, target_args, db):
    """A legacy CREATE TABLE moves the schema version (it might have been a VACUUM:
    the tables keyed by rowid reconcile once); syncd's own trigger install on the new
    table moves it again, and that is no reason for a second reconcile of them."""
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        # following (its start-up over: a CREATE during it is the start-up's to see)
        legacy_write(legacy, "INSERT INTO logs VALUES ('before', 98)")
        wait_for(lambda: db.logs.count_documents({"n": 98}) == 1, 30, "a first step")
        legacy_write(legacy, "CREATE TABLE extra (id INTEGER PRIMARY KEY, x TEXT)")
        legacy_write(legacy, "INSERT INTO extra (x) VALUES ('a')")
        wait_for(lambda: db.extra.count_documents({}) == 1, 30, "the new table's row")
        legacy_write(legacy, "INSERT INTO logs VALUES ('after', 99)")  # more steps
        wait_for(lambda: db.logs.count_documents({"n": 99}) == 1, 30, "a later row")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert err.count("the schema version moved") == 1, err[-3000:]


def test_a_resumed_start_reads_no_table_that_has_a_primary_key(tmp_path, target_args, db):
    """The check for a VACUUM while syncd was stopped reconciles the tables keyed by rowid
    only: a database whose tables all have a primary key is not read again at a start."""
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=3)
    for key in ("first", "resumed"):
        daemon = Daemon(tmp_path, path, target_args)
        try:
            daemon.wait_ready(db)
            legacy_write(path, "INSERT INTO config VALUES (?, 'v', 'd')", (key,))
            wait_for(lambda k=key: db.config.find_one({"key": k}), 30, "a row")
        finally:
            code, err = daemon.stop()
        assert code == 0, err[-3000:]
    assert "VACUUM" not in err and "starting (" not in err, err[-3000:]
