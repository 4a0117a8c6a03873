"""A long reconcile lets the daemon keep following changes between its chunks."""

from __future__ import annotations

import time

from legacy_adapters.sqlite import SQLiteSource
from syncd.checkpoint.store import StateStore
from syncd.engine.backfill import Backfill
from syncd.engine.baseline import Baseline
from syncd.engine.migration_files import build_model, load_migrations
from syncd.progress import Progress
from syncd.projection.project import Params, Projector
from syncd.sample import make_eeg2025
from syncd.sinks.history import HistoryStore
from syncd.sinks.julian import julian_day_now
from syncd.sinks.mongo import MongoSink
from tests.daemon_support import legacy_write


def test_reconcile_pauses_between_chunks_and_sees_what_happened_meanwhile(tmp_path, db):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=30)
    source = SQLiteSource(path)
    model = build_model(load_migrations(), 2)
    pairs = dict((i.name, (i, m)) for i, m in model.resolve(source.schema()))
    info, mapping = pairs["epoch_history"]
    sink = MongoSink(db)
    calls: list[int] = []

    def between() -> None:
        # What the daemon does here: apply a change committed during the reconcile.
        calls.append(1)
        if len(calls) == 3:
            legacy_write(path, "UPDATE epoch_history SET val_loss = 9.5 WHERE id = 1")
            legacy_write(path, "DELETE FROM epoch_history WHERE id = 2")

    engine = Backfill(source, db, sink, StateStore(db), Params("h", "UTC"), 20,
                      Progress(enabled=False))
    rows = source.count(info)
    steps = engine.reconcile_steps(info, mapping, model)
    while True:  # as the daemon's Reconciler drives it
        try:
            next(steps)
        except StopIteration as done:
            report = done.value
            break
        between()
    assert len(calls) >= rows // 20  # at least once per chunk: the daemon follows meanwhile
    assert report.rows == report.written == rows  # an empty collection: all were missing
    # Rows 1 and 2 changed after their chunk was read: in the daemon the change log
    # applies them between chunks; here the next reconcile finds exactly those two.
    again = engine.reconcile_table(info, mapping, model)
    assert (again.written, again.deleted, again.unchanged) == (1, 1, rows - 2)
    assert db.epochs.count_documents({"metrics.val_loss": 9.5}) == 1
    source.close()


def _reconciled_epochs(tmp_path, db):
    """An EEG2025 db whose epoch_history was reconciled once (its history baseline
    recorded), and the engine that did it, reading chunks of 5 rows."""
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=10)
    source = SQLiteSource(path)
    model = build_model(load_migrations(), 2)
    info, mapping = dict((i.name, (i, m)) for i, m in model.resolve(source.schema()))[
        "epoch_history"]
    engine = Backfill(source, db, MongoSink(db), StateStore(db, "h"), Params("h", "UTC"), 5,
                      Progress(enabled=False), history=Baseline(HistoryStore(db, "h"), source))
    engine.reconcile_table(info, mapping, model)  # the first one records the baseline
    return path, source, model, info, mapping, engine


def test_a_repaired_row_is_not_stamped_before_the_change_it_holds(tmp_path, db):
    """A row changed while a reconcile paused (the daemon follows the log then) and read
    by a later chunk: the version the reconcile records holds the changed values, so it
    must not be stamped before that statement ran, or the state as of a moment between
    the two would show the change before it happened."""
    path, source, model, info, mapping, engine = _reconciled_epochs(tmp_path, db)
    steps = engine.reconcile_steps(info, mapping, model)
    pauses, ran = 0, None
    while True:
        try:
            next(steps)
        except StopIteration:
            break
        pauses += 1
        if pauses == 3:  # after chunk 3: the daemon applies new changes here (a while)
            time.sleep(0.05)
            ran = julian_day_now()  # a row of the next chunk (ids 1.. in chunks of 5)
            legacy_write(path, "UPDATE epoch_history SET val_loss = 9.5 WHERE id = 16")
    (found,) = db["_syncd_history"].find({"source": "h", "table": "epoch_history",
                                           "op": "update"})
    assert found["found"] and dict(zip(found["cols"], found["vals"]))["val_loss"] == 9.5
    assert found["jd"] >= ran
    source.close()


def test_a_row_the_log_applied_during_the_reconcile_is_not_repaired_again(tmp_path, db):
    """The reconcile compares with digests read at its start; a row changed after that
    has its document from the change log by the time its chunk is read (the daemon
    applies the log between chunks). Repairing it again would write it twice and add
    a version marked `found` (a change no log gave) beside the logged one."""
    path, source, model, info, mapping, engine = _reconciled_epochs(tmp_path, db)
    steps, pauses = engine.reconcile_steps(info, mapping, model), 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            report = done.value
            break
        pauses += 1
        if pauses == 3:  # the daemon: a legacy write, then its change applied from the log
            legacy_write(path, "UPDATE epoch_history SET val_loss = 9.5 WHERE id = 30")
            rows = source.scan(info, 29, 1).rows
            MongoSink(db).upsert(mapping.collection,
                                 Projector(info, mapping, Params("h", "UTC")).project(rows).docs)
    assert report.written == 0
    assert db["_syncd_history"].count_documents({"source": "h", "op": {"$ne": "snapshot"}}) == 0
    source.close()
