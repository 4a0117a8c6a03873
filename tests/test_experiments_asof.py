"""`Tracker(db, as_of=T)` and `syncd experiments ... --as-of T`: the experiments as they
were at T, rebuilt from the history of legacy rows, equal the mirror of a copy of
metadata.db taken at T (migrated with the same model into a database of its own).

History is written here with HistoryStore directly, the way the daemon records it:
a snapshot at the first sync, then one version per statement (an INSERT OR REPLACE
as a delete and an insert), each at the statement's own time.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from syncd.client.asof import parse_time
from syncd.client.tracker import AsOfTracker, Tracker
from syncd.errors import SyncdError
from syncd.projection.ids import derive_id
from tests.conftest import run_cli
from tests.history_support import SRC, T0, Recorder, build_story, moment

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def story(tmp_path, db, client, mongo_url):
    yield from build_story(tmp_path, db, client, mongo_url)


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


def test_one_runs_history_equals_the_answer_of_every_runs_rows(story, tmp_path):
    """`history(ref)` as of T rebuilds that run's rows alone: the same answer as the
    Tracker's query on the whole collections, for every run, before and after an
    epoch row moved from one run to another."""
    db = story["db"]
    rec = Recorder(db, tmp_path / "metadata.db")
    rec.seq = 100
    epochs = rec.rows("epoch_history")
    moved = min(k for k, e in epochs.items() if e["run_id"] == story["best"])
    row = derive_id(SRC, "epoch_history", (moved,))
    to = next(r for r in rec.rows("training_runs") if r != story["best"])
    rec.run(moment(4.7), "UPDATE epoch_history SET run_id = ? WHERE id = ?", to, moved)
    for hours in (0.5, 2.5, 4.6, 4.8):
        past = Tracker(db, as_of=moment(hours))
        refs = [str(r["run_id"]) for r in past.search({})]
        assert len(refs) >= 10 and str(to) in refs
        one = {ref: past.history(ref) for ref in refs}
        assert not past.view.collection("epochs").loaded  # one run's rows, not all
        for name in ("epochs", "checkpoints"):  # every run's rows: the view's collections
            assert past.view.collection(name).docs
        whole = {ref: past.history(ref) for ref in refs}
        assert one == whole, hours
        assert sum(len(h["epochs"]) for h in one.values()) > len(refs)
        assert sum(len(h["checkpoints"]) for h in one.values()) > 0
        owners = [ref for ref, h in one.items() if any(e["_id"] == row for e in h["epochs"])]
        assert owners == [str(story["best"] if hours < 4.7 else to)], hours


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
    # "now" is a moment like any other, for every --as-of (restore's default too).
    before = dt.datetime.now(dt.UTC)
    assert before <= parse_time(" NOW ") <= dt.datetime.now(dt.UTC)
    # The story's last change is at T0+4.5 h; the copy at T0+5 h is its state now.
    last = Tracker(story["client"][story["copies"][5]])
    assert Tracker(db, as_of="now").best_experiments(1, 50) == last.best_experiments(1, 50)


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
    assert [ln.split()[1] for ln in lines] == ["snapshot", "update", "update", "update"]
    assert lines[0].startswith("2025-10-20T12:00:00") and lines[1].startswith("2025-10-20T13:00")
    assert "status: completed -> failed" in lines[1]
    assert "metrics.best_val_loss:" in lines[2] and "-> 9.5" in lines[2]
    assert "notes: – -> <!--<script>" in lines[3] and "sekrit" not in result.out
    result = run_cli("experiments", "history", str(best), "--versions", "--json", *args)
    last = json.loads(result.out)["versions"][-1]
    assert {"key": "config.api_key", "before": None, "after": "***"} in last["changes"]
    assert "sekrit" not in result.out
    result = run_cli("experiments", "history", str(story["rerun"]), "--versions", *args)
    assert [ln.split()[1] for ln in result.out.splitlines() if ln.startswith("2025-")] == [
        "snapshot", "replace"], result
    assert "model.name:" in result.out and "-> rerun" in result.out
    result = run_cli("experiments", "history", str(story["deleted"]), "--versions", *args)
    assert result.code == 0 and "delete" in result.out, result
    result = run_cli("experiments", "compare", str(best), "--as-of", "2025-10-19", *args)
    assert result.code != 0 and "before history starts" in result.err, result


def test_the_live_tracker_does_not_load_the_as_of_rebuild():
    """Importing the Tracker (a notebook, `syncd experiments` without --as-of) loads no
    rebuild machinery (SQLAlchemy, the SQLite source): only a moment asked for does."""
    import subprocess
    import sys

    code = ("import sys; from syncd.client.tracker import Tracker; "
            "print(sorted(m for m in ('sqlalchemy', 'syncd.client.rebuild', "
            "'legacy_adapters.sqlite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out
