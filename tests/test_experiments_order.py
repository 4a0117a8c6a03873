"""The experiments list's order kept in this process (syncd.client.ranking and
ranking_feed) against the order a real SecantusDB sorts: the same runs in the same
order, complete and non-overlapping pages, the right count, and every change of a
run on the next page asked for; over HTTP, the dashboard serves it and falls back
to the server's path where it must."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from bson import Decimal128, Int64, ObjectId

from syncd.client import ranking_feed
from syncd.client.ranking import Ranking, fetch, ranked_ids
from syncd.client.ranking_feed import LiveRanking
from syncd.client.tracker import Tracker
from syncd.embedded import free_port
from tests.conftest import syncd_process, wait_port

pytestmark = pytest.mark.timeout(180)
LOSS = "metrics.best_val_loss"
HAS = {"$gte": float("-inf")}
PAGE = 7


def run(run_id, loss, challenge=1, status="completed", source="a", **extra) -> dict:
    metrics = {} if loss == "missing" else {"best_val_loss": loss}
    return {"_id": ObjectId(), "run_id": run_id, "challenge": challenge, "status": status,
            "_source": source, "metrics": metrics, **extra}


def awkward() -> list[dict]:
    """Runs whose values MongoDB orders in ways Python does not by itself: numbers of
    every BSON type, NaN, ties on (loss, run_id), string and missing run_ids, no loss
    in several ways."""
    docs = [run(i, (i * 37 % 11) / 10, challenge=1 + i % 2,
                status=("completed", "running", "failed")[i % 3], source="ab"[i % 2 == 0])
            for i in range(40)]
    docs += [run(5, 0.3), run(5, 0.3), run(5, 0.3),  # ties broken by _id
             run(100, Int64(2)), run(101, Decimal128("0.25")), run(102, 0.25),
             run(103, float("-inf")), run(104, -0.0), run(105, 7),
             run("r-7", 0.5), run("R-7", 0.5), run(None, 0.5), run(106, float("nan")),
             run(107, None), run(108, "missing"), run(109, "0.1"), run(110, True),
             run(111, 0.9, challenge=Int64(1)), run(112, 0.9, challenge=1.0),
             run(113, 0.2, challenge="1"), run(114, 0.8, status=None)]
    no_run_id = run(0, 0.4)
    del no_run_id["run_id"]
    flat = run(115, 0.1)
    flat["metrics"] = "n/a"
    return [*docs, no_run_id, flat, run(116, Decimal128("NaN"))]


def server_order(coll, match: dict) -> list[ObjectId]:
    """The list as the server sorts it: runs with a loss by (loss, run_id, _id), then
    the others by (run_id, _id)."""
    first = coll.find({**match, LOSS: HAS}, {"_id": 1}).sort(
        [(LOSS, 1), ("run_id", 1), ("_id", 1)])
    rest = coll.find({**match, LOSS: {"$not": HAS}}, {"_id": 1}).sort([("run_id", 1), ("_id", 1)])
    return [d["_id"] for d in first] + [d["_id"] for d in rest]


def pages(source, match: dict) -> tuple[list[ObjectId], set[int]]:
    """Every page of `match` from `source` (a Ranking or LiveRanking) joined, and the
    totals they said."""
    joined: list[ObjectId] = []
    totals = set()
    for offset in range(0, 200, PAGE):
        found = source.page(match, offset, PAGE)
        assert found is not None
        ids, total = found[0], found[1]
        assert len(ids) == max(0, min(PAGE, total - offset))
        joined += ids
        totals.add(total)
    return joined, totals


MATCHES = [{}, {"challenge": 1}, {"challenge": "1"}, {"status": "running"},
           {"challenge": 2, "status": "failed", "_source": "a"}, {"_source": "nobody"}]


def test_the_order_is_the_servers_and_pages_are_complete(db):
    coll = db["experiments"]
    coll.insert_many(awkward())
    ranking = Ranking.read(coll)
    assert ranking.usable
    for match in MATCHES:
        expected = server_order(coll, match)
        joined, totals = pages(ranking, match)
        assert joined == expected, match
        assert len(set(joined)) == len(joined) and totals == {len(expected)}
    chosen = ranking.choices()
    for field in ("status", "_source"):
        assert sorted(map(str, chosen[field])) == \
            sorted(str(v) for v in coll.distinct(field) if v is not None)


def test_changes_keep_the_order_the_servers(db):
    coll = db["experiments"]
    docs = awkward()
    coll.insert_many(docs)
    ranking = Ranking.read(coll)
    coll.update_one({"_id": docs[3]["_id"]}, {"$set": {LOSS: -5.0}})
    coll.update_one({"_id": docs[4]["_id"]}, {"$unset": {"metrics": ""}})
    coll.update_one({"_id": docs[5]["_id"]}, {"$set": {"run_id": "zz", "status": "failed"}})
    coll.delete_one({"_id": docs[6]["_id"]})
    coll.insert_one(run(500, 0.05, challenge=2))
    for oid in (docs[3]["_id"], docs[4]["_id"], docs[5]["_id"]):
        ranking.put(coll.find_one({"_id": oid}))
    ranking.remove(docs[6]["_id"])
    ranking.remove(ObjectId())  # not there: nothing
    ranking.put(coll.find_one({"run_id": 500}))
    for match in MATCHES:
        assert pages(ranking, match)[0] == server_order(coll, match), match


def test_a_value_it_cannot_order_makes_it_decline(db):
    coll = db["experiments"]
    coll.insert_many([run(1, 0.2), run([2, 3], 0.1)])
    ranking = Ranking.read(coll)
    assert not ranking.usable and ranking.page({}, 0, 10) is None
    coll.delete_one({"run_id": [2, 3]})
    ranking.remove(next(iter(ranking._odd)))
    assert ranking.usable and ranking.page({}, 0, 10)[1] == 1
    assert ranking.page({"model.name": "x"}, 0, 10) is None  # not a filter field


def test_best_is_the_servers_order_with_nan_first(db):
    coll = db["experiments"]
    coll.insert_many(awkward())
    match = Tracker.best_match(1, None)
    expected = [d["_id"] for d in coll.find(match, {"_id": 1}).sort(
        [(LOSS, 1), ("run_id", 1), ("_id", 1)])]
    assert ranked_ids(coll, match) == expected
    assert math.isnan(coll.find_one({"_id": expected[0]})["metrics"]["best_val_loss"])
    docs, total = Tracker(db).best_page(1, 5, None, offset=10)
    assert total == len(expected) and [d["_id"] for d in docs] == expected[10:15]
    assert fetch(coll, [expected[2], ObjectId(), expected[1]]) == \
        [coll.find_one({"_id": expected[2]}), coll.find_one({"_id": expected[1]})]


def ready(live: LiveRanking, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while live.state != "ready":
        assert time.monotonic() < deadline, live.state
        time.sleep(0.05)


def test_a_live_ranking_shows_each_change_on_the_next_page(db):
    coll = db["experiments"]
    docs = awkward()
    coll.insert_many(docs)
    live = LiveRanking(coll, poll=3600).start()  # only pages apply the changes here
    try:
        # Asked at once, a page waits for the first read rather than take the server's path.
        assert live.page({}, 0, 3)[0] == server_order(coll, {})[:3]
        assert live.state == "ready"
        assert pages(live, {})[0] == server_order(coll, {})
        coll.insert_one(run(-1, float("-inf")))  # first: the lowest loss, then run_id
        assert live.page({}, 0, 1)[0] == [coll.find_one({"run_id": -1})["_id"]]
        coll.update_one({"run_id": -1}, {"$set": {LOSS: None}})
        coll.update_one({"_id": docs[0]["_id"]}, {"$set": {"status": "failed"}})
        coll.delete_one({"_id": docs[1]["_id"]})
        coll.replace_one({"_id": docs[2]["_id"]},
                         {**run(-2, float("-inf"), challenge=2), "_id": docs[2]["_id"]})
        for match in MATCHES:
            joined, totals = pages(live, match)
            assert joined == server_order(coll, match), match
            assert totals == {len(joined)}
        assert live.page({}, 0, 1)[0] == [docs[2]["_id"]]
    finally:
        live.stop()


def test_a_bulk_change_or_a_dropped_collection_is_read_again(db, monkeypatch):
    monkeypatch.setattr(ranking_feed, "REQUEST_EVENTS", 5)
    monkeypatch.setattr(ranking_feed, "REBUILD_EVENTS", 20)
    monkeypatch.setattr(ranking_feed, "REREAD_SECONDS", 0.0)
    coll = db["experiments"]
    coll.insert_many(awkward())
    live = LiveRanking(coll, poll=0.05).start()
    try:
        ready(live)
        coll.update_many({"challenge": 1, "metrics": {"$type": "object"}},
                         {"$set": {LOSS: 0.5}})  # > 20 changes
        assert live.page({}, 0, PAGE) is None  # more than a page applies itself
        deadline = time.monotonic() + 60
        while (found := live.page({}, 0, 1000)) is None:
            assert time.monotonic() < deadline, live.state
            time.sleep(0.05)
        assert found[0] == server_order(coll, {})
        coll.drop()
        coll.insert_many([run(1, 0.3), run(2, 0.1)])
        deadline = time.monotonic() + 60
        while (found := live.page({}, 0, 10)) is None or found[1] != 2:
            assert time.monotonic() < deadline, live.state
            time.sleep(0.05)
        assert found[0] == server_order(coll, {})
    finally:
        live.stop()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def test_the_dashboard_pages_from_its_order_and_from_the_server(db, tmp_path: Path,
                                                                target_args):
    coll = db["experiments"]
    base = [run(i, None if i % 4 == 0 else (i * 7919 % 1000) / 1000,
                status=("completed", "running")[i % 2], start_time=dt.datetime(2025, 1, 1))
            for i in range(1, 351)]
    coll.insert_many(base)
    urls = {}
    procs = []
    try:
        for order in ("memory", "server"):
            cfg = tmp_path / f"{order}.toml"
            cfg.write_text(f'[http]\nexperiments_order = "{order}"\n')
            port = free_port()
            procs.append(syncd_process("dashboard", "--config", cfg, "--listen",
                                       f"127.0.0.1:{port}", "--state-dir",
                                       tmp_path / order, *target_args))
            wait_port(port, procs[-1], "syncd dashboard")
            urls[order] = f"http://127.0.0.1:{port}/api/experiments"
        deadline = time.monotonic() + 60
        while get(urls["memory"])["ordered_by"] != "dashboard":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for query in ("", "status=running&", "challenge=1&status=completed&"):
            seen: list[str] = []
            for offset in (0, 100, 200, 300):
                mine = get(f"{urls['memory']}?{query}offset={offset}")
                theirs = get(f"{urls['server']}?{query}offset={offset}")
                assert mine["ordered_by"] == "dashboard" and theirs["ordered_by"] == "server"
                assert mine["experiments"] == theirs["experiments"], (query, offset)
                assert mine["total"] == theirs["total"] and mine["choices"] == theirs["choices"]
                seen += [x["id"] for x in mine["experiments"]]
            assert len(seen) == len(set(seen)) == mine["total"]
        # A change shows on the next page load.
        coll.insert_one(run(999, -1.0))
        assert get(urls["memory"])["experiments"][0]["run_id"] == 999
        coll.delete_one({"run_id": 999})
        coll.update_one({"run_id": 4}, {"$set": {LOSS: -3.0}})
        first = get(urls["memory"])
        assert first["experiments"][0]["run_id"] == 4 and first["total"] == 350
        assert first["ordered_by"] == "dashboard"
    finally:
        for proc in procs:
            proc.terminate()
            proc.communicate(timeout=30)


def test_inside_syncd_run_the_first_page_starts_the_order(db, tmp_path: Path):
    """`syncd run`'s server (a context with the daemon's status) reads nothing for the
    list until a page asks; that page waits for the read and is served from it."""
    from syncd.api.http_options import http_context, http_options
    from syncd.config import load_settings
    from syncd.http.app import build_app
    from syncd.http.server import HttpServer

    db["experiments"].insert_many(awkward())
    settings = load_settings({"database": db.name})
    options = http_options(settings, "127.0.0.1:0")
    ctx = http_context(settings, db, None, status=lambda: None)
    with HttpServer(build_app(ctx, options), options) as server:
        time.sleep(0.5)
        assert "experiments-order" not in {t.name for t in threading.enumerate()}
        found = get(f"http://127.0.0.1:{server.port}/api/experiments?offset=5")
        assert found["ordered_by"] == "dashboard"
        assert [x["id"] for x in found["experiments"]] == \
            [str(i) for i in server_order(db["experiments"], {})[5:105]]


def test_experiments_order_takes_memory_or_server_only(tmp_path: Path):
    from syncd.api.http_options import http_options
    from syncd.config import load_settings
    from syncd.errors import ConfigError

    cfg = tmp_path / "s.toml"
    for value, ok in (("memory", True), ("server", True), ("fast", False)):
        cfg.write_text(f'[http]\nexperiments_order = "{value}"\n')
        settings = load_settings({"config": str(cfg)})
        if ok:
            assert http_options(settings, "127.0.0.1:0").experiments_order == value
        else:
            with pytest.raises(ConfigError, match="experiments_order"):
                http_options(settings, "127.0.0.1:0")
