"""`--log-format json`: every line of a run is one JSON object, and no password shows."""

from __future__ import annotations

import json

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for
from tests.hdf5_support import RedisProcess

PASSWORD = "pw-Js0nLogs"


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=8)
    return path


def test_a_run_logs_json_lines_without_the_password(tmp_path, legacy, target_args, db):
    redis = RedisProcess(tmp_path / "redis", "--requirepass", PASSWORD)
    redis.start()
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
    daemon = Daemon(tmp_path, legacy, target_args, "reconcile_seconds = 1.0\n",
                    env={"SYNCD_REDIS_URL": url}, extra=["--log-format", "json"])
    try:
        daemon.wait_ready(db)
        run = legacy_write(legacy, "INSERT INTO training_runs (challenge, status) "
                           "VALUES (1, 'running')")
        wait_for(lambda: db.experiments.find_one({"run_id": run}), 30, "the run synced")
        redis.kill()  # the events client fails: its errors name the server
        legacy_write(legacy, "UPDATE training_runs SET status = 'failed' WHERE run_id = ?",
                     (run,))
        wait_for(lambda: verified(legacy, target_args), 30, "the update synced")
    finally:
        code, err = daemon.stop()
        redis.kill()
    assert code == 0, err[-3000:]
    lines = err.splitlines()
    assert len(lines) > 3
    records = [json.loads(line) for line in lines]  # every line parses
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    assert PASSWORD not in err
    assert any(r.get("source") == "testhost" for r in records)  # extra= fields come along
    assert any(r["message"].startswith("stopped cleanly") for r in records)


def test_log_format_from_the_settings_file_and_a_bad_one(tmp_path):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text('[log]\nformat = "xml"\n')
    result = run_cli("status", "--config", cfg)
    assert result.code == 2 and "[log] format" in result.err, result
    result = run_cli("status", "--log-format", "xml")
    assert result.code == 2, result
