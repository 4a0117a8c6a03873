"""The copy of record end to end (issue 23): every version kept while `syncd run` follows
(and while it was down after a kill -9), and `syncd restore --as-of` giving back
metadata.db as it was at moments before, during and after the downtime, a schema change
included, compared with copies taken at those moments with SQLite's backup API."""

from __future__ import annotations

import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, wait_for
from tests.restore_support import backup, moment


def contents(path: Path) -> dict[str, Any]:
    """What a legacy script can see: schema (tables, indexes, views, its own triggers),
    every row with each value's storage class, and the AUTOINCREMENT counters."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        schema = sorted(
            (t.decode(), n.decode(), (s or b"").decode())
            for t, n, s in conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE '\\_syncd\\_%'"
                " ESCAPE '\\' AND name NOT LIKE 'sqlite_autoindex%'"))
        tables = [n for t, n, _ in schema if t == "table" and n != "sqlite_sequence"]
        rows = {}
        for table in tables:
            cols = [r[1].decode() for r in conn.execute(f'PRAGMA table_info("{table}")')]
            select = ", ".join(f'"{c}", typeof("{c}")' for c in cols)
            rows[table] = sorted(conn.execute(f'SELECT {select} FROM "{table}"').fetchall(),
                                 key=repr)
        seq = sorted(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        return {"schema": schema, "rows": rows, "sequence": seq}
    finally:
        conn.close()


def test_every_version_and_restore_as_of_any_moment(
        tmp_path: Path, fixture_db: Path, target_args: list[str], db: Any) -> None:
    legacy = fixture_db
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    copies: dict[str, tuple[str, Path]] = {}
    started: list[Daemon] = []
    try:
        _story(tmp_path, legacy, target_args, db, copies, started)
    finally:  # a failed wait leaves no `syncd run` behind
        for daemon in started:
            if daemon.proc.poll() is None:
                daemon.stop()
    _check(db, copies, target_args, tmp_path)


def _story(tmp_path: Path, legacy: Path, target_args: list[str], db: Any,
           copies: dict[str, tuple[str, Path]], started: list[Any]) -> None:
    """migrate, a gap, `syncd run`, five updates, kill -9, changes while down, restart, a
    schema change; a backup copy of the legacy file at each named moment."""

    def keep(name: str) -> None:
        at = moment()
        backup(legacy, tmp_path / f"{name}.db")
        copies[name] = (at, tmp_path / f"{name}.db")

    keep("start")
    runs = [r[0] for r in sqlite3.connect(legacy).execute(
        "SELECT run_id FROM training_runs ORDER BY run_id LIMIT 5")]
    # between the migrate and the first `syncd run` nothing captures changes: the first
    # run's reconcile finds them, and records them as versions (stamped when it read them)
    legacy_write(legacy, "UPDATE training_runs SET status = 'gap' WHERE run_id = ?",
                 (runs[4],))
    legacy_write(legacy, "DELETE FROM epoch_history WHERE id = (SELECT MIN(id) FROM"
                 " epoch_history)")
    daemon = Daemon(tmp_path, legacy, target_args)
    started.append(daemon)
    daemon.wait_ready(db)
    # five updates of one run's status within one second, each its own commit
    for i in range(5):
        legacy_write(legacy, "UPDATE training_runs SET status = ? WHERE run_id = ?",
                     (f"epoch-{i}", runs[0]))
    wait_for(lambda: db["_syncd_history"].count_documents(
        {"table": "training_runs", "op": "update"}) >= 5, what="five updates in history")
    keep("following")
    daemon.stop(signal.SIGKILL)
    # while syncd is down: a delete, a rerun written with INSERT OR REPLACE, two updates
    legacy_write(legacy, "DELETE FROM training_runs WHERE run_id = ?", (runs[1],))
    keep("down-1")
    legacy_write(legacy, "INSERT OR REPLACE INTO training_runs (run_id, challenge, model_name,"
                 " status, best_val_loss, config) VALUES (?, 1, 'rerun', 'running', 0.5,"
                 " '{\"lr\": 1.0, \"lr\": 2e3}')", (runs[2],))
    legacy_write(legacy, "UPDATE training_runs SET best_val_loss = 0.25 WHERE run_id = ?",
                 (runs[3],))
    legacy_write(legacy, "UPDATE training_runs SET best_val_loss = 0.125, end_time ="
                 " '2025-10-20 14:03:38.728523' WHERE run_id = ?", (runs[3],))
    keep("down-2")
    legacy_write(legacy, "INSERT INTO training_runs (challenge, model_name, status) VALUES"
                 " (2, 'new', 'queued')")
    daemon = Daemon(tmp_path, legacy, target_args)
    started.append(daemon)
    daemon.wait_ready(db)
    legacy_write(legacy, "ALTER TABLE training_runs ADD COLUMN seed INTEGER")
    legacy_write(legacy, "UPDATE training_runs SET seed = 9007199254740993 WHERE run_id = ?",
                 (runs[0],))
    wait_for(lambda: db["_syncd_history"].find_one(
        {"table": "training_runs", "key": [runs[0]], "cols": "seed",
         "vals": 9007199254740993}) is not None, what="the update after the schema change")
    keep("after")
    daemon.stop()


def _check(db: Any, copies: dict[str, tuple[str, Path]], target_args: list[str],
           tmp_path: Path) -> None:
    """Every version kept with its statement's time; restore as of each moment equals
    the copy taken then."""
    runs = [r[0] for r in sqlite3.connect(copies["start"][1]).execute(
        "SELECT run_id FROM training_runs ORDER BY run_id LIMIT 5")]
    history = db["_syncd_history"]
    updates = list(history.find({"table": "training_runs", "key": [runs[0]], "op": "update"},
                                sort=[("jd", 1), ("seq", 1), ("n", 1)]))
    five = updates[:5]  # the five updates within one second, each its own version, in order
    assert [v["vals"][v["cols"].index("status")] for v in five] == [
        f"epoch-{i}" for i in range(5)]
    assert [v["jd"] for v in five] == sorted(v["jd"] for v in five)
    ops = [v["op"] for v in history.find({"table": "training_runs", "key": [runs[2]],
                                          "op": {"$ne": "snapshot"}},
                                          sort=[("jd", 1), ("seq", 1), ("n", 1)])]
    assert ops[-2:] == ["delete", "insert"]
    deleted = history.find_one({"table": "training_runs", "key": [runs[1]], "op": "delete"})
    down_at = datetime.fromisoformat(copies["down-1"][0]).timestamp()
    restarted = datetime.fromisoformat(copies["down-2"][0]).timestamp()
    # stamped with when the statement ran (while syncd was down), not when it was applied
    assert deleted is not None and deleted["at"].replace(tzinfo=UTC).timestamp() < down_at
    assert deleted["at"].replace(tzinfo=UTC).timestamp() < restarted

    assert sum(len(r) for r in contents(copies["start"][1])["rows"].values()) > 40
    for name, (at, copy) in copies.items():
        out = tmp_path / f"restored-{name}.db"
        result = run_cli("restore", "--to", out, "--as-of", at, *target_args)
        assert result.code == 0, (name, result.out, result.err)
        assert contents(out) == contents(copy), name
        check = sqlite3.connect(out).execute("PRAGMA integrity_check").fetchone()[0]
        assert check == "ok"
