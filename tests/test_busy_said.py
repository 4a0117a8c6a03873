"""A legacy writer holding metadata.db locked is said at once, not after the retries.

A read that meets a writer's lock waits it out (8 tries of the 5 s busy timeout,
about 45 s, then SourceBusy and a backoff). What `syncd run` says meanwhile must
come with the first try: the log's warning, and systemd's STATUS "waiting for the
legacy database". Each test holds the lock in a real SQLite connection until that
STATUS arrives, and checks it is the early word, not the one after the retries ran
out ("through 8 tries"): nothing here measures time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncd.sample import make_eeg2025
from tests.daemon_support import LoggedRun
from tests.test_systemd import Notifications, lines, notify_socket

WAITING = "waiting for the legacy database"
EARLY = "holds the database locked; waiting for it"  # the first try's words
LATE = "through 8 tries"  # the words once the retries ran out


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=3)
    return path


def _status(message: str) -> str:
    return next((line for line in lines(message) if line.startswith("STATUS=")), "")


def _follow(tmp_path: Path, legacy: Path, target_args: list[str], path: str,
            env: dict[str, str] | None = None) -> LoggedRun:
    return LoggedRun(tmp_path, legacy, target_args, {"NOTIFY_SOCKET": path, **(env or {})})


def _commit_then_ready(writer: sqlite3.Connection, seen: Notifications) -> None:
    """The writer, still in its transaction (what was said came while it held the lock),
    commits; the run then gets ready."""
    assert writer.in_transaction
    writer.execute("COMMIT")
    seen.wait_for(lambda m: "READY=1" in lines(m), "READY=1 once the lock is gone")


def test_a_lock_held_when_syncd_run_starts_is_said_with_the_first_try(
        tmp_path, legacy, target_args, monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    writer = sqlite3.connect(legacy, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # a legacy script's long transaction
    with notify_socket(tmp_path) as (sock, path):
        run = _follow(tmp_path, legacy, target_args, path)
        try:
            seen = Notifications(sock, run.proc)
            said = _status(seen.wait_for(lambda m: WAITING in _status(m), WAITING, 150))
            assert writer.in_transaction  # still held: the word came while it waits
            assert EARLY in said and LATE not in said, said
            assert EARLY in run.text()  # and the log said it
            _commit_then_ready(writer, seen)
        finally:
            writer.close()
            code = run.end()
    assert code == 0, run.text()[-3000:]


def test_a_lock_taken_during_the_start_up_sync_is_said_with_the_first_try(
        tmp_path, legacy, target_args, monkeypatch):
    """The lock comes while the start-up backfill is under way (held at a pause point
    between two tables): the daemon's outage, and its heartbeat's STATUS, say it."""
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    pause = {"SYNCD_PAUSE_AT": "copy.after_insert", "SYNCD_PAUSE_DIR": str(tmp_path)}
    writer = sqlite3.connect(legacy, isolation_level=None)
    with notify_socket(tmp_path) as (sock, path):
        run = _follow(tmp_path, legacy, target_args, path, pause)
        try:
            seen = Notifications(sock, run.proc)
            seen.wait_for(lambda m: (tmp_path / "copy.after_insert.paused").exists(),
                          "the start-up sync at its pause point")
            writer.execute("BEGIN EXCLUSIVE")
            (tmp_path / "copy.after_insert.resume").touch()
            said = _status(seen.wait_for(lambda m: WAITING in _status(m), WAITING, 150))
            assert writer.in_transaction
            assert LATE not in said, said
            # the heartbeat's word while not ready says it too (not "bringing ... up to date")
            seen.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m
                          and _status(m) == f"STATUS=starting: {WAITING}",
                          "a start-up heartbeat saying it waits", 60)
            _commit_then_ready(writer, seen)
        finally:
            writer.close()
            code = run.end()
    assert code == 0, run.text()[-3000:]
