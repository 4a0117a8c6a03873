"""Compiled builders (syncd/projection/template.py): the documents a whole-chunk builder
makes are exactly those of calling the migration's builder row by row."""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
import sys
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
from syncd.projection.template import compile_builder
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
        assert projector._chunk_build is not None, info.name  # the fast path is taken
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
    assert projector._chunk_build is not None
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
    assert projector._chunk_build is not None
    deep = "[" * 100_000  # JSON nested past the decoder's recursion limit
    rows = [(1, 1, '{"a": 1}', None), (2, 2, deep, None), (3, 3, "{}", None)]
    out = projector.project(rows)
    assert [d["config"] for d in out.docs] == [{"a": 1}, {}]
    assert [q["error"].split(":")[0] for q in out.quarantined] == ["RecursionError"]
    assert [q["_id"] for q in out.quarantined] == [derive_id("h", "e", (2,))]


GLOBAL = 3


def test_other_shapes_are_left_to_the_row_path(caplog: pytest.LogCaptureFixture):
    def branches(row, ctx):
        if row["n"]:
            return {"n": 1}
        return {}

    def uses_a_global(row, ctx):
        return {"n": GLOBAL}

    def spreads(row, ctx):
        return {**row}

    def unknown_column(row, ctx):
        return {"n": row["missing"]}

    def other_method(row, ctx):
        return {"n": ctx.flag("n", "x")}

    def keyword(row, ctx):
        return {"n": ctx.datetime(row["t"], name="t")}

    for build in (branches, uses_a_global, spreads, unknown_column, other_method, keyword,
                  lambda row, ctx: {"n": row["n"]}):
        assert compile_builder(build, ["id", "n", "t"], 1, RowContext(Params("h", "UTC"))) \
            is None, build
    out = _projector(unknown_column).project([(1, 1, 1, None)])
    assert out.quarantined[0]["error"] == "KeyError: 'missing'"
    with caplog.at_level(logging.DEBUG, logger="syncd.projection.template"):
        for build in (branches, unknown_column, uses_a_global):
            compile_builder(build, ["id", "n", "t"], 1, RowContext(Params("h", "UTC")))
    said = [r.getMessage() for r in caplog.records]
    assert any("branches runs row by row: its body is not one `return {...}`" in m
               for m in said), said
    assert any("row['missing'] is not a column" in m for m in said), said
    assert any("GLOBAL is not a row value" in m for m in said), said


def test_a_migration_file_changed_after_loading_is_not_compiled(tmp_path: Path):
    path = tmp_path / "m_changed.py"
    path.write_text("def build(row, ctx):\n    return {'n': row['n']}\n")
    spec = importlib.util.spec_from_file_location("m_changed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ctx = RowContext(Params("h", "UTC"))
    assert compile_builder(module.build, ["n"], 1, ctx) is not None
    path.write_text("def build(row, ctx):\n    return {'n': row['t']}\n")  # not reloaded
    import linecache

    linecache.checkcache(str(path))
    assert compile_builder(module.build, ["n", "t"], 1, ctx) is None
    sys.modules.pop("m_changed", None)


def test_a_table_flagged_in_every_chunk_stops_trying_the_compiled_path():
    """Times in another format flag every row: after each chunk the compiled builder
    gives back, it waits 1, 2, 4 ... chunks, so such a table does not pay twice."""
    def build(row, ctx):
        return {"when": ctx.datetime(row["t"], "t")}

    projector = _projector(build)
    compiled, calls = projector._chunk_build, []

    def counting(*args):
        calls.append(1)
        return compiled(*args)

    projector._chunk_build = counting
    for chunk in range(20):
        out = projector.project([(chunk * 10 + i, 1, 1, "30/11/2026") for i in range(10)])
        assert len(out.docs) == 10 and out.flags == {"e.t: not an ISO-8601 time": 10}
    assert len(calls) == 5  # chunks 1, 3, 6, 11 and 20; then 16 chunks row by row
    for chunk in range(17):
        good = projector.project([(1000 + chunk, 1, 1, "2026-11-30T00:00:00")])
        assert "_flags" not in good.docs[0]
    assert len(calls) == 6  # the 17th clean chunk was compiled again
    projector.project([(2000, 1, 1, "2026-11-30T00:00:00")])
    assert len(calls) == 7  # and a compiled chunk that went through resets the wait
