"""The AUTOINCREMENT counter a restore writes, when scripts write `sqlite_sequence` itself.

Writes to `sqlite_sequence` fire no trigger and move no schema version: the reset
idiom (`DELETE FROM t; DELETE FROM sqlite_sequence WHERE name = 't'`), a counter set
higher, one set lower than the rows' ids (SQLite then hands out max(rowid) + 1), the
counter row the first insert after a reset creates, and a reset made while `syncd run`
was stopped. On real servers: `syncd restore --as-of` each moment must equal a copy
of metadata.db taken then (SQLite backup API), `sqlite_sequence` and the next id a
script gets included."""

from __future__ import annotations

import shutil
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.followed_story import Story, write

SCHEMA = """
CREATE TABLE seqd (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
CREATE TABLE other (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
CREATE TABLE mark (id INTEGER PRIMARY KEY, v TEXT);
"""


def next_ids(path: Path, scratch: Path) -> list[int | None]:
    """The ids a legacy script's next INSERT into each table gets (on a copy)."""
    shutil.copyfile(path, scratch)
    conn = sqlite3.connect(scratch)
    try:
        return [conn.execute(f"INSERT INTO {t} (v) VALUES ('next')").lastrowid
                for t in ("seqd", "other")]
    finally:
        conn.close()
        scratch.unlink()


def fill(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO seqd (v) VALUES (?)", [("x",)] * 5)
    conn.executemany("INSERT INTO other (v) VALUES (?)", [("o",)] * 3)


class CounterStory(Story):
    """Each copy kept once `syncd run` caught up; the next ids compared too."""

    def keep(self, name: str) -> None:
        self.caught_up()
        super().keep(name)

    def settled_records(self) -> int:
        """`syncd run` started and caught up, so its start-up's own records (its
        reconcile's too) are written: how many schema records seqd has then."""
        self.start()
        self.caught_up()
        return self.db["_syncd_schemas"].count_documents({"table": "seqd"})

    def differences(self, also: Callable[[Path, Path], Any] | None = None) -> list[Any]:
        scratch = self.tmp / "scratch.db"

        def next_id_differs(out: Path, copy: Path) -> Any:
            got, want = next_ids(out, scratch), next_ids(copy, scratch)
            return None if got == want else ("next ids", "restored", got, "copy", want)
        return super().differences(next_id_differs)


def test_scripts_writing_sqlite_sequence_restore_as_of_every_moment(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    story, legacy = CounterStory(tmp_path, target_args, db, fill), tmp_path / "metadata.db"
    story.start()
    assert story.daemon is not None
    try:
        write(legacy, "INSERT INTO seqd (v) VALUES ('x')", "INSERT INTO seqd (v) VALUES ('x')")
        story.keep("before")  # ids 1..7, counter 7
        write(legacy, "DELETE FROM seqd", "DELETE FROM sqlite_sequence WHERE name = 'seqd'")
        story.keep("reset")  # no counter row: the next id is 1
        write(legacy, "INSERT INTO seqd (v) VALUES ('y')")  # creates the counter row
        write(legacy, "INSERT INTO seqd (v) VALUES ('y')")
        story.keep("after-inserts")
        write(legacy, "UPDATE sqlite_sequence SET seq = 100 WHERE name = 'seqd'")
        story.keep("raised")
        write(legacy, "INSERT INTO seqd (v) VALUES ('z')")  # 101
        write(legacy, "DELETE FROM seqd WHERE id = 101")  # deleting the highest keeps 101
        story.keep("deleted-highest")
        write(legacy, "UPDATE sqlite_sequence SET seq = 1 WHERE name = 'seqd'")
        story.keep("lowered")  # lower than the rows' ids: the next id is max(rowid) + 1
        write(legacy, "INSERT INTO seqd (v) VALUES ('w')", "DELETE FROM seqd WHERE id = 1")
        story.keep("after-lowered")
        write(legacy, "DELETE FROM other", "DELETE FROM sqlite_sequence")  # every counter
        story.keep("all-reset")
        story.daemon.stop(signal.SIGKILL)
        # while syncd is stopped: inserts past the old counter, then a reset
        write(legacy, *["INSERT INTO other (v) VALUES ('s')"] * 6)
        write(legacy, "DELETE FROM other", "DELETE FROM sqlite_sequence WHERE name = 'other'")
        write(legacy, "INSERT INTO other (v) VALUES ('t')",  # and a counter row written
              "INSERT INTO sqlite_sequence (name, seq) VALUES ('seqd', 40)")
        story.start()
        story.keep("restarted")
        write(legacy, "INSERT INTO other (v) VALUES ('u')", "INSERT INTO seqd (v) VALUES ('u')")
        story.keep("later")
    finally:
        assert story.daemon is not None
        story.daemon.stop()
    assert story.differences() == []
    # the counter changes were recorded as such: a few schema records, not one per insert
    records = db["_syncd_schemas"].count_documents({"table": "seqd"})
    assert records < 12, records


def test_followed_inserts_write_no_counter_records(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    """The counter an INSERT moves is the inserted row's id: nothing to record (history
    holds it), so a busy AUTOINCREMENT table costs no schema documents."""
    story, legacy = CounterStory(tmp_path, target_args, db, fill), tmp_path / "metadata.db"
    try:
        before = story.settled_records()
        for _ in range(10):
            write(legacy, "INSERT INTO seqd (v) VALUES ('x')")
        write(legacy, "DELETE FROM seqd WHERE id = 3")
        write(legacy, "INSERT INTO seqd (id, v) VALUES (3, 'explicit, lower')")
        write(legacy, "INSERT INTO seqd (id, v) VALUES (50, 'explicit, higher')",
              "INSERT INTO seqd (v) VALUES ('51')")
        story.keep("inserted")
        assert db["_syncd_schemas"].count_documents({"table": "seqd"}) == before
    finally:
        if story.daemon is not None:
            story.daemon.stop()
    assert story.differences() == []


def test_a_burst_longer_than_a_round_writes_no_counter_records(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    """One legacy transaction inserting more rows than a round reads ([daemon] batch,
    2000): the counter read beside the first round already holds the later rounds'
    inserts. That is no script writing sqlite_sequence: nothing to record, nothing to
    say."""
    story, legacy = CounterStory(tmp_path, target_args, db, fill), tmp_path / "metadata.db"
    try:
        before = story.settled_records()
        write(legacy, *[("INSERT INTO seqd (v) VALUES (?)", (str(i),)) for i in range(4500)])
        story.keep("burst")
        assert db["_syncd_schemas"].count_documents({"table": "seqd"}) == before
    finally:
        code, err = story.daemon.stop()
    assert code == 0, err[-3000:]
    assert "counter moved without an insert" not in err
    assert story.differences() == []


def test_inserts_that_insert_nothing_still_move_the_counter_and_restore_it(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    """`INSERT OR IGNORE` of a row a UNIQUE column refuses, and an UPSERT that ends in
    its UPDATE, take a new id from the counter and insert nothing: the change log holds
    no insert, yet sqlite_sequence moved. A restore as of after must have it moved."""
    def fill_unique(conn: sqlite3.Connection) -> None:
        fill(conn)
        conn.execute("DELETE FROM seqd WHERE id > 1")
        conn.execute("CREATE UNIQUE INDEX seqd_v ON seqd (v)")

    story, legacy = CounterStory(tmp_path, target_args, db, fill_unique), tmp_path / "metadata.db"
    story.start()
    assert story.daemon is not None
    try:
        write(legacy, "INSERT OR IGNORE INTO seqd (v) VALUES ('x')")
        story.keep("ignored")
        write(legacy, "INSERT INTO seqd (v) VALUES ('x') ON CONFLICT (v) DO UPDATE SET v = 'y'")
        story.keep("upserted")
    finally:
        code, err = story.daemon.stop()
    assert code == 0, err[-3000:]
    assert story.differences() == []
