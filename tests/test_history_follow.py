"""Every version of every row `syncd run` follows, on real servers: five updates in one
second kept in order; a DELETE, an INSERT OR REPLACE and two updates written while the
daemon is down after a kill -9, each stamped with the time its statement ran; the
`[history]` settings; schema changes versioned."""

from __future__ import annotations

import signal
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture
from syncd.daemon.history import MAX_VALUES_BYTES, VersionRecorder, fit
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025
from syncd.sinks.history import HistoryOptions, HistoryStore, version
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import julian_day
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for

SOURCE = "testhost"  # tests/conftest.py target_args


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=20)
    return path


def _now() -> float:
    return julian_day(datetime.now(UTC))


def _timed(path, sql, params=()):
    """A legacy write, and the window (julian days) its statement ran in."""
    before = _now()
    legacy_write(path, sql, params)
    return before, _now()


def _versions(db, table, key):
    return HistoryReader(db, SOURCE).versions(table, derive_id(SOURCE, table, key))


def _within(jd, window):
    slack = 0.002 / 86400  # SQLite's 'now' has millisecond precision
    return window[0] - slack <= jd <= window[1] + slack


def _status(v):
    return dict(zip(v["cols"], v["vals"], strict=True))["status"] if v["cols"] else None


def test_every_version_with_its_statement_time_also_while_syncd_was_down(
        tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        # five updates of one run within a second, each its own legacy connection
        windows = [_timed(legacy, "UPDATE training_runs SET status = ? WHERE run_id = 1",
                          (f"s{i}",)) for i in range(5)]
        assert windows[-1][1] - windows[0][0] < 1 / 86400

        def five():
            found = [v for v in _versions(db, "training_runs", (1,)) if v["op"] == "update"]
            return found if len(found) == 5 else None
        updates = wait_for(five, 60, "five versions of run 1")
        assert [_status(v) for v in updates] == ["s0", "s1", "s2", "s3", "s4"]
        assert all(_within(v["jd"], w) for v, w in zip(updates, windows, strict=True))
        assert [v["seq"] for v in updates] == sorted(v["seq"] for v in updates)
    finally:
        daemon.stop(signal.SIGKILL)
    # while syncd is down: a DELETE, a rerun with INSERT OR REPLACE, two updates
    conn = sqlite3.connect(legacy)
    run3 = conn.execute("SELECT * FROM training_runs WHERE run_id = 3").fetchone()
    conn.close()
    down = {
        "delete": _timed(legacy, "DELETE FROM training_runs WHERE run_id = 2"),
        "replace": _timed(legacy, "INSERT OR REPLACE INTO training_runs (run_id, challenge, "
                          "model_name, status, config) VALUES (3, 1, 'rerun', 'queued', '{}')"),
        "first": _timed(legacy, "UPDATE training_runs SET status = 'a' WHERE run_id = 4"),
        "second": _timed(legacy, "UPDATE training_runs SET best_val_loss = 0.5, status = 'b' "
                         "WHERE run_id = 4"),
    }
    time.sleep(1.0)  # applied later than this: versions must not carry the apply time
    restarted = _now()
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        wait_for(lambda: len(_versions(db, "training_runs", (4,))) >= 2, 60, "run 4's versions")
        wait_for(lambda: verified(legacy, target_args), 60, "the target to be exact")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    gone = _versions(db, "training_runs", (2,))
    assert gone[-1]["op"] == "delete" and gone[-1]["cols"] is None
    assert _within(gone[-1]["jd"], down["delete"])
    rerun = [v for v in _versions(db, "training_runs", (3,)) if v["op"] != "snapshot"]
    assert [v["op"] for v in rerun] == ["delete", "insert"]  # INSERT OR REPLACE
    assert rerun[0]["seq"] == rerun[1]["seq"] and rerun[0]["n"] < rerun[1]["n"]
    assert all(_within(v["jd"], down["replace"]) for v in rerun)
    row = dict(zip(rerun[1]["cols"], rerun[1]["vals"], strict=True))
    assert row["model_name"] == "rerun" and row["start_time"] is None
    assert run3[2] != "rerun"
    four = [v for v in _versions(db, "training_runs", (4,)) if v["op"] == "update"]
    assert [_status(v) for v in four] == ["a", "b"]
    assert _within(four[0]["jd"], down["first"]) and _within(four[1]["jd"], down["second"])
    assert all(v["jd"] < restarted for v in [*gone, *rerun, *four])
    assert not any(v.get("found") for v in [*updates, *gone, *rerun, *four])  # all logged
    # stored once, whatever was applied twice around the kill -9
    ids = [v["_id"] for v in db["_syncd_history"].find({"source": SOURCE})]
    assert len(ids) == len(set(ids))
    keys = [(v["table"], v["doc"], v["jd"], v["seq"], v["n"], v["op"])
            for v in db["_syncd_history"].find({"source": SOURCE})]
    assert len(keys) == len(set(keys))


def test_a_change_no_log_gave_is_marked_found(tmp_path, legacy, target_args, db):
    """A change committed between `syncd migrate` and the first `syncd run` is recorded
    by the reconcile that finds it, stamped when it read the row: the version says so
    (`found`), and `--versions` tells people the statement ran earlier."""
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    window = _timed(legacy, "UPDATE training_runs SET status = 'failed' WHERE run_id = 5")
    time.sleep(0.5)
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        (found,) = wait_for(lambda: [v for v in _versions(db, "training_runs", (5,))
                                     if v["op"] == "update"] or None, 60, "run 5's repair")
        logged = _timed(legacy, "UPDATE training_runs SET status = 'done' WHERE run_id = 5")
        wait_for(lambda: len(_versions(db, "training_runs", (5,))) == 3, 60, "the update")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert found["found"] is True and found["jd"] > window[1] and _status(found) == "failed"
    last = _versions(db, "training_runs", (5,))[-1]
    assert "found" not in last and _within(last["jd"], logged)
    shown = run_cli("experiments", "history", "5", "--versions", *target_args)
    assert shown.code == 0, shown
    lines = [ln for ln in shown.out.splitlines() if " update " in ln]
    assert "ran earlier" in lines[0] and "ran earlier" not in lines[1], shown.out


def test_exclude_keep_and_schema_changes(tmp_path, legacy, target_args, db):
    config = '\n[history]\nexclude = ["subjects"]\nkeep = "30d"\n'
    daemon = Daemon(tmp_path, legacy, target_args, config)
    try:
        daemon.wait_ready(db)
        conn = sqlite3.connect(legacy)
        triggers = dict(conn.execute("SELECT tbl_name, group_concat(sql) FROM sqlite_master "
                                     "WHERE type = 'trigger' GROUP BY tbl_name"))
        conn.close()
        assert "v0" not in triggers["subjects"] and "v0" in triggers["config"]
        legacy_write(legacy, "UPDATE subjects SET age = 99 WHERE rowid = 1")
        legacy_write(legacy, "UPDATE config SET value = 'x1' WHERE key = 'cache_dir'")
        wait_for(lambda: _versions(db, "config", ("cache_dir",)), 60, "a version of config")
        assert db["_syncd_history"].count_documents({"table": "subjects"}) == 0
        # a schema change: its SQL is versioned, and versions after it name the new column
        legacy_write(legacy, "ALTER TABLE config ADD COLUMN scope TEXT DEFAULT 'all'")

        def altered():
            return db["_syncd_schemas"].find_one({"source": SOURCE, "table": "config",
                                                  "sql": {"$regex": "scope"}})
        schema = wait_for(altered, 60, "the new config schema")
        reader = HistoryReader(db, SOURCE)
        assert "scope" not in reader.schema_as_of("config", schema["jd"] - 1e-6)["sql"]
        legacy_write(legacy, "UPDATE config SET value = 'x2', scope = 'one' "
                     "WHERE key = 'cache_dir'")
        # (the reconcile after the change also records a new baseline of the table: its
        # rows read after the triggers were renewed, so they hold the new column)
        def updated():
            return [v for v in _versions(db, "config", ("cache_dir",)) if v["op"] == "update"
                    and dict(zip(v["cols"], v["vals"], strict=True))["value"] == "x2"]
        last = wait_for(updated, 60, "the update")[-1]
        assert dict(zip(last["cols"], last["vals"], strict=True))["scope"] == "one"
        assert [r["value"] for r in reader.rows_as_of("config") if r["key"] == "cache_dir"] \
            == ["x2"]
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    # keep: a row's versions past the cutoff go, but the last one before it stays
    recorder = VersionRecorder(db, SOURCE, HistoryOptions(keep_seconds=1e-3))
    time.sleep(1.01)  # prune moves its cutoff back to a whole second: past the versions'
    assert recorder.prune() >= 1
    left = _versions(db, "config", ("cache_dir",))
    assert [dict(zip(v["cols"], v["vals"], strict=True))["value"] for v in left] == ["x2"]
    assert "forever" in run_keep_error(tmp_path, legacy, target_args)


def run_keep_error(tmp_path, legacy, target_args):
    from tests.conftest import run_cli

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[history]\nkeep = "soon"\n')
    result = run_cli("run", "--sqlite", str(legacy), "--config", str(cfg), *target_args)
    assert result.code == 2
    return result.err


def test_a_value_too_large_for_a_document_is_dropped_not_fatal(db):
    row = {"id": 1, "blob": b"\x00" * (MAX_VALUES_BYTES + 10), "note": "kept"}
    fitted, dropped = fit(row)
    assert dropped == ["blob"] and fitted["note"] == "kept" and fitted["blob"] is None
    recorder = VersionRecorder(db, SOURCE, HistoryOptions())
    doc = recorder._version("t", (1,), 1, "insert", 2461000.5, 1, 1, row)
    assert HistoryStore(db, SOURCE).record([doc]) == 1
    stored = db["_syncd_history"].find_one({"_id": doc["_id"]})
    assert stored["dropped"] == ["blob"] and stored["vals"][2] == "kept"


def test_drop_column_is_refused_with_values_and_allowed_keys_only(tmp_path):
    path = tmp_path / "metadata.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a, b)")
    conn.commit()
    conn.close()
    source = SQLiteSource(path)
    tables = list(source.schema().tables.values())
    source.close()
    Capture(path).install(tables)
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        legacy_write(path, "ALTER TABLE t DROP COLUMN b")  # docs/following.md says why
    Capture(path, keys_only=["t"]).install(tables)  # [history] exclude = ["t"]
    legacy_write(path, "ALTER TABLE t DROP COLUMN b")
    assert version("s", "t", 1, (1,), 1, "delete", 2461000.5, 1, 1, None)["cols"] is None


def test_scan_mode_keeps_the_versions_it_sees(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args, extra=["--capture", "scan"])
    try:
        daemon.wait_ready(db)
        window = _timed(legacy, "INSERT INTO config (key, value) VALUES ('new', 'v')")
        (seen,) = wait_for(lambda: _versions(db, "config", ("new",)), 60, "the new row")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert seen["op"] == "insert" and seen["jd"] >= window[0]  # when the scan saw it
    assert seen["found"] is True
    assert dict(zip(seen["cols"], seen["vals"], strict=True))["value"] == "v"
