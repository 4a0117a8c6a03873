"""A full (or unwritable) state directory: the daemon keeps syncing and says so; the
embedded MongoDB running out of space says "no space left on device" and where."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, wait_for

NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}


@contextlib.contextmanager
def tiny_fs(path: Path, size: str, fill: bool) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (full to the last byte if `fill`); skip where not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        if fill:
            with (path / "filler").open("wb", buffering=0) as out, \
                    contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 4096)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=10)
    return path


def _run_keeps_syncing(tmp_path: Path, legacy: Path, target_args: list[str], db) -> None:
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        run = legacy_write(legacy, "INSERT INTO training_runs (challenge, status) "
                           "VALUES (2, 'running')")
        wait_for(lambda: db.experiments.find_one({"run_id": run}), 30, "the new run synced")
        status = daemon.status()["daemon"]
        assert "cannot write the local status" in status["local_status_error"]
        text = run_cli("status", *daemon.args)
        assert "WARNING: cannot write the local status" in text.out, text
        assert daemon.proc.poll() is None
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert err.count("cannot write the local status") == 1, err[-3000:]  # warned once


def test_run_with_a_full_state_dir_keeps_syncing(tmp_path, legacy, target_args, db):
    with tiny_fs(tmp_path / "state", "64k", fill=True):
        _run_keeps_syncing(tmp_path, legacy, target_args, db)


def test_run_with_an_unwritable_status_file_keeps_syncing(tmp_path, legacy, target_args, db):
    (tmp_path / "state" / "daemon.json").mkdir(parents=True)  # the write fails: no file there
    _run_keeps_syncing(tmp_path, legacy, target_args, db)


def _one_line_no_space(result, where: Path, code: int) -> None:
    assert result.code == code, result
    line = result.err.strip().splitlines()[-1]
    assert "no space left on device in " + str(where) in line, result
    assert "internal server error, full error" not in result.err


def test_embedded_mongodb_that_cannot_start_for_space_says_so(tmp_path, legacy):
    with tiny_fs(tmp_path / "state", "64k", fill=True) as state:
        result = run_cli("migrate", "--sqlite", legacy, "--state-dir", state, env=NO_URL)
        _one_line_no_space(result, state / "mongo", 2)  # --state-dir cannot hold it
        assert not (state / "mongo" / "server.json").exists()


def test_embedded_mongodb_that_fills_its_disk_says_so(tmp_path):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=1500)
    with tiny_fs(tmp_path / "state", "2m", fill=False) as state:
        result = run_cli("migrate", "--sqlite", legacy, "--state-dir", state, env=NO_URL)
        _one_line_no_space(result, state / "mongo", 1)
        info = state / "mongo" / "server.json"
        assert not info.exists() or not json.loads(info.read_text() or "{}")
