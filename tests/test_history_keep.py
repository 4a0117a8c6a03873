"""`[history] keep`: what pruning leaves is exact only from its cutoff on, and every
as-of reader (restore, `experiments ... --as-of`, `Tracker(as_of=...)`) refuses a
moment before it, in one line naming the earliest moment it can answer exactly.

The story (tests/history_support.py) is pruned at T0 + 2 h: the best run's two updates
at T0 + 1 h replaced its snapshot and went with it, so an answer as of T0 + 1.5 h
would have shown the run as the updates left it, not as it was then."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import time

import pytest

from syncd.client.tracker import Tracker
from syncd.daemon.history import VersionRecorder
from syncd.errors import ConfigError
from syncd.sinks.history import HistoryOptions, HistoryStore
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import julian_day
from tests.conftest import run_cli
from tests.history_support import SRC, TABLES, build_story, moment

pytestmark = pytest.mark.timeout(300)
CUTOFF = "2025-10-20T14:00:00+00:00"  # moment(2)
REFUSED = (f"before the history kept for source '{SRC}': [history] keep pruned the "
           f"versions older than {CUTOFF}, the earliest moment that can be answered exactly")


@pytest.fixture
def story(tmp_path, db, client, mongo_url):
    yield from build_story(tmp_path, db, client, mongo_url, copies_at=(2.5,))


def rows(path, table):
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        conn.close()


def test_a_moment_before_the_kept_history_is_refused(story, tmp_path, mongo_url):
    db, best = story["db"], story["best"]
    args = ["--mongo-url", mongo_url, "--database", db.name]
    assert HistoryStore(db, SRC).prune(julian_day(moment(2))) >= 2
    assert HistoryReader(db, SRC).kept_from() == julian_day(moment(2))

    with pytest.raises(ConfigError, match=re.escape(REFUSED)):
        Tracker(db, as_of=moment(1.5))
    late = run_cli("experiments", "best", "--challenge", "1", "--as-of",
                   "2025-10-20T13:30:00Z", *args)
    assert late.code == 2 and REFUSED in late.err and late.out == "", late
    assert "as of 2025-10-20T13:30:00+00:00 is before" in late.err
    assert len(late.err.strip().splitlines()) == 1, late.err
    gone = tmp_path / "gone.db"
    late = run_cli("restore", "--to", gone, "--as-of", "2025-10-20T13:30:00Z", "--source",
                   SRC, *args)
    assert late.code == 2 and REFUSED in late.err and not gone.exists(), late
    assert len(late.err.strip().splitlines()) == 1, late.err

    # the moment the message names, and any later one, is answered (exactly)
    first = run_cli("experiments", "best", "--challenge", "1", "-n", "50", "--as-of",
                    CUTOFF, *args)
    assert first.code == 0 and f" {best} " not in f" {first.out} ", first
    name = story["copies"][2.5]
    live, past = Tracker(story["client"][name]), Tracker(db, as_of=moment(2.5))
    assert past.best_experiments(1, 50) == live.best_experiments(1, 50)
    assert past.history(str(best)) == live.history(str(best))
    back = tmp_path / "back.db"
    done = run_cli("restore", "--to", back, "--as-of", "2025-10-20T14:30:00Z", "--source",
                   SRC, *args)
    assert done.code == 0, done
    for table in TABLES:
        assert rows(back, table) == rows(tmp_path / f"{name}.db", table), table


def test_the_daemons_prune_records_its_cutoff_and_never_moves_it_back(db):
    store = HistoryStore(db, SRC)
    store.ensure_indexes()
    reader = HistoryReader(db, SRC)
    assert reader.kept_from() is None
    reader.check_kept(julian_day(moment(0)))  # never pruned: nothing refused
    now = julian_day(dt.datetime.now(dt.UTC))
    VersionRecorder(db, SRC, HistoryOptions(keep_seconds=3600)).prune()
    cutoff = reader.kept_from()
    assert cutoff is not None and abs(cutoff - (now - 1 / 24)) < 5 / 86400
    assert (cutoff - 2440587.5) * 86400 == pytest.approx(round((cutoff - 2440587.5) * 86400),
                                                          abs=1e-3)  # a whole second
    time.sleep(0.01)
    VersionRecorder(db, SRC, HistoryOptions(keep_seconds=7200)).prune()  # a longer keep
    assert reader.kept_from() == cutoff  # what was pruned stays pruned
    with pytest.raises(ConfigError, match="earliest moment that can be answered exactly"):
        reader.check_kept(cutoff - 1 / 86400)
    reader.check_kept(cutoff)


def test_a_prune_after_the_check_is_seen_by_the_reads_it_changed(story, tmp_path):
    """The cutoff is recorded before the versions go, so a read that ends after a prune
    began sees it: an as-of answer whose rows were read after a prune moved the cutoff
    past its moment (a Tracker kept open, a view rebuilt lazily, a long restore) is
    refused like one asked after it, never answered from what the prune left."""
    from legacy_adapters.sqlite_restore import RestoreFile
    from syncd.engine.restore import RestoreOptions, restore
    from syncd.progress import Progress

    db, best = story["db"], story["best"]
    past = Tracker(db, as_of=moment(1.5))  # checked now, its rows read on first use
    assert HistoryStore(db, SRC).prune(julian_day(moment(2))) >= 2
    with pytest.raises(ConfigError, match=re.escape(REFUSED)):
        past.best_experiments(1, 50)
    with pytest.raises(ConfigError, match=re.escape(REFUSED)):
        past.history(str(best))

    class PruneMidway(Progress):  # the daemon's hourly prune, during the restore
        def task(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            HistoryStore(db, SRC).prune(julian_day(moment(3)))
            return super().task(*args, **kwargs)

    late = tmp_path / "late.db"
    options = RestoreOptions(late, SRC, julian_day(moment(2.5)))
    with pytest.raises(ConfigError, match="earliest moment that can be answered exactly"):
        restore(db, options, PruneMidway(enabled=False), RestoreFile)
    assert not late.exists()
    assert not list(tmp_path.glob(".late.db.*"))


def test_versions_as_of_a_pruned_moment_is_refused_in_json_too(story, mongo_url):
    """`experiments history REF --versions --as-of T` answers as the text form does: a
    moment before the kept history is refused (exit 2) with `--json` as without it."""
    db, best = story["db"], story["best"]
    args = ["--mongo-url", mongo_url, "--database", db.name]
    assert HistoryStore(db, SRC).prune(julian_day(moment(2))) >= 2
    for form in ([], ["--json"]):
        late = run_cli("experiments", "history", str(best), "--versions", "--as-of",
                       "2025-10-20T13:30:00Z", *form, *args)
        assert late.code == 2 and REFUSED in late.err and late.out == "", (form, late)
    done = run_cli("experiments", "history", str(best), "--versions", "--as-of", CUTOFF,
                   "--json", *args)
    assert done.code == 0, done
