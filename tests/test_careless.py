"""One careless command must not cost a user data (issue 10, items 6 and 7)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from tests.conftest import run_cli


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
