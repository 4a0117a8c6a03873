"""The MongoDB sink's upsert: documents hinted as fresh are inserted, yet the outcome
is always that of a replace (the hint can be wrong after a crash or a backfill)."""

from __future__ import annotations

from bson import ObjectId

from syncd.sinks.mongo import MongoSink


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
