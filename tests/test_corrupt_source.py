"""A corrupt legacy database is an error naming the table, never a complete read.

The file is corrupted deterministically: a table of 10,000 rows (page size 4096)
gets one rowid in the middle leaf page rewritten (same varint length), or one
divider key of its interior root page lowered. Before the fix, `syncd migrate`
exited 0 with about half the rows and `syncd verify` agreed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from legacy_adapters.errors import SourceError
from legacy_adapters.sqlite import SQLiteSource
from syncd.checkpoint.store import StateStore
from syncd.engine.backfill import Backfill
from syncd.engine.migration_files import build_model, load_migrations
from syncd.progress import Progress
from syncd.projection.project import Params
from syncd.sample import EEG2025_SCHEMA
from syncd.sinks.mongo import MongoSink
from tests.conftest import run_cli

ROWS = 10_000
PAGE = 4096


def make_db(path: Path, rows: int = ROWS) -> None:
    """An EEG2025-shaped metadata.db with one run and `rows` epochs."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size = {PAGE}")
    conn.executescript(EEG2025_SCHEMA)
    with conn:
        conn.execute("INSERT INTO config VALUES ('db_version', '1.0', 'schema version')")
        conn.execute("INSERT INTO training_runs (run_id, challenge, model_name, status, config) "
                     "VALUES (1, 1, 'EEGNeX', 'completed', '{}')")
        conn.executemany("INSERT INTO epoch_history VALUES (NULL, 1, ?, ?, ?, 0.002, 1.5, ?)",
                         [(i, 0.1, 0.2, f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}")
                          for i in range(rows)])
    conn.close()


def _varint_end(data: bytearray, at: int) -> int:
    """The offset just past the SQLite varint starting at `at`."""
    for i in range(at, at + 9):
        if not data[i] & 0x80:
            return i + 1
    return at + 9


def corrupt_leaf_rowid(path: Path, table: str, rowid: bytes) -> int:
    """Overwrite the rowid of the middle cell of the table's middle leaf page with the
    varint `rowid` (the same length as the old one); returns the old rowid's page."""
    conn = sqlite3.connect(path)
    pages = [p for (p,) in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
        (table,))]
    conn.close()
    page = pages[len(pages) // 2]
    data = bytearray(path.read_bytes())
    base = (page - 1) * PAGE
    assert data[base] == 0x0D, "not a table leaf page"
    cells = int.from_bytes(data[base + 3:base + 5], "big")
    slot = base + 8 + 2 * (cells // 2)
    cell = base + int.from_bytes(data[slot:slot + 2], "big")
    start = _varint_end(data, cell)  # past the payload size: the rowid varint
    end = _varint_end(data, start)
    assert end - start == len(rowid)
    data[start:end] = rowid
    path.write_bytes(bytes(data))
    return page


def lower_root_divider(path: Path, table: str, by: int) -> None:
    """Lower one divider key of the table's interior root page by `by` (rows of the
    leaf before it become unreachable by a seek, though still in key order)."""
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                           (table,)).fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    base = (root - 1) * PAGE + (100 if root == 1 else 0)
    assert data[base] == 0x05, "the root is not an interior table page"
    cells = int.from_bytes(data[base + 3:base + 5], "big")
    slot = base + 12 + 2 * (cells // 2)
    cell = (root - 1) * PAGE + int.from_bytes(data[slot:slot + 2], "big")
    start = cell + 4  # past the left child's page number
    assert data[start] & 0x80 and not data[start + 1] & 0x80  # a two-byte varint
    key = ((data[start] & 0x7F) << 7 | data[start + 1]) - by
    data[start:start + 2] = bytes([0x80 | key >> 7, key & 0x7F])
    path.write_bytes(bytes(data))


HUGE = b"\xff\x7f"  # rowid 16383: past every real one, so a bounded scan stops there


def read_all(source: SQLiteSource, table: str, chunk: int) -> int:
    info = source.schema().tables[table]
    upto, position, rows = source.high_water(info), None, 0
    while True:
        got = source.scan(info, position, chunk, upto)
        if not got.rows:
            return rows
        rows += len(got.rows)
        position = got.last


@pytest.mark.parametrize("chunk", [1, 7, 1000, 5000])
def test_scan_of_a_corrupt_page_raises_naming_the_table(tmp_path, chunk):
    path = tmp_path / "metadata.db"
    make_db(path)
    corrupt_leaf_rowid(path, "epoch_history", HUGE)
    source = SQLiteSource(path)
    with pytest.raises(SourceError, match=r"table epoch_history: the legacy database is "
                                            r"corrupt .*out of key order"):
        read_all(source, "epoch_history", chunk)
    source.close()


def test_a_rowid_that_went_small_is_out_of_order_too(tmp_path):
    path = tmp_path / "metadata.db"
    make_db(path)
    corrupt_leaf_rowid(path, "epoch_history", b"\x80\x01")  # rowid 1, mid-table
    source = SQLiteSource(path)
    with pytest.raises(SourceError, match="epoch_history"):
        read_all(source, "epoch_history", 1000)
    source.close()


def test_a_read_shorter_than_the_table_is_an_error(tmp_path):
    """Rows a corrupt divider hides from a seek come back in order: the count check
    (rows read vs count(*)) catches the short read; quick_check confirms it."""
    path = tmp_path / "metadata.db"
    make_db(path)
    lower_root_divider(path, "epoch_history", 40)
    source = SQLiteSource(path)
    info = source.schema().tables["epoch_history"]
    rows = read_all(source, "epoch_history", 7)
    assert rows < ROWS  # the seek skipped rows, all in order
    with pytest.raises(SourceError, match=rf"epoch_history.*read {rows} of its {ROWS} rows"):
        source.confirm_read(info, rows, source.high_water(info))
    source.close()


def _migrate(path: Path, target_args: list[str]):
    return run_cli("migrate", "--sqlite", path, *target_args, "--state-dir", path.parent / "s")


def _verify(path: Path, target_args: list[str]):
    return run_cli("verify", "--sqlite", path, *target_args, "--state-dir", path.parent / "s")


def _fails_naming_the_table(result) -> None:
    assert result.code == 1, result
    lines = [line for line in result.err.splitlines() if line.startswith("syncd: error:")]
    assert len(lines) == 1 and "Traceback" not in result.err, result
    assert "table epoch_history: the legacy database is corrupt" in lines[0], result
    assert "integrity_check" in lines[0] and ".recover" in lines[0], result


def test_migrate_and_verify_fail_on_a_corrupt_copy_and_keep_what_was_synced(
        tmp_path, db, target_args):
    path = tmp_path / "metadata.db"
    make_db(path)
    assert _migrate(path, target_args).code == 0
    assert db.epochs.count_documents({}) == ROWS
    corrupt_leaf_rowid(path, "epoch_history", HUGE)
    _fails_naming_the_table(_migrate(path, target_args))  # a reconcile: nothing deleted
    assert db.epochs.count_documents({}) == ROWS
    _fails_naming_the_table(_verify(path, target_args))


def test_the_read_checks_alone_fail_migrate_and_verify_on_a_large_file(
        tmp_path, db, target_args, monkeypatch):
    """Above the size limit no quick_check runs first: the key-order check still fails."""
    try:
        from legacy_adapters import sqlite_integrity
        monkeypatch.setattr(sqlite_integrity, "QUICK_CHECK_MAX_BYTES", 0)
    except ImportError:  # b72fb58 had no checks at all: it still fails below, as it should
        pass
    path = tmp_path / "metadata.db"
    make_db(path)
    assert _migrate(path, target_args).code == 0
    corrupt_leaf_rowid(path, "epoch_history", HUGE)
    _fails_naming_the_table(_migrate(path, target_args))
    assert db.epochs.count_documents({}) == ROWS
    _fails_naming_the_table(_verify(path, target_args))


def test_a_first_migrate_of_a_corrupt_file_fails_and_keeps_what_it_wrote(
        tmp_path, db, target_args):
    path = tmp_path / "metadata.db"
    make_db(path)
    corrupt_leaf_rowid(path, "epoch_history", HUGE)
    _fails_naming_the_table(_migrate(path, target_args))
    assert db.config.count_documents({}) == 1  # copied before epoch_history: kept
    again = _verify(path, target_args)
    assert again.code == 1


def test_the_daemons_reconcile_never_deletes_on_a_corrupt_read(tmp_path, db, target_args):
    path = tmp_path / "metadata.db"
    make_db(path)
    assert _migrate(path, target_args).code == 0
    corrupt_leaf_rowid(path, "epoch_history", HUGE)
    source = SQLiteSource(path)
    migrations = load_migrations()
    model = build_model(migrations, migrations[-1].version)
    pairs = {i.name: (i, m) for i, m in model.resolve(source.schema())}
    info, mapping = pairs["epoch_history"]
    engine = Backfill(source, db, MongoSink(db), StateStore(db), Params("testhost", "UTC"),
                    1000, Progress(enabled=False))
    with pytest.raises(SourceError, match="epoch_history"):
        engine.reconcile_table(info, mapping, model)  # as `syncd run` calls it
    assert db.epochs.count_documents({}) == ROWS
    source.close()
