"""A long reconcile lets the daemon keep following changes between its chunks."""

from __future__ import annotations

from legacy_adapters.sqlite import SQLiteSource
from syncd.checkpoint.store import StateStore
from syncd.engine.backfill import Backfill
from syncd.engine.migration_files import build_model, load_migrations
from syncd.progress import Progress
from syncd.projection.project import Params
from syncd.sample import make_eeg2025
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
