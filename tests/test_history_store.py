"""The history format's round trip on a real server: versions recorded (twice: stored
once), read back as of moments, storage classes exact, SQL over time."""

from __future__ import annotations

from dataclasses import replace

from legacy_adapters.base import Definition
from legacy_adapters.values import RawText
from syncd.projection.ids import derive_id
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.history_reader import HistoryReader

J = 2461000.0  # a julian day of 2025
ROW1 = {"id": 1, "name": RawText(b"\xff\xfe"), "x": 1.0, "big": 2**62, "b": b"\x00\x01",
        "n": None, "a.b": "dot", "$c": "dollar"}


def _v(op, jd, seq, row, n=0, key=1):
    return version("src", "runs", derive_id("src", "runs", (key,)), (key,), key, op, jd,
                   seq, n, row)


def test_versions_round_trip_and_read_as_of(db):
    store = HistoryStore(db, "src")
    store.ensure_indexes()
    versions = [_v("snapshot", J + 0, 0, ROW1),
                _v("update", J + 1, 5, {**ROW1, "x": 2.5}),
                _v("update", J + 1, 6, {**ROW1, "x": 3.5}),  # same moment, later seq
                _v("delete", J + 2, 7, None),
                _v("insert", J + 0.5, 3, {"id": 2, "name": "two"}, key=2)]
    assert store.record(versions) == 5
    assert store.record(versions) == 0  # a replay stores nothing twice
    HistoryStore(db, "other").record([version("other", "runs", 9, (9,), 9, "insert", J + 0,
                                              1, 0, {"id": 9})])
    reader = HistoryReader(db, "src")
    before = list(reader.rows_as_of("runs", J + 0.2))
    assert before == [ROW1]
    assert type(before[0]["name"]) is RawText and type(before[0]["x"]) is float
    assert type(before[0]["b"]) is bytes
    at_101 = {r["id"]: r for r in reader.rows_as_of("runs", J + 1)}
    assert at_101[1]["x"] == 3.5 and at_101[2]["name"] == "two"
    assert [r["id"] for r in reader.rows_as_of("runs")] == [2]  # run 1 deleted at 102
    assert [v["op"] for v in reader.versions("runs", derive_id("src", "runs", (1,)))] == [
        "snapshot", "update", "update", "delete"]
    assert reader.first_jd() == J + 0 and reader.tables() == ["runs"]


def test_schema_versions_as_of(db):
    store = HistoryStore(db, "src")
    store.record_schema("runs", J + 0, 0, "CREATE TABLE runs(id INTEGER PRIMARY KEY)",
                        sequence=None)
    store.record_schema("runs", J + 5, 9, "CREATE TABLE runs(id INTEGER PRIMARY KEY, n)",
                        ["CREATE INDEX ix ON runs(n)"])
    store.record_schema("runs", J + 10, 12, None)
    reader = HistoryReader(db, "src")
    assert reader.schema_as_of("runs", J + -1) is None
    assert reader.schema_as_of("runs", J + 4)["sql"].endswith("PRIMARY KEY)")
    assert reader.schema_as_of("runs", J + 6)["indexes"] == ["CREATE INDEX ix ON runs(n)"]
    assert reader.schema_as_of("runs") is None  # dropped since


def test_changed_sql_is_recorded_once_whoever_asks(db):
    """`record_changed`, the one rule of a migrate's end (views only) and of the daemon
    (the tables it names too): a record per change, none for what is unchanged."""
    store = HistoryStore(db, "src")
    runs = Definition("runs", "table", "CREATE TABLE runs(id INTEGER PRIMARY KEY)",
                      ("CREATE INDEX ix ON runs(id)",), sequence=3)
    best = Definition("best", "view", "CREATE VIEW best AS SELECT * FROM runs")
    assert store.record_changed({"runs": runs, "best": best}) == 1  # views only
    assert store.record_changed({"runs": runs, "best": best}) == 0
    assert store.record_changed({"runs": runs, "best": best}, ["runs"],
                                exclude={"runs"}) == 1
    assert store.record_changed({"runs": runs, "best": best}, ["runs"]) == 0
    moved = replace(runs, sequence=4)  # only the AUTOINCREMENT counter moved
    assert store.record_changed({"runs": moved, "best": best}, ["runs"]) == 1
    fired = replace(best, triggers=("CREATE TRIGGER t INSTEAD OF DELETE ON best BEGIN "
                                    "SELECT 1; END",))
    assert store.record_changed({"runs": moved, "best": fired}) == 1
    assert store.record_changed({"runs": moved}) == 1  # the view's drop
    assert store.record_changed({"runs": moved}) == 0  # recorded once
    kept = [d["rows_kept"] for d in store.schemas.find({"table": "runs"}, sort=[("jd", 1)])]
    assert kept == [False, True]
    reader = HistoryReader(db, "src")
    assert list(reader.objects_as_of()) == ["runs"]
    assert reader.objects_as_of()["runs"]["sequence"] == 4
    assert [d["sql"] is None for d in store.schemas.find({"table": "best"}, sort=[
        ("jd", 1)])] == [False, False, True]
