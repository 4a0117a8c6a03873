"""The state directory holds every synced document: only its user may read it (issue 10, 13)."""

from __future__ import annotations

import os
import stat

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli

NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_embedded_state_is_private_under_a_022_umask(tmp_path, loose_umask):
    sample = tmp_path / "metadata.db"
    make_eeg2025(sample, runs=3)
    state = tmp_path / "state"
    result = run_cli("migrate", "--sqlite", sample, "--state-dir", state, env=NO_URL)
    assert result.code == 0, result
    assert _mode(state) == 0o700
    made = list(state.rglob("*"))
    assert any(p.name == "mongo.log" for p in made)
    for path in made:
        if path.is_dir():
            assert _mode(path) & 0o077 == 0, path
        else:
            assert _mode(path) & 0o077 == 0, path
    assert os.umask(0o022) == 0o022  # syncd gave the umask back
    assert _mode(sample) == 0o644  # files outside the state dir keep the user's umask


def test_an_existing_open_state_dir_is_tightened(tmp_path, loose_umask):
    sample = tmp_path / "metadata.db"
    make_eeg2025(sample, runs=2)
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    result = run_cli("migrate", "--sqlite", sample, "--state-dir", state, env=NO_URL)
    assert result.code == 0, result
    assert _mode(state) == 0o700


def test_help_warns_that_urls_with_passwords_show_in_ps():
    result = run_cli("migrate", "--help")
    assert result.code == 0
    text = " ".join(result.out.split())
    assert "every local user" in text and "`ps`" in text, text
    assert "SYNCD_MONGO_URL" in text and "SYNCD_REDIS_URL" in text, text
