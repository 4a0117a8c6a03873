"""The daemon's wake-up: only file events that can end a commit are subscribed to."""

from __future__ import annotations

import sqlite3
import threading
import time

from syncd.daemon.wake import DELETE_MODE_EVENTS, WRITE_EVENTS, Waker, commit_events


def _db(path, mode=None):
    conn = sqlite3.connect(path)
    if mode:
        conn.execute(f"PRAGMA journal_mode={mode}")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return path


def test_commit_events_follow_the_journal_mode(tmp_path):
    assert commit_events(_db(tmp_path / "delete.db")) == DELETE_MODE_EVENTS
    assert commit_events(_db(tmp_path / "wal.db", "wal")) == WRITE_EVENTS
    assert commit_events(_db(tmp_path / "persist.db", "persist")) == WRITE_EVENTS
    assert commit_events(tmp_path / "missing.db") == WRITE_EVENTS


def test_a_legacy_commit_wakes_and_a_read_does_not(tmp_path):
    db = _db(tmp_path / "metadata.db")
    event = threading.Event()
    waker = Waker([db], event)
    assert waker.start()
    try:
        time.sleep(0.2)
        conn = sqlite3.connect(db)  # a reader opening and closing the file
        conn.execute("SELECT * FROM t").fetchall()
        conn.close()
        assert not event.wait(0.5)
        conn = sqlite3.connect(db)  # the legacy pattern: connect, INSERT, commit, close
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        conn.close()
        assert event.wait(5)
    finally:
        waker.stop()


def test_a_commit_is_applied_at_once_unless_writers_are_busy():
    from syncd.daemon.pace import WINDOW_SECONDS, Pacer

    now = [100.0]
    pacer = Pacer(0.05, 100.0, clock=lambda: now[0])
    for _ in range(3):  # a training script's pace: 50 commits a second
        pacer.note()
        assert pacer.delay() == 0.0
        pacer.stepped(now[0])
        now[0] += 0.02
    for _ in range(int(WINDOW_SECONDS * 400)):  # writers at full speed: 400 a second
        pacer.note()
        now[0] += 0.0025
    pacer.stepped(now[0])
    now[0] += 0.01
    assert abs(pacer.delay() - 0.04) < 1e-9  # steps start min_step_seconds apart
    now[0] += 1.0  # quiet again
    pacer.note()
    assert pacer.delay() == 0.0
    assert Pacer(0.05, 0.0, clock=lambda: now[0]).delay() == 0.0  # never stepped yet


def test_an_hdf5_write_wakes_the_cache_pass_and_a_read_does_not(tmp_path):
    """A training script opening a cache to read it (h5py, the legacy Dataset, the local
    tier's fill) changes nothing: it woke an HDF5 pass per open (at 50 opens a second,
    a third of a core of the daemon's). Writing, creating, deleting or moving one does."""
    from tests.hdf5_support import write_h5

    db, cached = _db(tmp_path / "metadata.db"), tmp_path / "cached"
    cached.mkdir()
    write_h5(cached / "a.h5", n=4)
    db_event, h5_event = threading.Event(), threading.Event()
    waker = Waker([db], db_event, extra_dirs=[cached], extra_event=h5_event,
                  wants=lambda p: p.endswith(".h5"))
    assert waker.start()
    try:
        time.sleep(0.2)
        for _ in range(3):
            with open(cached / "a.h5", "rb") as f:  # what h5py does to read: open, read, close
                f.read(64)
        assert not h5_event.wait(0.5)
        write_h5(cached / "b.h5", n=4)
        assert h5_event.wait(5)
        h5_event.clear()
        (cached / "b.h5").rename(cached / "c.h5")
        assert h5_event.wait(5)
        assert not db_event.is_set()
    finally:
        waker.stop()
