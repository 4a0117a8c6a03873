"""The in-memory evaluator (syncd.client.match, syncd.client.memory) against the server:
every filter matches the documents the server's find matches, every sort gives the
server's order, every projection the server's shape, on awkward documents (mixed
types, missing fields, nulls, arrays, nested objects, -inf, big integers, dates)."""

from __future__ import annotations

import datetime as dt

import pytest
from bson import Int64, ObjectId

from syncd.client.match import UnsupportedQuery, compile_filter
from syncd.client.memory import MemoryCollection

D1, D2 = dt.datetime(2025, 10, 20, 14, 3, 38, 728000), dt.datetime(2025, 10, 21)
VALUES = [None, 0, 1, 1.0, -1.5, 2**40, Int64(7), float("inf"), float("-inf"), "", "a", "B",
          "b", "abc", "Ab", True, False, D1, D2, {"x": 1}, {"x": 1, "y": 2}, {"y": 1},
          [], [1, 2], [3], ["a", 1], [[1, 2]], [{"x": 1}, {"x": 5}], b"\x00", ObjectId(
              "0" * 24)]


def documents() -> list[dict]:
    docs = []
    for i, value in enumerate(VALUES):
        docs.append({"_id": i, "v": value, "n": {"v": value, "k": i % 3},
                     "s": ["completed", "failed", "running"][i % 3],
                     "m": {"loss": [0.5, None, float("-inf"), 3, "x"][i % 5]}})
    docs.append({"_id": 100, "s": "completed"})  # no v, n, m
    docs.append({"_id": 101, "v": [None], "n": [{"v": 1}, {"v": "a"}, {"k": 2}]})
    docs.append({"_id": 102, "v": [2, "a", None, [1]], "n": [], "m": None})
    return docs


FILTERS = [
    {}, {"v": None}, {"v": 1}, {"v": 1.0}, {"v": "a"}, {"v": True}, {"v": [1, 2]}, {"v": 2},
    {"v": {"x": 1}}, {"v": {"y": 2, "x": 1}}, {"v": []}, {"v": D1}, {"v": 7},
    {"v": {"$ne": None}}, {"v": {"$ne": 1}}, {"v": {"$gt": 0}}, {"v": {"$gte": 1}},
    {"v": {"$lt": 1}}, {"v": {"$lte": "b"}}, {"v": {"$gt": "A"}}, {"v": {"$gte": None}},
    {"v": {"$lt": None}}, {"v": {"$gt": D1}}, {"v": {"$lte": D2}}, {"v": {"$gte": float("-inf")}},
    {"v": {"$not": {"$gte": float("-inf")}}}, {"v": {"$gt": [1]}}, {"v": {"$lt": {"x": 2}}},
    {"v": {"$in": [1, "a", None]}}, {"v": {"$in": []}}, {"v": {"$nin": [1, "a"]}},
    {"v": {"$nin": [None]}}, {"v": {"$exists": True}}, {"v": {"$exists": False}},
    {"v": {"$type": "number"}}, {"v": {"$type": "string"}}, {"v": {"$type": "array"}},
    {"v": {"$type": ["bool", "date"]}}, {"v": {"$type": "null"}}, {"v": {"$type": "object"}},
    {"v": {"$type": "double"}}, {"v": {"$type": "int"}}, {"v": {"$type": "long"}},
    {"v": {"$regex": "^a"}}, {"v": {"$regex": "^a", "$options": "i"}},
    {"v": {"$not": {"$regex": "b"}}}, {"v": {"$size": 2}}, {"v": {"$size": 0}},
    {"v": {"$all": [1, 2]}}, {"v": {"$elemMatch": {"$gt": 1, "$lt": 3}}},
    {"v": {"$elemMatch": {"x": {"$gt": 2}}}}, {"v": {"$gt": 0, "$lt": 10}},
    {"v.x": 1}, {"v.x": None}, {"v.x": {"$gte": 1}}, {"v.1": 2}, {"v.0.0": 1}, {"v.0": 1},
    {"v.1": {"$exists": True}},
    {"n.v": 1}, {"n.v": None}, {"n.v": {"$exists": False}}, {"n.k": {"$in": [0, 2]}},
    {"n.v.x": 5}, {"n": {"$size": 0}},
    {"s": "completed", "m.loss": {"$type": "number"}}, {"m.loss": {"$gte": float("-inf")}},
    {"m.loss": {"$not": {"$gte": float("-inf")}}}, {"m": None}, {"m.loss": None},
    {"$and": [{"s": "completed"}, {"v": {"$type": "number"}}]},
    {"$or": [{"s": "running"}, {"v": "a"}]}, {"$nor": [{"s": "running"}, {"v": None}]},
    {"$and": [{"m.loss": {"$gte": 0}}, {"m.loss": {"$lt": 1}}]},
    {"v": {"$mod": [2, 0]}}, {"_id": {"$in": [1, 2, 100]}}, {"_id": 5},
]
SORTS = [[("v", 1), ("_id", 1)], [("v", -1), ("_id", 1)], [("n.k", 1), ("v", -1), ("_id", -1)],
         [("m.loss", 1), ("_id", 1)], [("m.loss", -1), ("_id", 1)], [("s", 1), ("_id", -1)],
         [("n.v", 1), ("_id", 1)]]
PROJECTIONS = [{"v": 1}, {"n.v": 1, "s": 1}, {"_id": 0, "m.loss": 1}, {"v": 0, "n.k": 0},
               {"_id": 1}, {"_id": 0}, {"n.v": 1, "_id": 0}]


@pytest.fixture
def both(db):
    docs = documents()
    db["things"].insert_many([dict(d) for d in docs])
    stored = list(db["things"].find({}))  # as the server gives them back
    return db["things"], MemoryCollection("things", lambda: stored)


@pytest.mark.parametrize("spec", FILTERS, ids=[repr(f)[:60] for f in FILTERS])
def test_filters_match_what_the_server_matches(both, spec):
    server, memory = both
    want = sorted(d["_id"] for d in server.find(spec, {"_id": 1}))
    assert sorted(d["_id"] for d in memory.find(spec, {"_id": 1})) == want
    assert memory.count_documents(spec) == server.count_documents(spec)


@pytest.mark.parametrize("spec", SORTS, ids=[repr(s) for s in SORTS])
def test_sorts_give_the_servers_order(both, spec):
    server, memory = both
    want = [d["_id"] for d in server.find({}, {"_id": 1}).sort(spec)]
    assert [d["_id"] for d in memory.find({}, {"_id": 1}).sort(spec)] == want
    assert [d["_id"] for d in memory.find({}).sort(spec).skip(3).limit(4)] == want[3:7]


@pytest.mark.parametrize("spec", PROJECTIONS, ids=[repr(p) for p in PROJECTIONS])
def test_projections_give_the_servers_shape(both, spec):
    server, memory = both
    want = list(server.find({}, spec).sort("_id", 1))
    got = list(memory.find({}, spec).sort("_id", 1))
    assert got == want


def test_distinct_and_group_match_the_server(both):
    server, memory = both
    for key in ("s", "n.k", "m.loss"):
        assert sorted(map(repr, memory.distinct(key))) == sorted(map(repr, server.distinct(key)))
    pipeline = [{"$match": {"s": {"$ne": "running"}}},
                {"$group": {"_id": "$s", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    assert list(memory.aggregate(pipeline)) == list(server.aggregate(pipeline))


def test_what_it_cannot_evaluate_is_refused_by_name():
    for spec, name in (({"$where": "1"}, r"\$where"), ({"v": {"$near": [0, 0]}}, r"\$near"),
                       ({"$expr": {}}, r"\$expr"), ({"v": {"$type": "decimalish"}}, "decimalish")):
        with pytest.raises(UnsupportedQuery, match=name):
            compile_filter(spec)
