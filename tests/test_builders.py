"""Builders: the documents a Projector makes from a migration's builder are exactly
those of calling the builder row by row (`_id` first, its fields, `_flags`, `_source`,
`_v`), odd rows flagged or quarantined."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import bson
import pytest

from legacy_adapters.base import Column, TableInfo
from legacy_adapters.sqlite import SQLiteSource
from syncd.engine.migration_files import build_model, load_migrations
from syncd.projection.context import RowContext
from syncd.projection.ids import derive_id
from syncd.projection.model import TableMap
from syncd.projection.project import Params, Projector
from syncd.sample import make_eeg2025

ODD_ROWS = [
    # epoch_history: a REAL, a text and a NULL run_id (uncached refs), a bad time,
    # a time with an offset, a BLOB time
    "INSERT INTO epoch_history (run_id, epoch, timestamp) VALUES (3.0, 1, 'yesterday')",
    "INSERT INTO epoch_history (run_id, epoch, timestamp) VALUES ('3', 2, "
    "'2025-03-30T02:30:00+02:00')",
    "INSERT INTO epoch_history (run_id, epoch, timestamp) VALUES (NULL, 3, x'00')",
    # training_runs: JSON that is no object, not JSON, a number as config
    "INSERT INTO training_runs (challenge, config, start_time) VALUES (1, '[1, 2]', NULL)",
    "INSERT INTO training_runs (challenge, config, end_time) VALUES (1, '{bad', 5)",
    "INSERT INTO training_runs (challenge, config) VALUES (1, 7)",
    "INSERT INTO training_runs (challenge, config) VALUES (1, '{\"n\": 99999999999999999999}')",
    # model_checkpoints: booleans of every kind
    "INSERT INTO model_checkpoints (run_id, is_best) VALUES (1, 'true')",
    "INSERT INTO model_checkpoints (run_id, is_best) VALUES (1, 'maybe')",
    "INSERT INTO model_checkpoints (run_id, is_best) VALUES (1, x'01')",
    "INSERT INTO model_checkpoints (run_id, is_best) VALUES (1, 2.5)",
]


def _reference(projector: Projector, build, rows, params: Params):
    """The migration's builder called row by row, as syncd did before compiling it."""
    ctx = RowContext(params)
    docs, bad = [], []
    off, names = projector.offset, projector.names
    for row in rows:
        ctx.flags = None
        oid = derive_id(params.source_id, projector.table.name, projector.key(row))
        try:
            built = build(dict(zip(names, row[off:])), ctx)
        except Exception:
            bad.append(oid)
            continue
        doc = {"_id": oid}
        doc.update(built)
        if ctx.flags:
            doc["_flags"] = ctx.flags
        doc.update({"_source": params.source_id, "_v": params.version})
        docs.append(doc)
    return docs, bad


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_eeg2025_documents_are_those_of_the_builders_row_by_row(tmp_path: Path, zone: str):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, rows=3000)
    conn = sqlite3.connect(path)
    for sql in ODD_ROWS:
        conn.execute(sql)
    conn.commit()
    conn.close()
    model = build_model(load_migrations(), 2)
    params = Params("host-a", zone, 2)
    source = SQLiteSource(path)
    built = 0
    for info, mapping in model.resolve(source.schema()):
        if mapping.build is None:
            continue
        projector = Projector(info, mapping, params)
        for size in (7, 5000):  # chunks with and without an odd row in them
            position, docs, bad = None, [], []
            while (chunk := source.scan(info, position, size)).rows:
                out = projector.project(chunk.rows)
                docs += out.docs
                bad += [q["_id"] for q in out.quarantined]
                position = chunk.last
            rows = source.scan(info, None, 10**6).rows
            want, want_bad = _reference(projector, mapping.build, rows, params)
            assert [bson.encode(d) for d in docs] == [bson.encode(d) for d in want]
            assert bad == want_bad
            assert len(docs) + len(bad) == len(rows) > 0
            built += len(docs)
        flagged = [d for d in docs if "_flags" in d]
        assert flagged, f"{info.name}: the odd rows were flagged"
    source.close()
    assert built > 2 * 2500  # both chunk sizes of every built table


def _projector(build, columns=("id", "n", "t")) -> Projector:
    table = TableInfo("e", tuple(Column(c, "") for c in columns), ("id",))
    return Projector(table, TableMap("e", "epochs", build), Params("h", "UTC", 2))


def test_duplicate_names_and_reserved_keys_as_in_the_row_path():
    def build(row, ctx):
        return {"_id": row["n"], "n": row["n"], "when": {"at": ctx.datetime(row["t"], "t")},
                "_source": "mine", "k": "const", "none": None}

    projector = _projector(build, ("id", "n", "n", "t"))
    rows = [(1, 1, "first", "second", "2025-01-01T00:00:00"), (2, 2, 0, 9, "bad")]
    out = projector.project(rows)
    want, _ = _reference(projector, build, rows, projector.params)
    assert [bson.encode(d) for d in out.docs] == [bson.encode(d) for d in want]
    assert out.docs[0]["n"] == "second"  # two columns, one name: the later wins
    assert out.flags == {"e.t: not an ISO-8601 time": 1}


def test_a_raising_row_is_quarantined_and_its_chunk_still_made():
    def build(row, ctx):
        return {"config": ctx.json_object(row["n"], "n"), "ok": ctx.number(row["id"], "id")}

    projector = _projector(build)
    deep = "[" * 100_000  # JSON nested past the decoder's recursion limit
    rows = [(1, 1, '{"a": 1}', None), (2, 2, deep, None), (3, 3, "{}", None)]
    out = projector.project(rows)
    assert [d["config"] for d in out.docs] == [{"a": 1}, {}]
    assert [q["error"].split(":")[0] for q in out.quarantined] == ["RecursionError"]
    assert [q["_id"] for q in out.quarantined] == [derive_id("h", "e", (2,))]


def test_a_builder_naming_an_unknown_column_quarantines_the_row():
    def unknown_column(row, ctx):
        return {"n": row["missing"]}

    out = _projector(unknown_column).project([(1, 1, 1, None)])
    assert out.quarantined[0]["error"] == "KeyError: 'missing'"


def test_a_table_flagged_in_every_chunk_is_flagged_in_every_document():
    """Times in another format flag every row, chunk after chunk; a good time after
    them is not flagged."""
    def build(row, ctx):
        return {"when": ctx.datetime(row["t"], "t")}

    projector = _projector(build)
    for chunk in range(20):
        out = projector.project([(chunk * 10 + i, 1, 1, "30/11/2026") for i in range(10)])
        assert len(out.docs) == 10 and out.flags == {"e.t: not an ISO-8601 time": 10}
    for chunk in range(17):
        good = projector.project([(1000 + chunk, 1, 1, "2026-11-30T00:00:00")])
        assert "_flags" not in good.docs[0]
