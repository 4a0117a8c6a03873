"""`syncd events` and `WindowCache.subscribe` skip (and count) stream entries that are not
well-formed events: the stream is shared, anything may be XADDed to it."""

from __future__ import annotations

import json

from syncd.client.cache import WindowCache
from syncd.sinks.events import STREAM
from tests.conftest import run_cli
from tests.hdf5_support import own_redis  # noqa: F401

GARBAGE = [
    {"event": "42"},
    {"event": "[" * 100_000 + "]" * 100_000},  # deeper than any JSON parser recurses
    {"event": json.dumps({"ids": 5})},
    {"event": json.dumps({"collection": "experiments", "operation": "upsert", "ids": 5})},
    {"event": json.dumps({"collection": "experiments", "ids": [1, 2]})},
    {"event": b"\xff\xfe{"},
    {"other": "field"},
    {"event": '{"type": "x", "deep": ' + "[" * 900 + "]" * 900 + "}"},
]
GOOD = {"type": "table.upsert", "source_id": "h", "collection": "experiments",
        "table": "training_runs", "operation": "upsert", "ids": ["a", "b"], "version": 3,
        "time": "2025-01-01T00:00:00.000+00:00"}


def test_events_cli_skips_and_counts_what_syncd_did_not_write(own_redis):  # noqa: F811
    client = own_redis.client()
    for fields in GARBAGE:
        client.xadd(STREAM, fields)
    client.xadd(STREAM, {"event": json.dumps(GOOD)})
    as_json = run_cli("events", "--from", "0", "--count", "1", "--json", "--redis-url",
                      own_redis.url)
    assert as_json.code == 0, as_json
    assert json.loads(as_json.out)["ids"] == ["a", "b"]
    assert as_json.out.count("\n") == 1  # one object per line
    assert f"skipped {len(GARBAGE)} stream entries that are not syncd events" in as_json.err
    as_text = run_cli("events", "--from", "0", "--count", "1", "--redis-url", own_redis.url)
    assert as_text.code == 0, as_text
    assert "experiments upsert 2 doc(s) a b" in as_text.out
    assert f"skipped {len(GARBAGE)}" in as_text.err


def test_subscribe_skips_what_is_not_an_event(own_redis):  # noqa: F811
    client = own_redis.client()
    cache = WindowCache(client, prefix="p")
    for fields in GARBAGE:
        client.xadd("p:events", fields)
    cache.publish({"type": "training.epoch", "epoch": 1})
    got: list[dict] = []
    for _, event in cache.subscribe("0", block_ms=50, stop=lambda: len(got) >= 1):
        got.append(event)
    assert [e["epoch"] for e in got] == [1]
