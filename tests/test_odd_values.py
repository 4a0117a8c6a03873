"""Odd legacy values go into MongoDB faithfully; nothing crashes the run; flags are counted."""

from __future__ import annotations

import json
import math

from bson.binary import Binary

from syncd.projection.ids import derive_id
from syncd.projection.values import TEXT_SUBTYPE
from tests.conftest import run_cli
from tests.oddities import make_odd_db


def test_odd_database_round_trips(tmp_path, target_args, db):
    path = tmp_path / "odd.db"
    expected = make_odd_db(path)
    result = run_cli("migrate", "--sqlite", path, "--json", *target_args)
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["quarantined"] == 0
    assert report["raw_text"] == 2  # the two non-UTF-8 TEXT values, kept as binary
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["mixed"]["flags"] == [["mixed.t: text is not UTF-8 (kept as binary)", 2]]
    assert by_table["textkey"]["flagged"] == 2  # NULL primary keys, keyed by rowid
    assert "shadow" in by_table and "mixed_view" not in by_table

    mixed = {d["id"]: d for d in db.mixed.find()}
    assert len(mixed) == 8
    for row in expected["mixed"]:
        doc = mixed[row[0]]
        assert doc["_id"] == derive_id("testhost", "mixed", (row[0],))
        assert [doc["n"], doc["r"], doc["t"], doc["b"], doc["anything"]] == list(row[1:])
    assert mixed[2]["n"] == "not a number" and math.isinf(mixed[2]["r"])
    assert mixed[3]["n"] == 2**63 - 1 and mixed[4]["n"] == -(2**63)
    assert mixed[4]["t"] == "tab\tnew\nline\x00nul"
    assert mixed[5]["b"] == "text in a blob column" and mixed[5]["n"] == 3.75
    assert mixed[4]["anything"] == b"blob"
    raw = db.mixed.find_one({"id": 7})["t"]
    assert isinstance(raw, Binary) and raw.subtype == TEXT_SUBTYPE and bytes(raw) == b"caf\xe9"
    assert db.mixed.find_one({"id": 7})["_flags"] == ["t: text is not UTF-8 (kept as binary)"]
    assert list(mixed[1]) == ["_id", "id", "n", "r", "t", "b", "anything", "_source", "_v"]

    comp = list(db.composite.find().sort([("run", 1), ("epoch", 1)]))
    assert [(d["run"], d["epoch"], d["loss"]) for d in comp] == expected["composite"]
    assert comp[0]["_id"] == derive_id("testhost", "composite", ("run-a", 1))

    nokey = list(db.nokey.find().sort("_rowid", 1))
    assert [(d["a"], d["b"]) for d in nokey] == expected["nokey"]
    assert [d["_rowid"] for d in nokey] == [1, 2, 3]
    assert len({d["_id"] for d in nokey}) == 3  # duplicate rows stay two documents

    wr = {d["k"]: d["v"] for d in db.wr.find()}
    assert wr == {"alpha": 1, "beta": "two", "gamma": b"\x03", "delta": None}

    odd = db["odd names"].find_one({"plain": "x"})
    assert odd["a\uff0eb"] == 1 and odd["\uff04price"] == 9.99
    assert odd["\uff3fid"] == "legacy-id-1" and odd["_id"] != "legacy-id-1"

    nulls = list(db.textkey.find({"name": None}))
    assert len(nulls) == 2 and all(d["_flags"] for d in nulls)
    assert db.shadow.count_documents({}) == 2

    verified = run_cli("verify", "--sqlite", path, "--json", *target_args)
    assert verified.code == 0, verified
    assert json.loads(verified.out)["totals"]["source_rows"] == 26


def test_bad_rows_are_quarantined_and_the_rest_syncs(tmp_path, target_args, db):
    """Config text that is not JSON is flagged; a row its builder cannot handle is quarantined."""
    from syncd.sample import make_eeg2025

    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=6)
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("UPDATE training_runs SET config = 'batch_size=64' WHERE run_id = 1")
    conn.execute("UPDATE training_runs SET start_time = 'yesterday' WHERE run_id = 2")
    conn.execute("UPDATE training_runs SET config = '{\"seed\": 123456789012345678901234}' "
                 "WHERE run_id = 3")
    conn.execute("UPDATE training_runs SET end_time = x'0102' WHERE run_id = 4")
    conn.commit()
    # A migration whose builder fails on one row: that row is quarantined, not fatal.
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_strict.py").write_text(
        "VERSION = 1\nDESCRIPTION = 'strict'\n"
        "def run(row, ctx):\n"
        "    if row['run_id'] == 5:\n"
        "        raise ValueError('run 5 is broken')\n"
        "    return {'run_id': row['run_id'], 'config': ctx.json_object(row['config'], 'config'),"
        " 'start_time': ctx.datetime(row['start_time'], 'start_time'),"
        " 'end_time': ctx.datetime(row['end_time'], 'end_time')}\n"
        "def upgrade(model):\n    model.map_table('training_runs', 'runs', build=run)\n")
    result = run_cli("migrate", "--sqlite", path, "--migrations", migrations, "--json",
                     *target_args)
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["quarantined"] == 1
    assert db.runs.count_documents({}) == 5
    one = db.runs.find_one({"run_id": 1})
    assert one["config"] == "batch_size=64" and one["_flags"] == ["config: not JSON"]
    two = db.runs.find_one({"run_id": 2})
    assert two["start_time"] == "yesterday"
    assert two["_flags"] == ["start_time: not an ISO-8601 time"]
    three = db.runs.find_one({"run_id": 3})
    assert isinstance(three["config"], str) and three["_flags"] == ["config: not JSON"]
    four = db.runs.find_one({"run_id": 4})
    assert four["end_time"] == b"\x01\x02" and four["_flags"] == ["end_time: not text (bytes)"]
    q = db["_syncd_quarantine"].find_one()
    assert q["table"] == "training_runs" and q["key"] == {"run_id": 5}
    assert "run 5 is broken" in q["error"] and q["row"]["run_id"] == 5

    status = run_cli("status", "--json", *target_args)
    assert json.loads(status.out)["quarantined"] == 1
    verified = run_cli("verify", "--sqlite", path, "--migrations", migrations, "--json",
                       *target_args)
    assert verified.code == 1  # a row that cannot be projected means source != target
    assert json.loads(verified.out)["totals"]["quarantined"] == 1

    # Fix the legacy row; the next migrate releases it from quarantine.
    conn.execute("DELETE FROM training_runs WHERE run_id = 5")
    conn.commit()
    conn.close()
    again = run_cli("migrate", "--sqlite", path, "--migrations", migrations, *target_args)
    assert again.code == 0, again
    # The deleted row leaves the quarantine, and its history ends in a delete: a restore
    # must not bring it back (verify compares history's rows with the table's).
    assert db["_syncd_quarantine"].count_documents({}) == 0
    last = db["_syncd_history"].find_one({"table": "training_runs", "key": [5]},
                                         sort=[("jd", -1), ("seq", -1), ("n", -1)])
    assert last["op"] == "delete"
    assert run_cli("verify", "--sqlite", path, "--migrations", migrations,
                   *target_args).code == 0
