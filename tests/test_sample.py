"""The sample the quick start migrates is exactly what the project's script makes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import ROOT, run_cli


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_committed_sample_matches_the_generator(tmp_path):
    made = tmp_path / "sample.db"
    result = run_cli("sample", made)
    assert result.code == 0, result
    assert "training_runs 40" in result.out
    assert _dump(made) == _dump(ROOT / "examples" / "eeg2025-sample.db")


def test_sample_has_the_legacy_schema_and_journal_mode(tmp_path):
    made = tmp_path / "sample.db"
    run_cli("sample", made, "--rows", "3000")
    conn = sqlite3.connect(made)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"subjects", "training_runs", "epoch_history", "model_checkpoints", "cache_files",
            "config"} <= tables
    views = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert views == {"best_models", "training_summary"}
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    total = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables
                if t != "sqlite_sequence")
    assert 2500 <= total <= 3500


def test_sample_into_a_missing_folder_says_so(tmp_path):
    """A folder that does not exist is one line (exit 2), not SQLite's bare "unable to
    open database file"."""
    result = run_cli("sample", tmp_path / "nowhere" / "m.db")
    assert result.code == 2 and "no such folder" in result.err, result
    assert "OperationalError" not in result.err and not (tmp_path / "nowhere").exists()
