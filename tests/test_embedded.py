"""No MongoDB URL: syncd runs the embedded SecantusDB under the state dir, and stops it."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import NEWEST, run_cli, syncd_process

NO_URL = {"SYNCD_MONGO_URL": ""}


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=12)
    return path


def test_embedded_server_keeps_data_across_commands(tmp_path, sample):
    state = tmp_path / "state"
    args = ["--sqlite", sample, "--state-dir", state, "--source-id", "host-a"]
    migrated = run_cli("migrate", *args, env=NO_URL)
    assert migrated.code == 0, migrated
    assert "embedded" in migrated.out and str(state / "mongo" / "data") in migrated.out
    assert (state / "mongo" / "data").is_dir()
    assert not (state / "mongo" / "server.json").exists()  # stopped at exit
    port = int(migrated.out.split("127.0.0.1:")[1].split("/")[0])
    assert not _port_open(port)

    status = run_cli("status", "--json", "--state-dir", state, env=NO_URL)
    assert status.code == 0, status  # migrated; no daemon ever ran (none is stale)
    data = json.loads(status.out)
    assert data["version"] == NEWEST
    counts = {c["collection"]: c["documents"] for c in data["collections"]}
    assert counts["experiments"] == 12 and counts["config"] == 4
    assert run_cli("verify", *args, env=NO_URL).code == 0
    assert (state / "logs" / "mongo.log").exists()


def test_missing_embedded_extra_is_one_clear_line(tmp_path, sample, monkeypatch):
    import syncd.embedded.server

    monkeypatch.setattr(syncd.embedded.server, "find_executable", lambda name: None)
    result = run_cli("migrate", "--sqlite", sample, "--state-dir", tmp_path, env=NO_URL)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'syncd[embedded]'" in lines[0] and "--mongo-url" in lines[0]


def test_server_of_a_killed_syncd_stops_and_the_migration_resumes(tmp_path, sample):
    state = tmp_path / "state"
    proc = syncd_process("migrate", "--sqlite", sample, "--state-dir", state,
                         env={**NO_URL, "SYNCD_CRASH_AT": "copy.after_insert:2"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    info = json.loads((state / "mongo" / "server.json").read_text())
    deadline = time.monotonic() + 30
    while _port_open(info["port"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _port_open(info["port"])  # the server did not outlive the killed syncd
    resumed = run_cli("migrate", "--sqlite", sample, "--state-dir", state, "--json",
                      env=NO_URL)
    assert resumed.code == 0, resumed
    assert json.loads(resumed.out)["resumed"] is True
    assert run_cli("verify", "--sqlite", sample, "--state-dir", state, env=NO_URL).code == 0
