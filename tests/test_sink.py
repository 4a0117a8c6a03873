"""The MongoDB sink's upsert: documents hinted as fresh are inserted, yet the outcome
is always that of a replace (the hint can be wrong after a crash or a backfill)."""

from __future__ import annotations

import pymongo
import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from syncd.connect.reasons import mongo_reason
from syncd.retry import mongo_unavailable
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.mongo import MongoSink
from tests.daemon_support import MongoProcess


def test_fresh_documents_land_as_given_whether_or_not_they_existed(db):
    sink = MongoSink(db)
    stale, absent, plain = ObjectId(), ObjectId(), ObjectId()
    db.epochs.insert_many([{"_id": stale, "epoch": 1, "val_loss": 0.9, "gone": True},
                           {"_id": plain, "epoch": 3, "val_loss": 0.7}])
    docs = [{"_id": stale, "epoch": 1, "val_loss": 0.5},
            {"_id": absent, "epoch": 2, "val_loss": 0.6},
            {"_id": plain, "epoch": 3, "val_loss": 0.4}]
    assert sink.upsert("epochs", docs, fresh={stale, absent}) == []
    assert list(db.epochs.find({}, sort=[("epoch", 1)])) == docs


def test_a_fresh_document_the_server_refuses_is_rejected_alone(db):
    """A unique secondary index refuses one document (also a duplicate key, but not
    of `_id`): it is rejected with the server's reason; the rest are written."""
    sink = MongoSink(db)
    db.runs.create_index("name", unique=True)
    owner, clash, fine, existing = ObjectId(), ObjectId(), ObjectId(), ObjectId()
    db.runs.insert_many([{"_id": owner, "name": "a"}, {"_id": existing, "name": "b0"}])
    docs = [{"_id": clash, "name": "a"}, {"_id": fine, "name": "c"},
            {"_id": existing, "name": "b"}]
    rejected = sink.upsert("runs", docs, fresh={clash, fine, existing})
    assert [r.id for r in rejected] == [clash]
    assert "duplicate key" in rejected[0].error.lower() or "E11000" in rejected[0].error
    assert db.runs.find_one({"_id": clash}) is None
    assert db.runs.find_one({"_id": fine}) == {"_id": fine, "name": "c"}
    assert db.runs.find_one({"_id": existing}) == {"_id": existing, "name": "b"}
    assert db.runs.find_one({"_id": owner}) == {"_id": owner, "name": "a"}


def _fail_inserts(db, times: int, **data) -> None:
    """The server's own `failCommand` failpoint (as a real mongod has it) on `insert`."""
    db.client.admin.command("configureFailPoint", "failCommand", mode={"times": times},
                            data={"failCommands": ["insert"], **data})


@pytest.fixture
def failing_db(tmp_path):
    """A database on a SecantusDB of the test's own with its test commands on (the
    `failCommand` failpoint, as `mongod --setParameter enableTestCommands=1` has it)."""
    mongo = MongoProcess(tmp_path / "mongo", "--enable-test-commands")
    mongo.start()
    client = pymongo.MongoClient(mongo.url, serverSelectionTimeoutMS=10000)
    yield client["sink"]
    client.close()
    mongo.stop()


def test_a_write_concern_not_met_is_an_outage_not_a_write(failing_db):
    """A primary that steps down before the batch is replicated answers with a
    writeConcernError: the writes may be rolled back, so the batch is neither counted as
    written nor quarantined; it raises what the daemon waits out (and retries whole),
    for documents and history alike. Once the server takes writes, the same call lands."""
    db = failing_db
    sink, history = MongoSink(db), HistoryStore(db, "h")
    docs = [{"_id": i, "v": i} for i in range(3)]
    versions = [version("h", "t", i, (i,), i, "insert", 2460000.5, i, 0, {"v": i})
                for i in range(3)]
    shutdown = {"code": 91, "errmsg": "Replication is being shut down, retry"}
    _fail_inserts(db, 20, writeConcernError=shutdown)
    try:
        for write in (lambda: sink.insert("wce", docs),
                      lambda: sink.upsert("wce", docs, fresh={0, 1, 2}),
                      lambda: history.record(versions)):
            with pytest.raises(AutoReconnect,
                               match=r"Replication is being shut down, retry \(code 91\)"
                               ) as got:
                write()
            assert mongo_unavailable(got.value)
            # /readyz, STATUS and the log's outage line: what happened, code and all;
            # not "unreachable" (the server answered), nor cut at the errmsg's comma
            assert mongo_reason(got.value) == ("MongoDB did not take the batch: Replication "
                                               "is being shut down, retry (code 91)")
    finally:
        db.client.admin.command("configureFailPoint", "failCommand", mode="off")
    assert sink.insert("wce", docs) == []  # retried whole: idempotent
    history.record(versions)
    assert sorted(d["v"] for d in db.wce.find()) == [0, 1, 2]
    assert db["_syncd_history"].count_documents({"source": "h"}) == 3
