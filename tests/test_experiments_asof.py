"""`Tracker(db, as_of=T)` and `syncd experiments ... --as-of T`: the experiments as they
were at T, rebuilt from the history of legacy rows, equal the mirror of a copy of
metadata.db taken at T (migrated with the same model into a database of its own).

History is written here with HistoryStore directly, the way the daemon records it:
a snapshot at the first sync, then one version per statement (an INSERT OR REPLACE
as a delete and an insert), each at the statement's own time.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import pytest

from syncd.client.asof import AsOfTracker, parse_time
from syncd.client.tracker import Tracker
from syncd.errors import SyncdError
from syncd.projection.ids import derive_id
from syncd.sample import make_eeg2025
from syncd.sinks.history import HistoryStore, julian_day, version
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(300)
SRC = "testhost"
TABLES = {"training_runs": "run_id", "epoch_history": "id", "model_checkpoints": "checkpoint_id"}
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


@pytest.fixture
def story(tmp_path, db, client, mongo_url):
    """A legacy file, its history, and a mirror of a copy taken at each moment."""
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=12, seed=7)
    migrate(path, mongo_url, db.name)
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
    copy_at(0.5)
    # Two updates of the best run in the same second, then a delete of another run.
    rec.run(moment(1), "UPDATE training_runs SET status = 'failed' WHERE run_id = ?", best)
    rec.run(moment(1) + dt.timedelta(microseconds=300),
            "UPDATE training_runs SET best_val_loss = 9.5 WHERE run_id = ?", best)
    copy_at(1.5)
    rec.run(moment(2), "DELETE FROM training_runs WHERE run_id = ?", done[-1])
    copy_at(2.5)
    rerun = done[0] if done[0] != best else done[1]
    rec.run(moment(3), "INSERT OR REPLACE INTO training_runs (run_id, challenge, model_name, "
            "status, best_val_loss, config) VALUES (?, 1, 'rerun', 'completed', 0.001, "
            "'{\"lr\": 0.5}')", rerun)
    rec.run(moment(4), "INSERT INTO training_runs (run_id, challenge, model_name, status, "
            "best_val_loss) VALUES (900, 1, 'late', 'completed', 0.0001)")
    rec.run(moment(4.2), "INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss) "
            "VALUES (900, 1, 0.5, 0.4)")
    copy_at(5)
    yield {"db": db, "copies": copies, "best": best, "deleted": done[-1], "rerun": rerun,
           "client": client}
    for name in copies.values():
        client.drop_database(name)


def test_as_of_answers_equal_the_mirror_of_a_copy_taken_then(story):
    db, client = story["db"], story["client"]
    for hours, name in story["copies"].items():
        live, past = Tracker(client[name]), Tracker(db, as_of=moment(hours))
        assert isinstance(past, AsOfTracker) and not isinstance(live, AsOfTracker)
        for challenge in (1, 2):
            assert past.best_experiments(challenge, 50) == live.best_experiments(challenge, 50)
            assert past.best_experiments(challenge, 3, None, offset=2) == \
                live.best_experiments(challenge, 3, None, offset=2)
            assert past.count(past.best_match(challenge)) == live.count(live.best_match(challenge))
        for query in ({}, {"status": "completed"}, {"metrics.best_val_loss": {"$lt": 0.5}},
                      {"model.name": {"$in": ["rerun", "late"]}}, {"config.lr": 0.5}):
            assert past.search(query) == live.search(query), (hours, query)
            assert past.best_first(query, 0, 5) == live.best_first(query, 0, 5)
        refs = [str(r["run_id"]) for r in live.search({})][:4]
        assert past.compare(refs) == live.compare(refs)
        assert past.history(refs[0]) == live.history(refs[0])
        assert past.why_no_best(7) == live.why_no_best(7).replace(name, db.name)


def test_as_of_before_an_update_delete_and_replace_shows_the_state_then(story):
    db = story["db"]
    before, after = Tracker(db, as_of=moment(0.5)), Tracker(db, as_of=moment(3.5))
    best, deleted, rerun = story["best"], story["deleted"], story["rerun"]
    was = before.history(str(best))["experiment"]
    assert was["status"] == "completed" and was["metrics"]["best_val_loss"] < 9
    assert after.history(str(best))["experiment"]["status"] == "failed"
    assert before.history(str(deleted))["experiment"]["run_id"] == deleted
    with pytest.raises(SyncdError, match=f"no experiment with run_id or _id '{deleted}'.*as of"):
        after.history(str(deleted))
    assert before.history(str(rerun))["experiment"]["model"]["name"] != "rerun"
    assert after.history(str(rerun))["experiment"]["model"]["name"] == "rerun"
    # A run inserted after T is absent; its epoch too.
    assert not Tracker(db, as_of=moment(3.9)).search({"run_id": 900})
    later = Tracker(db, as_of=moment(4.5)).history("900")
    assert [e["epoch"] for e in later["epochs"]] == [1]


def test_times_before_history_and_without_offset_are_refused(story):
    db = story["db"]
    with pytest.raises(SyncdError, match="before history starts"):
        Tracker(db, as_of="2025-10-19")
    with pytest.raises(SyncdError, match="which time zone"):
        Tracker(db, as_of="2025-10-20T13:00:00")
    with pytest.raises(SyncdError, match="not a time"):
        Tracker(db, as_of="yesterday")
    assert parse_time("2025-10-20") == T0 - dt.timedelta(hours=12)
    assert parse_time("2025-10-20T14:00:00+02:00") == T0
    assert parse_time("2025-10-20T12:00:00Z") == T0


def test_cli_as_of_and_versions(story, mongo_url):
    db, best = story["db"], story["best"]
    args = ["--mongo-url", mongo_url, "--database", db.name]
    result = run_cli("experiments", "search", f'{{"run_id": {best}}}', "--as-of",
                     "2025-10-20T12:30:00+00:00", *args)
    assert result.code == 0, result
    assert "as of 2025-10-20T12:30:00+00:00" in result.out and "completed" in result.out
    result = run_cli("experiments", "best", "--challenge", "1", "-n", "50", "--as-of",
                     "2025-10-20T13:30:00Z", *args)
    assert result.code == 0 and f" {best} " not in f" {result.out} ", result
    result = run_cli("experiments", "history", str(best), "--versions", *args)
    assert result.code == 0, result
    lines = [ln for ln in result.out.splitlines() if ln.startswith("2025-")]
    assert [ln.split()[1] for ln in lines] == ["snapshot", "update", "update"]
    assert lines[0].startswith("2025-10-20T12:00:00") and lines[1].startswith("2025-10-20T13:00")
    assert "status: completed -> failed" in lines[1]
    assert "metrics.best_val_loss:" in lines[2] and "-> 9.5" in lines[2]
    result = run_cli("experiments", "history", str(story["rerun"]), "--versions", *args)
    assert [ln.split()[1] for ln in result.out.splitlines() if ln.startswith("2025-")] == [
        "snapshot", "replace"], result
    assert "model.name:" in result.out and "-> rerun" in result.out
    result = run_cli("experiments", "history", str(story["deleted"]), "--versions", *args)
    assert result.code == 0 and "delete" in result.out, result
    result = run_cli("experiments", "compare", str(best), "--as-of", "2025-10-19", *args)
    assert result.code != 0 and "before history starts" in result.err, result
