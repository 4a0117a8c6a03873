"""Projection helpers: deterministic typed ids, reversible field names, faithful parsing."""

from __future__ import annotations

import datetime as dt
import gc
import math
import weakref
from zoneinfo import ZoneInfo

import bson
import pytest
from bson.binary import Binary

from legacy_adapters.base import Column, TableInfo
from legacy_adapters.values import RawText
from syncd.projection.ids import derive_id, id_maker
from syncd.projection.model import TableMap, collection_for_table
from syncd.projection.project import Params, Projector, RowContext, gc_paused
from syncd.projection.values import escape_field


def test_ids_are_deterministic_and_typed():
    a = derive_id("host", "runs", (1,))
    assert a == derive_id("host", "runs", (1,)) == id_maker("host", "runs")((1,))
    distinct = {a, derive_id("host", "runs", (1.0,)), derive_id("host", "runs", ("1",)),
                derive_id("host", "runs", (b"1",)), derive_id("host", "runs", (RawText(b"1"),)),
                derive_id("other", "runs", (1,)), derive_id("host", "epochs", (1,)),
                derive_id("host", "runs", (1, None)), derive_id("host", "runs", (None, 1))}
    assert len(distinct) == 9
    assert derive_id("h", "t", ("a", "bc")) != derive_id("h", "t", ("ab", "c"))
    assert derive_id("h", "t", (2**63 - 1,)) != derive_id("h", "t", (-(2**63),))


NAMES = ["plain", "a.b", "$x", "_id", "_rowid", "_flags", "a.$b.c", "_other", "$", "..", "_id.x"]


@pytest.mark.parametrize("name", NAMES)
def test_field_names_are_escaped_safely(name):
    field = escape_field(name)
    assert "." not in field and not field.startswith("$")
    assert field not in ("_id", "_rowid", "_flags")
    bson.encode({field: 1})


def test_distinct_columns_keep_distinct_fields():
    assert len({escape_field(n) for n in NAMES}) == len(NAMES)


def test_generic_collection_names_are_safe():
    assert collection_for_table("runs") == "runs"
    assert "$" not in collection_for_table("a$b")
    assert not collection_for_table("system.users").startswith("system.")
    assert not collection_for_table("_syncd_state").startswith("_syncd_")


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("text", ["2025-10-19T18:32:26.111910", "2025-03-30T02:30:00",
                                  "2025-10-26T02:30:00", "2025-11-02T01:30:00",
                                  "2025-10-19 18:32:26", "2025-10-19"])
def test_naive_times_are_read_in_the_configured_zone(zone, text):
    ctx = RowContext(Params("h", zone))
    got = ctx.datetime(text, "t")
    want = (dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
            .astimezone(dt.timezone.utc).replace(tzinfo=None))
    assert got == want and ctx.flags is None


def test_times_with_offsets_and_bad_times():
    ctx = RowContext(Params("h", "Europe/Berlin"))
    assert ctx.datetime("2025-10-19T18:32:26+02:00", "t") == dt.datetime(2025, 10, 19, 16, 32, 26)
    assert ctx.datetime("2025-10-19T18:32:26Z", "t") == dt.datetime(2025, 10, 19, 18, 32, 26)
    assert ctx.flags is None
    assert ctx.datetime("last tuesday", "t") == "last tuesday"
    assert ctx.datetime(None, "t") is None
    assert ctx.flags == ["t: not an ISO-8601 time"]


def test_json_and_boolean_helpers():
    ctx = RowContext(Params("h", "UTC"))
    assert ctx.json_object('{"a": 1, "b": [1.5, null], "c": NaN}', "c")["b"] == [1.5, None]
    assert math.isnan(ctx.json_object('{"c": NaN}', "c")["c"])
    assert ctx.flags is None
    assert ctx.json_object("[1, 2]", "c") == "[1, 2]"
    assert ctx.json_object('{"big": 99999999999999999999}', "c") == '{"big": 99999999999999999999}'
    assert ctx.json_object(RawText(b"\xff"), "c") == Binary(b"\xff", 0x80)
    assert ctx.flags == ["c: JSON but not an object", "c: not JSON", "c: not JSON text (RawText)"]
    ctx.flags = None
    assert [ctx.boolean(v, "b") for v in (1, 0, None, b"\x01", b"\x00", "true", "0")] == \
        [True, False, None, True, False, True, False]
    assert ctx.flags is None
    assert ctx.boolean(7, "b") == 7 and ctx.flags == ["b: not a boolean"]


def test_ref_ids_do_not_depend_on_the_order_of_refs():
    """A foreign key gets the id of its own storage class, whatever was looked up
    before it in the same context: 3 and 3.0 (and 0 and -0.0, b"1" and RawText b"1")
    are equal in Python but different SQLite values, so different ids. The daemon's
    apply path projects a few rows with a fresh context; a backfill, many with one."""
    keys = [(3,), (3.0,), (True,), (0,), (0.0,), (-0.0,), ("3",), (b"1",), (RawText(b"1"),),
            (3, "a"), (3.0, "a"), (None,), (3, None)]
    want = [None if None in k else derive_id("h", "runs", k) for k in keys]
    # Positions, not the keys, index the results: equal keys would share a dict entry.
    n = len(keys)
    for order in (range(n), range(n - 1, -1, -1), [*range(1, n, 2), *range(0, n, 2)]):
        ctx = RowContext(Params("h", "UTC"))
        got, again = [None] * n, [None] * n
        for i in order:
            got[i] = ctx.ref("runs", *keys[i])
        for i in order:
            again[i] = ctx.ref("runs", *keys[i])
        assert got == again == want
    assert [RowContext(Params("h", "UTC")).ref("runs", *k) for k in keys] == want


def test_number_helper_keeps_odd_values_and_flags_them():
    """`ctx.number` is builder API (README): numbers pass, anything else is kept, flagged."""
    ctx = RowContext(Params("h", "UTC"))
    assert [ctx.number(v, "n") for v in (3, 2.5, None)] == [3, 2.5, None]
    assert ctx.flags is None
    assert ctx.number("7", "n") == "7"
    assert ctx.number(RawText(b"\xff"), "n") == Binary(b"\xff", 0x80)
    assert ctx.flags == ["n: not a number (str)", "n: not a number (RawText)"]


def test_projector_generic_documents():
    table = TableInfo("t", (Column("k", "TEXT"), Column("a.b", "INTEGER")), ("k",))
    projector = Projector(table, TableMap("t", "t"), Params("h", "UTC", 2))
    out = projector.project([(10, "x", 1), (11, None, 2)])
    assert out.docs[0] == {"_id": derive_id("h", "t", ("x",)), "k": "x", "a\uff0eb": 1,
                           "_source": "h", "_v": 2}  # which source, which version made it
    # A NULL primary key (possible in rowid tables) falls back to the rowid, flagged.
    assert out.docs[1]["_flags"] == ["_id: primary key is NULL (keyed by rowid)"]
    assert out.docs[1]["_id"] != derive_id("h", "t", (None,))
    careful = projector.project([(12, "y", RawText(b"\xfe"))], careful=True)
    assert careful.docs[0]["a\uff0eb"] == Binary(b"\xfe", 0x80)
    assert careful.flags == {"t.a\uff0eb: text is not UTF-8 (kept as binary)": 1}


def _bytes(docs):
    return [bson.encode(d) for d in docs]


def test_whole_chunk_ids_and_documents_match_row_by_row():
    """Integer keys take a whole-chunk path (ids hashed at once, documents built by a
    per-table function); every document is byte-for-byte what one row alone gives,
    and a chunk whose keys are not all integers gets each key's own typed id."""
    cols = (Column("k", ""), Column("a.b", "INTEGER"), Column("a\uff0eb", "TEXT"),
            Column("_id", "TEXT"), Column("v", ""))
    table = TableInfo("t", cols, ("k",), without_rowid=True, rowid=None)
    projector = Projector(table, TableMap("t", "t"), Params("h", "UTC", 3))
    rows = [(1, 2, "x", "legacy", 1.5), (2, None, None, None, b"\x00"), (-(2**63), 0, "", "", "t")]
    # A text key sends the whole chunk down the row-by-row path.
    one_by_one = projector.project([*rows, ("z", 0, "", "", 0)]).docs[:-1]
    assert _bytes(projector.project(rows).docs) == _bytes(one_by_one)
    assert list(one_by_one[0]) == ["_id", "k", "a\uff0eb", "\uff3fid", "v", "_source", "_v"]
    assert one_by_one[0]["a\uff0eb"] == "x"  # two columns, one field name: the later wins
    mixed = [(1, 0, "", "", 0), ("1", 0, "", "", 0), (1.0, 0, "", "", 0), (b"1", 0, "", "", 0)]
    docs = projector.project(mixed).docs
    assert [d["_id"] for d in docs] == [derive_id("h", "t", (r[0],)) for r in mixed]
    assert len({d["_id"] for d in docs}) == 4


def test_built_documents_keep_their_order_flags_and_quarantine():
    def build(row, ctx):
        if row["n"] == 3:
            raise ValueError("bad row")
        return {"n": ctx.number(row["n"], "n"), "when": ctx.datetime(row["t"], "t"),
                "run": ctx.ref("runs", row["n"])}

    table = TableInfo("e", (Column("id", "INTEGER"), Column("n", ""), Column("t", "TEXT")),
                      ("id",))
    projector = Projector(table, TableMap("e", "epochs", build), Params("h", "UTC", 2))
    rows = [(1, 1, 1, "2025-01-02T03:04:05"), (2, 2, "x", "later"), (3, 3, 3, None)]
    out = projector.project(rows)
    assert [list(d) for d in out.docs] == [["_id", "n", "when", "run", "_source", "_v"],
                                           ["_id", "n", "when", "run", "_flags", "_source",
                                            "_v"]]
    assert out.docs[0]["_id"] == derive_id("h", "e", (1,))
    assert out.docs[0]["when"] == dt.datetime(2025, 1, 2, 3, 4, 5)
    assert out.docs[1]["_flags"] == ["n: not a number (str)", "t: not an ISO-8601 time"]
    assert out.flags == {"e.n: not a number (str)": 1, "e.t: not an ISO-8601 time": 1}
    assert [(q["_id"], q["error"], q["row"]) for q in out.quarantined] == [
        (derive_id("h", "e", (3,)), "ValueError: bad row", {"id": 3, "n": 3, "t": None})]
    one_by_one = projector.project([*rows, (4, "z", 0, None)])  # row by row: a text key
    assert _bytes(out.docs) == _bytes(one_by_one.docs[:-1])
    assert out.quarantined == one_by_one.quarantined


class _Node:
    """A weak-referenceable object that can sit in a reference cycle."""


def test_gc_pause_leaves_collection_working_and_frozen_objects_frozen():
    """After a chunk the collector is on again and still frees cycles made during the
    chunk; objects another party froze stay frozen (only syncd's own pause unfreezes)."""
    assert gc.isenabled()
    for promote in (False, True):
        with gc_paused(promote):
            assert not gc.isenabled()
            node = _Node()
            node.self = node
            gone = weakref.ref(node)
            del node
        assert gc.isenabled() and gone() is not None
        gc.collect()
        assert gone() is None
    kept = [_Node()]
    gc.freeze()
    try:
        # A frozen object is in no generation, so get_objects() does not list it. (The
        # freeze count itself may drop meanwhile: frozen objects released by anyone,
        # another thread included, are still freed.)
        assert not any(o is kept for o in gc.get_objects())
        with gc_paused(promote=True):
            pass
        assert gc.isenabled() and gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
