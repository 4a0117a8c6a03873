"""A legacy file and its history, recorded the way the daemon records it (for the as-of
tests): a snapshot at the first sync, then one version per statement (an INSERT OR
REPLACE as a delete and an insert), each stamped with the statement's own time, and
mirrors of copies of the file taken at chosen moments."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.julian import julian_day
from tests.conftest import run_cli

SRC = "testhost"
TABLES = {"training_runs": "run_id", "epoch_history": "id", "model_checkpoints": "checkpoint_id"}
NASTY = "<!--<script>alert(1)</script>"
T0 = dt.datetime(2025, 10, 20, 12, 0, tzinfo=dt.UTC)


def moment(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


class Recorder:
    """Records a legacy file's changes as the daemon would: each statement run here is
    recorded as the versions it made, stamped with its (given) time."""

    def __init__(self, db, path: Path) -> None:
        self.store, self.path, self.seq = HistoryStore(db, SRC), path, 0
        self.store.ensure_indexes()

    def rows(self, table: str) -> dict[int, dict]:
        conn = sqlite3.connect(self.path)
        conn.row_factory = sqlite3.Row
        try:
            return {r["run_id" if table == "training_runs" else TABLES[table]]: dict(r)
                    for r in conn.execute(f"SELECT * FROM {table}")}
        finally:
            conn.close()

    def snapshot(self, at: dt.datetime) -> None:
        conn = sqlite3.connect(self.path)
        for table in TABLES:
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                               (table,)).fetchone()[0]
            self.store.record_schema(table, julian_day(at), 0, sql)
        conn.close()
        for table in TABLES:
            self.store.record([self._v(table, "snapshot", at, key, row, 0)
                               for key, row in self.rows(table).items()])

    def _v(self, table, op, at, key, row, n):
        return version(SRC, table, derive_id(SRC, table, (key,)), (key,), key, op,
                       julian_day(at), self.seq, n, row)

    def run(self, at: dt.datetime, sql: str, *params) -> None:
        """Run one statement on the legacy file; record what it changed."""
        before = {t: self.rows(t) for t in TABLES}
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute(sql, params)
        conn.close()
        self.seq += 1
        replaced = sql.upper().startswith("INSERT OR REPLACE")
        for table in TABLES:
            after, versions = self.rows(table), []
            for key in sorted(before[table].keys() | after.keys()):
                old, new = before[table].get(key), after.get(key)
                if old == new and not (replaced and table == "training_runs" and new
                                       and key == params[0]):
                    continue
                if new is None:
                    versions.append(self._v(table, "delete", at, key, None, 0))
                elif old is None:
                    versions.append(self._v(table, "insert", at, key, new, 0))
                elif replaced:
                    versions += [self._v(table, "delete", at, key, None, 0),
                                 self._v(table, "insert", at, key, new, 1)]
                else:
                    versions.append(self._v(table, "update", at, key, new, 0))
            self.store.record(versions)


def migrate(path: Path, mongo_url: str, database: str) -> None:
    result = run_cli("migrate", "--sqlite", path, "--mongo-url", mongo_url, "--database",
                     database, "--source-id", SRC, "--timezone", "UTC")
    assert result.code == 0, result


def build_story(tmp_path: Path, db: Any, client: Any, mongo_url: str,
                copies_at: tuple[float, ...] = (0.5, 1.5, 2.5, 5)) -> Iterator[dict]:
    """A legacy file, its history, and a mirror of a copy taken at each of `copies_at`
    (hours after T0; dropped after the test)."""
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=12, seed=7)
    migrate(path, mongo_url, db.name)
    # The story writes its own history at moments of its own (T0 onwards): the baseline
    # the migrate just recorded, stamped now, is not part of it.
    for name in ("_syncd_history", "_syncd_schemas"):
        db[name].delete_many({})
    rec = Recorder(db, path)
    rec.snapshot(moment(0))
    copies: dict[float, str] = {}

    def copy_at(hours: float) -> None:
        name = f"{db.name}_at{int(hours * 10)}"
        client.drop_database(name)
        shutil.copy(path, tmp_path / f"{name}.db")
        migrate(tmp_path / f"{name}.db", mongo_url, name)
        copies[hours] = name

    runs = rec.rows("training_runs")
    done = sorted(k for k, r in runs.items() if r["status"] == "completed"
                  and r["best_val_loss"] is not None)
    best = min(done, key=lambda k: runs[k]["best_val_loss"])
    if 0.5 in copies_at:
        copy_at(0.5)
    # Two updates of the best run in the same second, then a delete of another run.
    rec.run(moment(1), "UPDATE training_runs SET status = 'failed' WHERE run_id = ?", best)
    rec.run(moment(1) + dt.timedelta(microseconds=300),
            "UPDATE training_runs SET best_val_loss = 9.5 WHERE run_id = ?", best)
    if 1.5 in copies_at:
        copy_at(1.5)
    rec.run(moment(2), "DELETE FROM training_runs WHERE run_id = ?", done[-1])
    if 2.5 in copies_at:
        copy_at(2.5)
    rerun = done[0] if done[0] != best else done[1]
    rec.run(moment(3), "INSERT OR REPLACE INTO training_runs (run_id, challenge, model_name, "
            "status, best_val_loss, config) VALUES (?, 1, 'rerun', 'completed', 0.001, "
            "'{\"lr\": 0.5}')", rerun)
    rec.run(moment(4), "INSERT INTO training_runs (run_id, challenge, model_name, status, "
            "best_val_loss) VALUES (900, 1, 'late', 'completed', 0.0001)")
    rec.run(moment(4.2), "INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss) "
            "VALUES (900, 1, 0.5, 0.4)")
    # Markup and a credential in the best run's notes and config.
    rec.run(moment(4.5), "UPDATE training_runs SET notes = ?, config = ? WHERE run_id = ?",
            NASTY, '{"api_key": "sekrit-123", "lr": 1}', best)
    if 5 in copies_at:
        copy_at(5)
    yield {"db": db, "copies": copies, "best": best, "deleted": done[-1], "rerun": rerun,
           "client": client}
    for name in copies.values():
        client.drop_database(name)


