"""Scan mode: a table that keeps receiving rows does not hold back the tables after it."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

from legacy_adapters.sqlite import SQLiteSource
from syncd.api.run_daemon import build_daemon, daemon_options
from syncd.config import Settings
from syncd.sample import make_eeg2025
from syncd.sinks.events import EventPublisher


def _write(path, sql, params=()):
    conn = sqlite3.connect(path)  # the legacy pattern
    conn.execute(sql, params)
    conn.commit()
    conn.close()


class Recording(EventPublisher):
    """Notes each table the daemon writes (it announces every write), and lets the
    test act in between, as a legacy writer would."""

    def __init__(self) -> None:
        super().__init__(None, "t", None)
        self.tables: list[str] = []
        self.hook: Callable[[str], None] | None = None

    def announce(self, collection, table, operation, ids, keys=None):
        if self.hook is not None and operation == "upsert":
            self.tables.append(table)
            self.hook(table)
        super().announce(collection, table, operation, ids, keys)


EPOCH = ("INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss) "
         "VALUES (1, 99, 0.1, 0.2)")


def test_a_busy_table_does_not_starve_the_others(tmp_path, db, mongo_url):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, rows=500)
    settings = Settings(sqlite=legacy, mongo_url=mongo_url, database=db.name,
                        state_dir=tmp_path / "state", source_id="t", timezone="UTC")
    options = dataclasses.replace(daemon_options(settings, "scan"), batch=5)
    source = SQLiteSource(legacy)
    events = Recording()
    daemon = build_daemon(settings, options, source, db, events)
    daemon.lease.acquire()
    try:
        daemon.startup.run()
        for _ in range(20):
            _write(legacy, EPOCH)
        _write(legacy, "INSERT INTO model_checkpoints (run_id, epoch, val_loss) "
               "VALUES (1, 99, 0.2)")
        _write(legacy, "INSERT INTO training_runs (challenge, status) VALUES (2, 'running')")
        applied = events.tables

        def training(table):
            if table == "epoch_history" and applied.count("epoch_history") < 40:
                _write(legacy, EPOCH)  # a training run keeps logging epochs meanwhile

        events.hook = training
        for _ in range(100):  # step until a round finds nothing new
            before = len(applied)
            daemon.follower.follow()
            if len(applied) == before:
                break
        # The first round applies a batch of each table; the old loop applied every
        # epoch_history batch, as long as new ones kept coming, before the next table.
        assert applied.index("model_checkpoints") < 3, applied
        assert applied.index("training_runs") < 3, applied
        conn = sqlite3.connect(legacy)
        epochs = conn.execute("SELECT count(*) FROM epoch_history WHERE epoch = 99").fetchone()[0]
        conn.close()
        assert epochs == 59
        assert db["epochs"].count_documents({"epoch": 99}) == epochs
        assert db["checkpoints"].count_documents({"epoch": 99}) == 1
    finally:
        daemon.lease.release()
        source.close()
