"""One careless command must not cost a user data (issue 10, items 6 and 7)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

from tests.conftest import run_cli, syncd_process


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- (6) syncd sample never replaces an existing file by accident ----------------------------


def test_sample_refuses_an_existing_file(tmp_path):
    real = tmp_path / "metadata.db"
    conn = sqlite3.connect(real)
    conn.execute("CREATE TABLE training_runs (run_id INTEGER PRIMARY KEY, status TEXT)")
    conn.execute("INSERT INTO training_runs VALUES (1, 'real')")
    conn.commit()
    conn.close()
    before = _digest(real)
    result = run_cli("sample", real)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(real) in lines[0] and "--force" in lines[0], result
    assert _digest(real) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.db"]  # no leftovers


def test_sample_force_replaces_deliberately(tmp_path):
    path = tmp_path / "metadata.db"
    path.write_bytes(b"not a database")
    result = run_cli("sample", path, "--force")
    assert result.code == 0, result
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM training_runs").fetchone()[0] == 40
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.db"]


def test_sample_library_refuses_too(tmp_path):
    from syncd.sample import make_eeg2025

    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=2)
    before = _digest(path)
    try:
        make_eeg2025(path, runs=3)
    except FileExistsError:
        pass
    else:  # pragma: no cover - the failure being tested
        raise AssertionError("make_eeg2025 replaced an existing file")
    assert _digest(path) == before


# -- (7) one legacy file per database: a second file is refused, naming both ---------------


def _make(path: Path, runs: int, seed: int) -> Path:
    from syncd.sample import make_eeg2025

    make_eeg2025(path, runs=runs, seed=seed)
    return path


def test_a_second_file_under_one_source_id_is_refused(tmp_path, target_args, db):
    (tmp_path / "a").mkdir()
    first = _make(tmp_path / "a" / "metadata.db", runs=5, seed=1)
    other = _make(tmp_path / "other.db", runs=3, seed=2)
    assert run_cli("migrate", "--sqlite", first, *target_args).code == 0
    before = {name: db[name].count_documents({}) for name in ("experiments", "epochs")}

    for command in ("migrate", "verify"):
        result = run_cli(command, "--sqlite", other, *target_args)
        assert result.code == 2, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result
        assert str(first.resolve()) in lines[0] and str(other) in lines[0], lines[0]
        assert "--source-id" in lines[0] and "--adopt-file" in lines[0], lines[0]
    assert {name: db[name].count_documents({}) for name in before} == before

    daemon = syncd_process("run", "--sqlite", other, *target_args, "--state-dir",
                           tmp_path / "state", "--redis-url", "redis://127.0.0.1:9/0")
    _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 2, err
    assert str(first.resolve()) in err and "--adopt-file" in err, err
    assert {name: db[name].count_documents({}) for name in before} == before
    assert run_cli("verify", "--sqlite", first, *target_args).code == 0


def test_a_moved_file_is_adopted_on_request(tmp_path, target_args, db):
    first = _make(tmp_path / "metadata.db", runs=4, seed=3)
    assert run_cli("migrate", "--sqlite", first, *target_args).code == 0
    moved = tmp_path / "moved" / "metadata.db"
    moved.parent.mkdir()
    first.rename(moved)
    assert run_cli("migrate", "--sqlite", moved, *target_args).code == 2
    assert run_cli("migrate", "--sqlite", moved, "--dry-run", *target_args).code == 2
    adopted = run_cli("migrate", "--sqlite", moved, "--adopt-file", *target_args, "--json")
    assert adopted.code == 0, adopted
    assert db["_syncd_state"].find_one({"_id": "source:testhost"})["path"] == \
        str(moved.resolve())
    assert run_cli("verify", "--sqlite", moved, *target_args).code == 0


def test_a_database_without_a_recorded_file_adopts_the_first_one_seen(tmp_path, target_args,
                                                                      db):
    first = _make(tmp_path / "metadata.db", runs=4, seed=4)
    assert run_cli("migrate", "--sqlite", first, *target_args).code == 0
    db["_syncd_state"].delete_one({"_id": "source:testhost"})  # as an earlier syncd left it
    assert run_cli("verify", "--sqlite", first, *target_args).code == 0
    copy = tmp_path / "copy.db"
    shutil.copyfile(first, copy)
    result = run_cli("migrate", "--sqlite", copy, *target_args)
    assert result.code == 0, result
    assert db["_syncd_state"].find_one({"_id": "source:testhost"})["path"] == \
        str(copy.resolve())
    assert run_cli("migrate", "--sqlite", first, *target_args).code == 2
