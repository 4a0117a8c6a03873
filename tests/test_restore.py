"""`syncd restore` on a real server: a legacy db migrated, then rebuilt from MongoDB alone,
equal to the original in rows, storage classes, schema, counters; also as of a moment
before later versions (written with HistoryStore, as `syncd run` records them)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from syncd.projection.ids import derive_id
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import from_julian_day, julian_day_now
from tests.conftest import run_cli
from tests.restore_support import dump

SOURCE = "testhost"

AWKWARD = """
CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT, config TEXT,
                   name TEXT, weights BLOB, steps INTEGER, loss REAL);
CREATE INDEX runs_started ON runs(started DESC, name COLLATE NOCASE);
CREATE TABLE audit (what TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE tags (run INTEGER, tag TEXT, PRIMARY KEY (run, tag)) WITHOUT ROWID;
CREATE TABLE loose (a, b);
CREATE VIEW finished AS SELECT run_id, name FROM runs WHERE loss IS NOT NULL;
CREATE TRIGGER runs_audit AFTER UPDATE OF name ON runs
BEGIN INSERT INTO audit (what) VALUES ('renamed ' || new.run_id); END;
"""
RUNS = [
    (1, "2025-10-20 14:03:38.728523", '{"lr": 1.0, "steps": 1e3, "b": 1, "a": 2}', "first",
     b"\x00\x01\xff", 2**63 - 1, -0.0),
    (2, "2025-10-20T14:03:38.728523+02:00", '{"a": 1, "a": 2,  "z" :[1.50, 2]}',
     "ünïcödé ✓", b"", -(2**63), float("inf")),
    (3, "2025-10-20T12:03:38Z", "not json {", None, None, 2**53 + 1, float("-inf")),
    (4, None, '{"nested": {"k": 1.0}}', "x", b"\x00" * 2000, 0, 1e-310),
]


def make_awkward(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(AWKWARD)
    conn.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?)", RUNS)
    conn.execute("INSERT INTO runs (run_id, name) VALUES (5, CAST(x'636166e9' AS TEXT))")
    conn.execute("INSERT INTO runs (run_id, name, config) VALUES (6, 'gone', 'x')")
    conn.execute("DELETE FROM runs WHERE run_id = 6")  # the counter stays at 6
    conn.execute("UPDATE runs SET name = 'renamed' WHERE run_id = 4")  # fires the trigger
    conn.executemany("INSERT INTO tags VALUES (?,?)", [(1, "a"), (1, "b"), (2, "a")])
    conn.executemany("INSERT INTO loose (rowid, a, b) VALUES (?,?,?)",
                     [(10, 1, "x"), (20, 2.5, b"\x01"), (35, None, "y")])
    conn.commit()
    conn.close()


def next_ids(path: Path, tables: list[str]) -> list[int]:
    """The id the next legacy INSERT gets in each AUTOINCREMENT table (on a copy)."""
    copy = path.with_suffix(".next")
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return [conn.execute(f"INSERT INTO {t} DEFAULT VALUES").lastrowid for t in tables]
    finally:
        conn.close()
        copy.unlink()


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def migrate(db_path: Path, target_args: list[str]) -> None:
    got = run_cli("migrate", "--sqlite", db_path, *target_args)
    assert got.code == 0, got


def restore(target_args: list[str], to: Path, *extra: str) -> Any:
    return run_cli("restore", "--to", to, "--json", *target_args, *extra)


def test_awkward_values_restore_exactly(tmp_path, target_args):
    legacy = tmp_path / "metadata.db"
    make_awkward(legacy)
    # syncd's own capture objects (triggers, change log) are in the file, not restored.
    assert run_cli("capture", "install", "--sqlite", legacy).code == 0
    migrate(legacy, target_args)
    out = tmp_path / "restored.db"
    got = restore(target_args, out)
    assert got.code == 0, got
    report = json.loads(got.out)
    assert report["integrity"] == "ok" and report["views"] == ["finished"]
    assert report["triggers"] == 1 and report["not_restored"] == []
    want, have = dump(legacy), dump(out)
    assert have["schema"] == want["schema"]
    assert have["rows"] == want["rows"]
    assert have["sequence"] == want["sequence"] == [(b"runs", 6)]
    assert integrity(out) == ["ok"]
    assert next_ids(out, ["runs"]) == next_ids(legacy, ["runs"]) == [7]
    # the file is as readable as one sqlite3 makes (the legacy scripts may run as others)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    conn = sqlite3.connect(out)  # the legacy trigger works in the restored file
    conn.execute("UPDATE runs SET name = 'again' WHERE run_id = 1")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 2
    conn.close()
    again = restore(target_args, out)  # an existing PATH is refused, untouched
    assert again.code == 2 and "exists" in again.err
    assert sorted(p.name for p in tmp_path.iterdir() if "restoring" in p.name) == []


def test_real_fixture_restores_with_its_views(fixture_db, tmp_path, target_args):
    migrate(fixture_db, target_args)
    out = tmp_path / "restored.db"
    got = restore(target_args, out)
    assert got.code == 0, got
    assert json.loads(got.out)["views"] == ["best_models", "training_summary"]
    want, have = dump(fixture_db), dump(out)
    assert have == want
    assert integrity(out) == ["ok"]
    auto = ["training_runs", "epoch_history", "model_checkpoints", "cache_files"]
    assert next_ids(out, auto) == next_ids(fixture_db, auto)
    for view in ("best_models", "training_summary"):
        q = f"SELECT * FROM {view}"
        assert sqlite3.connect(out).execute(q).fetchall() == \
            sqlite3.connect(fixture_db).execute(q).fetchall()


def _row(path: Path, run_id: int) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    cur = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    conn.close()
    return {n: (v.decode() if isinstance(v, bytes) and n in ("started", "config", "name")
                else v) for n, v in zip(names, row, strict=True)}


def test_restore_as_of_a_moment_before_later_versions(tmp_path, target_args, db):
    legacy = tmp_path / "metadata.db"
    make_awkward(legacy)
    migrate(legacy, target_args)
    before = tmp_path / "before.db"
    shutil.copyfile(legacy, before)
    # Later changes, applied to the file and recorded as `syncd run` records them.
    conn = sqlite3.connect(legacy)
    conn.execute("UPDATE runs SET loss = 0.25, config = '{\"lr\": 2.0}' WHERE run_id = 1")
    conn.execute("DELETE FROM runs WHERE run_id = 2")
    conn.execute("INSERT INTO runs (run_id, name, steps) VALUES (9, 'new', 3)")
    conn.commit()
    conn.close()
    store = HistoryStore(db, SOURCE)
    t0 = julian_day_now()
    sec = 1 / 86400

    def v(op, run_id, jd, seq, row):
        return version(SOURCE, "runs", derive_id(SOURCE, "runs", (run_id,)), (run_id,),
                       run_id, op, jd, seq, 0, row)

    store.record([v("update", 1, t0 + 2 * sec, 1, _row(legacy, 1)),
                  v("delete", 2, t0 + 3 * sec, 2, None),
                  v("insert", 9, t0 + 4 * sec, 3, _row(legacy, 9))])
    first = HistoryReader(db, SOURCE).first_schema_jd()
    old = tmp_path / "old.db"
    when = from_julian_day(t0 + sec).astimezone().isoformat()  # with the local offset
    got = restore(target_args, old, "--as-of", when)
    assert got.code == 0, got
    assert dump(old) == dump(before)
    new = tmp_path / "new.db"
    assert restore(target_args, new).code == 0
    assert dump(new) == dump(legacy) and integrity(new) == ["ok"]
    assert next_ids(new, ["runs"]) == next_ids(legacy, ["runs"]) == [10]
    middle = tmp_path / "middle.db"  # after the update, before the delete
    got = restore(target_args, middle, "--as-of", from_julian_day(t0 + 2.5 * sec).isoformat())
    assert got.code == 0, got
    rows = dump(middle)["rows"]["runs"]
    assert len(rows) == 5 and any(r[0] == 2 for r in rows) and not any(r[0] == 9 for r in rows)
    early = restore(target_args, tmp_path / "early.db", "--as-of",
                    from_julian_day(first - 3600 * sec).isoformat())
    assert early.code == 2 and "before history starts" in early.err
    assert not (tmp_path / "early.db").exists()
    day = restore(target_args, tmp_path / "day.db", "--as-of", "2001-01-01")
    assert day.code == 2 and "before history starts" in day.err
    bad = restore(target_args, tmp_path / "bad.db", "--as-of", "yesterday-ish")
    assert bad.code == 2 and "not a time" in bad.err


def test_a_table_left_out_of_history_is_named(tmp_path, mongo_url, db_name):
    """`[history] exclude`: the table's SQL is kept, its rows are not; restore makes it
    empty and names it as not restorable exactly."""
    from syncd import api
    from syncd.config import load_settings

    legacy = tmp_path / "metadata.db"
    make_awkward(legacy)
    cfg = tmp_path / "syncd.toml"
    cfg.write_text('[history]\nexclude = ["loose"]\n')
    settings = load_settings({"sqlite": legacy, "mongo_url": mongo_url, "database": db_name,
                              "source_id": SOURCE, "timezone": "UTC", "config": str(cfg)},
                             environ={})
    api.migrate(settings)
    report = api.restore(settings, tmp_path / "out.db", as_of="now")
    assert [t["table"] for t in report.not_restored] == ["loose"]
    have, want = dump(tmp_path / "out.db"), dump(legacy)
    assert have["rows"]["loose"] == [] and want["rows"]["loose"]
    assert {k: v for k, v in have["rows"].items() if k != "loose"} == \
        {k: v for k, v in want["rows"].items() if k != "loose"}
    assert have["schema"] == want["schema"]


def test_no_source_named_on_a_database_of_several_sources(tmp_path, mongo_url, db_name):
    """Neither --source, --source-id nor --sqlite: the error names the sources, not
    "source '<this hostname>' has no history"."""
    base = ["--mongo-url", mongo_url, "--database", db_name, "--timezone", "UTC"]
    for name in ("a", "b"):
        make_awkward(tmp_path / f"{name}.db")
        migrate(tmp_path / f"{name}.db", [*base, "--source-id", f"host-{name}"])
    got = run_cli("restore", "--to", tmp_path / "out.db", *base)
    assert got.code == 2, got
    assert "holds the history of 2 sources ('host-a', 'host-b')" in got.err, got
    assert "name one with --source" in got.err and not (tmp_path / "out.db").exists()
    wrong = run_cli("restore", "--to", tmp_path / "out.db", *base, "--source", "host-c")
    assert wrong.code == 2 and "'host-c' has no history" in wrong.err, wrong
    assert "'host-a', 'host-b'" in wrong.err and "name one with" not in wrong.err, wrong
    named = run_cli("restore", "--to", tmp_path / "out.db", *base, "--source", "host-b")
    assert named.code == 0, named
