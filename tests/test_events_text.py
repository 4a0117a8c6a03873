"""`syncd events` names what changed by the legacy key (`run_id=3`), not only by ObjectId:
the events carry each document's row key from the sync path that wrote it (the daemon's
apply and its reconcile, through the EventingSink) to a real Redis stream."""

from __future__ import annotations

import json
import re
import sqlite3

from legacy_adapters.sqlite import SQLiteSource
from syncd.checkpoint.store import StateStore
from syncd.engine.apply import Applier
from syncd.engine.backfill import Backfill
from syncd.engine.migration_files import build_model, load_migrations
from syncd.progress import Progress
from syncd.projection.project import Params, Projector
from syncd.sample import make_eeg2025
from syncd.sinks.eventing import EventingSink
from syncd.sinks.events import STREAM, EventPublisher, event_key
from syncd.sinks.mongo import MongoSink
from tests.conftest import run_cli
from tests.daemon_support import legacy_write
from tests.hdf5_support import own_redis  # noqa: F401

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


def test_events_name_rows_by_their_legacy_key(tmp_path, db, own_redis):  # noqa: F811
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=3)
    source = SQLiteSource(path)
    model = build_model(load_migrations(), 2)
    tables = {i.name: (i, m) for i, m in model.resolve(source.schema())}
    publisher = EventPublisher(own_redis.client(), "testhost", 2)
    sink = EventingSink(MongoSink(db), publisher,
                        {m.collection: i.name for i, m in tables.values()})
    params = Params("testhost", "UTC", 2)
    # The reconcile of the daemon (and migrate) writes what is missing: one event per
    # chunk, its documents named by run_id.
    Backfill(source, db, sink, StateStore(db, "testhost"), params, 100,
           Progress(enabled=False)).reconcile_table(*tables["training_runs"], model)
    # The daemon's apply of changed rows: an update, and a deleted checkpoint.
    legacy_write(path, "UPDATE training_runs SET status = 'failed' WHERE run_id = 2")
    legacy_write(path, "DELETE FROM model_checkpoints WHERE checkpoint_id = 1")
    applier = Applier(source, sink, StateStore(db, "testhost"), params)
    for table, wanted in (("training_runs", {(2,)}), ("model_checkpoints", {(1,)})):
        info, mapping = tables[table]
        applier.write(info, mapping, applier.fetch(info, wanted), wanted)
    source.close()
    # An event of an older syncd (no keys) on the same stream.
    old = {"type": "table.upsert", "source_id": "old", "collection": "epochs",
           "table": "epoch_history", "operation": "upsert", "ids": ["65f0c0ffee0000000000abcd"],
           "version": 2, "time": "2025-01-01T00:00:00.000+00:00"}
    own_redis.client().xadd(STREAM, {"event": json.dumps(old)})

    text = run_cli("events", "--from", "0", "--count", "4", "--redis-url", own_redis.url)
    assert text.code == 0, text
    lines = text.out.splitlines()
    assert len(lines) == 4, text
    # One shape for every line: time, stream id, what, then name=value fields.
    assert all(re.match(TIME + r" \d+-\d+ \S+ ", line) for line in lines), lines
    assert re.search(r" experiments upsert 3 doc\(s\) run_id=1 run_id=2 run_id=3 "
                     r"source_id=testhost table=training_runs version=2$", lines[0])
    assert " experiments upsert 1 doc(s) run_id=2 " in lines[1]
    assert " checkpoints delete 1 doc(s) checkpoint_id=1 source_id=testhost " in lines[2]
    assert " epochs upsert 1 doc(s) 65f0c0ffee0000000000abcd source_id=old" in lines[3]

    as_json = [json.loads(line) for line in run_cli(
        "events", "--from", "0", "--count", "3", "--json", "--redis-url",
        own_redis.url).out.splitlines()]
    assert as_json[1]["keys"] == [{"run_id": 2}]
    assert as_json[1]["ids"] == [str(db.experiments.find_one({"run_id": 2})["_id"])]
    assert as_json[2]["keys"] == [{"checkpoint_id": 1}]


def test_an_hdf5_event_has_the_same_shape_and_odd_text_is_escaped(own_redis):  # noqa: F811
    client = own_redis.client()
    client.xadd(STREAM, {"event": json.dumps({
        "type": "hdf5.quarantined", "at": 1764547200.25, "path": "/data/R1 \x1b[2J.h5",
        "error": "bad\nfile"})})
    text = run_cli("events", "--from", "0", "--count", "1", "--redis-url", own_redis.url)
    assert text.code == 0, text
    assert text.out == ('2025-12-01T00:00:00.250+00:00 ' + text.out.split()[1]
                        + ' hdf5.quarantined path="/data/R1 \\u001b[2J.h5" '
                        'error="bad\\nfile"\n')


def test_keys_of_odd_rows_name_them_as_their_documents_are_keyed(tmp_path):
    """A NULL primary key is keyed by rowid (as its document is), a composite key names
    every column, and a BLOB key is written as SQLite writes it."""
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE subjects (subject_id TEXT PRIMARY KEY, age REAL);"
                       "INSERT INTO subjects VALUES ('s1', 20), (NULL, 30);"
                       "CREATE TABLE pairs (a INTEGER, b BLOB, PRIMARY KEY (a, b));"
                       "INSERT INTO pairs VALUES (1, x'00ff');")
    conn.close()
    source = SQLiteSource(path)
    model = build_model(load_migrations(), 1)

    for info, mapping in model.resolve(source.schema()):
        projector = Projector(info, mapping, Params("h", "UTC", 1))
        rows = source.scan(info, None, 10).rows
        docs = projector.project(rows).docs
        keys = {str(k): event_key(v) for k, v in projector.legacy_keys(rows, docs).items()}
        assert keys == {str(d["_id"]): event_key(projector.key_document(r))
                        for d, r in zip(docs, rows)}
        assert keys == {str(k): event_key(v) for k, v in projector.legacy_keys(rows).items()}
        if info.name == "subjects":
            assert sorted(keys.values(), key=str) == [{"rowid": 2}, {"subject_id": "s1"}]
        else:
            assert list(keys.values()) == [{"a": 1, "b": "x'00ff'"}]
    source.close()
