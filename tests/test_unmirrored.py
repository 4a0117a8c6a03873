"""A table syncd cannot mirror is reported and skipped; the rest syncs (issue 20, item 2).

A 300-character table name makes a namespace MongoDB refuses; `_syncd_notes` wears
syncd's reserved prefix; `hdf5_files` would land in syncd's own HDF5 collection.
None of them may stop the other tables, leave triggers behind, or a state that keeps
failing; each is listed as not mirrored, with the reason, in one line.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for

LONG = "t" * 300
SHOWN = "t" * 60 + "… (300 characters)"


def _legacy(path: Path, *extra: str) -> Path:
    """A legacy db with a normal table `runs` and the odd tables `extra`."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY, status TEXT)")
    conn.executemany("INSERT INTO runs VALUES (?, ?)", [(1, "done"), (2, "running")])
    for name in extra:
        quoted = '"' + name.replace('"', '""') + '"'
        conn.execute(f"CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute(f"INSERT INTO {quoted} VALUES (1, 'x')")
    conn.commit()
    conn.close()
    return path


def _line(text: str, needle: str) -> str:
    """The one output line that names `needle` (failing if none or several)."""
    found = [line for line in text.splitlines() if needle in line]
    assert len(found) == 1, text[-3000:]
    return found[0]


def _triggers_on(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT tbl_name, count(*) FROM sqlite_master WHERE type = 'trigger' "
                        "GROUP BY tbl_name").fetchall()
    conn.close()
    return dict(rows)


def test_a_long_table_name_is_reported_and_the_rest_migrates(tmp_path, target_args, db):
    legacy = _legacy(tmp_path / "metadata.db", LONG)
    done = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert done.code == 0, done
    assert sorted(d["status"] for d in db["runs"].find()) == ["done", "running"]
    warned = _line(done.err, SHOWN)
    assert "not mirrored" in warned and "bytes" in warned and LONG not in warned, warned
    assert "not mirrored" in _line(done.out, SHOWN)

    status = run_cli("status", *target_args)
    line = _line(status.out, SHOWN)
    assert "not mirrored" in line and "255-byte namespace" in line, line
    found = json.loads(run_cli("status", "--json", *target_args).out)["not_mirrored"]
    assert [(t["table"], t["kind"]) for t in found] == [(LONG, "name_too_long")]

    checked = run_cli("verify", "--sqlite", legacy, *target_args)
    assert checked.code == 0, checked  # the mirrored table is equal; the other is named
    assert "not mirrored" in _line(checked.out, SHOWN)
    assert "1 table(s) not mirrored" in checked.out
    report = json.loads(run_cli("verify", "--json", "--sqlite", legacy, *target_args).out)
    assert report["ok"] and [t["table"] for t in report["not_mirrored"]] == [LONG]

    # Dropping the table later leaves no state that keeps failing.
    legacy_write(legacy, f'DROP TABLE "{LONG}"')
    again = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert again.code == 0, again
    assert SHOWN not in again.out + again.err
    assert json.loads(run_cli("status", "--json", *target_args).out)["not_mirrored"] == []
    assert verified(legacy, target_args)


def test_a_user_table_with_the_reserved_prefix_is_listed_not_ignored(tmp_path, target_args,
                                                                     db):
    legacy = _legacy(tmp_path / "metadata.db", "_syncd_notes")
    assert run_cli("capture", "install", "--sqlite", legacy).code == 0  # syncd's own tables
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    for result in (run_cli("status", *target_args),
                   run_cli("verify", "--sqlite", legacy, *target_args)):
        line = _line(result.out, "_syncd_notes")
        assert "not mirrored" in line and "reserved for syncd" in line, line
        assert "_syncd_changes" not in result.out  # syncd's own log: left out silently
    found = json.loads(run_cli("status", "--json", *target_args).out)["not_mirrored"]
    assert [(t["table"], t["kind"]) for t in found] == [("_syncd_notes", "reserved_name")]
    assert db["runs"].count_documents({}) == 2


def test_names_mongodb_refuses_or_syncd_owns_do_not_block_the_rest(tmp_path, target_args,
                                                                   db):
    legacy = _legacy(tmp_path / "metadata.db", ".hidden", "hdf5_files")
    done = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert done.code == 0, done
    assert db["runs"].count_documents({}) == 2
    assert db["\uff0ehidden"].count_documents({}) == 1  # mirrored under a stand-in name
    line = _line(run_cli("status", *target_args).out, "table hdf5_files")
    assert "not mirrored" in line and "hdf5" in line, line
    assert verified(legacy, target_args)


def test_the_daemon_skips_it_without_triggers_and_follows_the_rest(tmp_path, target_args, db):
    legacy = _legacy(tmp_path / "metadata.db", LONG)
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        triggers = _triggers_on(legacy)
        assert LONG not in triggers and triggers.get("runs"), triggers
        legacy_write(legacy, "INSERT INTO runs VALUES (3, 'new')")
        wait_for(lambda: db["runs"].find_one({"run_id": 3}), 30, "the new row to sync")
        found = daemon.status()["not_mirrored"]
        assert [(t["table"], t["kind"]) for t in found] == [(LONG, "name_too_long")]

        url = wait_for(lambda: json.loads((daemon.state / "daemon.json").read_text())
                       .get("http"), 30, "the HTTP url")
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'syncd_tables_not_mirrored{reason="name_too_long",source="testhost"} 1.0' \
            in metrics, metrics
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            page = response.read().decode()
        assert "health-not-mirrored" in page and SHOWN in page and LONG not in page

        legacy_write(legacy, f'DROP TABLE "{LONG}"')
        wait_for(lambda: daemon.status()["not_mirrored"] == [], 30, "the drop to be seen")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert json.loads(run_cli("status", "--json", *daemon.args).out)["not_mirrored"] == []
    again = Daemon(tmp_path, legacy, target_args)  # and a restart finds no failing state
    try:
        again.wait_ready(db)
        legacy_write(legacy, "INSERT INTO runs VALUES (4, 'later')")
        wait_for(lambda: db["runs"].find_one({"run_id": 4}), 30, "a row after the restart")
    finally:
        code, err = again.stop()
    assert code == 0, err[-3000:]
    assert verified(legacy, target_args)


def test_a_migration_left_unfinished_on_such_a_table_resumes_without_it(tmp_path,
                                                                       target_args, db):
    from legacy_adapters.sqlite import SQLiteSource
    from syncd.checkpoint.store import StateStore
    from syncd.engine.backfill import Backfill
    from syncd.engine.migration_files import build_model, load_migrations
    from syncd.progress import Progress
    from syncd.projection.model import TableMap
    from syncd.projection.project import Params
    from syncd.sinks.mongo import MongoSink

    legacy = _legacy(tmp_path / "metadata.db", LONG)
    # The job an earlier syncd saved before MongoDB refused the long name: a rebuild
    # that names the table and its collection.
    migrations = load_migrations()
    source = SQLiteSource(legacy)
    tables = source.schema().tables
    model = build_model(migrations, len(migrations))
    pairs = [(i, m) for i, m in model.resolve(source.schema()) if i.name != LONG]
    pairs.append((tables[LONG], TableMap(LONG, LONG)))
    store = StateStore(db, "testhost")
    engine = Backfill(source, db, MongoSink(db), store, Params("testhost", "UTC"), 1000,
                    Progress(enabled=False))
    engine.new_job(pairs, len(migrations), 0, [
        {"_id": m.version, "file": m.file, "description": m.description,
         "checksum": m.checksum} for m in migrations])
    source.close()

    done = run_cli("migrate", "--sqlite", legacy, *target_args)
    assert done.code == 0, done
    assert "resuming" in done.out and "not mirrored" in _line(done.out, SHOWN)
    assert db["runs"].count_documents({}) == 2
    assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0
    legacy_write(legacy, f'DROP TABLE "{LONG}"')
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
