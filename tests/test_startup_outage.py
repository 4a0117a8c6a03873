"""A MongoDB outage while `syncd run` starts is waited out, as one while it follows.

An external SecantusDB (tests/daemon_support.py MongoProcess) is stopped at a chosen
moment of the start-up: inside the start-up migration (held at a pause point between
two chunks of a table, while the legacy scripts write to a table already copied and
to the one being copied), or before the first connection. It is started again on the
same port and data; the daemon then finishes its start-up, follows, and `syncd
verify` is exact, with no version of history recorded twice. A stop requested while
it waits is a clean exit (0). A server that refuses syncd's credentials is no outage:
exit 2 at once, one line. Nothing here measures time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pymongo
import pytest

from syncd.embedded import EmbeddedMongo
from syncd.sample import make_eeg2025
from tests.conftest import run_cli, syncd_process
from tests.daemon_support import LoggedRun, MongoProcess, legacy_write, verified, wait_for
from tests.test_systemd import Notifications, lines, notify_socket

PAUSE = "copy.after_insert"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.db"
    make_eeg2025(path, rows=3000)  # epoch_history: about 2,500 rows, 13 chunks of 200
    return path


def _status(message: str) -> str:
    return next((line for line in lines(message) if line.startswith("STATUS=")), "")


def _readyz(state: Path) -> tuple[int, dict]:
    url = json.loads((state / "daemon.json").read_text())["http"]
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _paused_mid_migration(tmp_path: Path, legacy: Path, args: list[str], path: str,
                          capture: str = "triggers") -> LoggedRun:
    """A `syncd run` held inside its start-up migration: cache_files and config are
    copied, epoch_history is two chunks in; the legacy scripts write meanwhile (in
    `scan` mode only inserts, which it follows; updates wait for its reconcile)."""
    env = {"NOTIFY_SOCKET": path, "SYNCD_PAUSE_AT": f"{PAUSE}:4",
           "SYNCD_PAUSE_DIR": str(tmp_path)}
    run = LoggedRun(tmp_path, legacy, [*args, "--chunk-size", "200", "--capture", capture],
                    env)
    wait_for(lambda: (tmp_path / f"{PAUSE}.paused").exists() or run.proc.poll() is not None,
             120, "the start-up migration at its pause point")
    assert run.proc.poll() is None, run.text()[-3000:]
    assert "migrating to version" in run.text()
    if capture == "triggers":  # copied already
        legacy_write(legacy, "UPDATE config SET value = 'changed at start-up' "
                     "WHERE key = 'cache_dir'")
        legacy_write(legacy, "DELETE FROM cache_files WHERE rowid = "
                     "(SELECT MIN(rowid) FROM cache_files)")
    legacy_write(legacy, "INSERT INTO cache_files (challenge, release, file_path) "
                 "VALUES (1, 'R9', '/data/R9.h5')")  # copied already
    legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                 "VALUES (1, 9001, 0.5)")  # being copied, past its high-water mark
    return run


def _no_version_twice(client: pymongo.MongoClient, database: str) -> None:
    """Each row's baseline snapshot once, each logged change once."""
    history = client[database]["_syncd_history"]
    snapshots = list(history.aggregate([
        {"$match": {"op": "snapshot"}},
        {"$group": {"_id": {"table": "$table", "doc": "$doc"}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}}]))
    assert snapshots == []
    changes = list(history.aggregate([
        {"$match": {"op": {"$ne": "snapshot"}}},
        {"$group": {"_id": {"table": "$table", "doc": "$doc", "seq": "$seq", "n": "$n",
                            "op": "$op"}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}}]))
    assert changes == []
    assert history.count_documents({"op": "snapshot", "table": "epoch_history"}) >= 2500


@pytest.mark.parametrize("capture", ["triggers", "scan"])
def test_mongodb_stopped_during_the_start_up_migration_is_waited_out(
        tmp_path, legacy, own_mongo, monkeypatch, capture):
    mongo, client = own_mongo
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    args = mongo.target_args("boot")
    down = f"MongoDB at 127.0.0.1:{mongo.port} unreachable"
    with notify_socket(tmp_path) as (sock, path):
        run = _paused_mid_migration(tmp_path, legacy, args, path, capture)
        try:
            seen = Notifications(sock, run.proc)
            mongo.stop()
            (tmp_path / f"{PAUSE}.resume").touch()
            said = _status(seen.wait_for(
                lambda m: _status(m).startswith("STATUS=starting: waiting for MongoDB: "),
                "STATUS saying the start-up waits for MongoDB"))
            assert said.startswith(f"STATUS=starting: waiting for MongoDB: {down}"), said
            seen.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m
                          and _status(m) == "STATUS=starting: waiting for MongoDB",
                          "a start-up heartbeat saying it waits", 60)
            code, body = wait_for(lambda: (r := _readyz(run.state))[0] == 503
                                  and down in r[1].get("reason", "") and r, 60,
                                  "/readyz with the outage's reason")
            assert body["reason"].startswith(down) and "Topology" not in body["reason"]
            status = run_cli("status", "--sqlite", legacy, "--state-dir", run.state, *args)
            assert status.code == 1 and "OUTAGE: MongoDB unavailable" in status.out, status
            assert run.proc.poll() is None  # it waits; it does not exit
            mongo.start()  # the same port and data
            seen.wait_for(lambda m: "READY=1" in lines(m), "READY=1 once MongoDB is back")
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                         "VALUES (1, 9002, 0.25)")
            wait_for(lambda: verified(legacy, args), 90, "source == target")
        finally:
            code = run.end()
        text = run.text()
    assert code == 0, text[-3000:]
    assert text.count(f"{down}: connection refused; retrying with backoff") == 1, text[-3000:]
    assert "MongoDB is back after" in text and "resuming the unfinished migration" in text
    assert "Traceback" not in text
    db = client.boot
    if capture == "triggers":
        assert db.config.find_one({"key": "cache_dir"})["value"] == "changed at start-up"
    assert db.cache_files.count_documents({"release": "R9"}) == 1
    assert db.epochs.count_documents({"epoch": {"$in": [9001, 9002]}}) == 2
    _no_version_twice(client, "boot")


def test_a_stop_while_the_start_up_waits_for_mongodb_is_clean_and_resumed_after(
        tmp_path, legacy, own_mongo, monkeypatch):
    """SIGTERM while waiting: exit 0. The next `syncd run` resumes the migration and
    applies what the legacy scripts wrote to the tables copied before the stop."""
    mongo, client = own_mongo
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    args = mongo.target_args("boot")
    with notify_socket(tmp_path) as (sock, path):
        run = _paused_mid_migration(tmp_path, legacy, args, path)
        try:
            seen = Notifications(sock, run.proc)
            mongo.stop()
            (tmp_path / f"{PAUSE}.resume").touch()
            seen.wait_for(lambda m: "waiting for MongoDB" in _status(m), "the wait")
            run.proc.send_signal(signal.SIGTERM)
            code = run.proc.wait(120)
        finally:
            run.end()
    text = run.text()
    assert code == 0, text[-3000:]
    assert "stopped while starting, waiting for MongoDB" in text and "Traceback" not in text
    mongo.start()
    again = LoggedRun(tmp_path, legacy, args)
    try:
        again.says("following ")
        assert "resuming the unfinished migration" in again.text()
        wait_for(lambda: verified(legacy, args), 90, "source == target")
    finally:
        assert again.end() == 0, again.text()[-3000:]
    assert client.boot.config.find_one({"key": "cache_dir"})["value"] == "changed at start-up"
    _no_version_twice(client, "boot")


def test_mongodb_down_at_the_first_connection_is_waited_for(tmp_path, legacy, monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    mongo = MongoProcess(tmp_path / "mongo")  # not started yet: its port refuses
    args = mongo.target_args("first")
    with notify_socket(tmp_path) as (sock, path):
        run = LoggedRun(tmp_path, legacy, args, {"NOTIFY_SOCKET": path})
        try:
            seen = Notifications(sock, run.proc)
            said = _status(seen.wait_for(lambda m: "waiting for MongoDB" in _status(m),
                                         "STATUS saying syncd run waits for MongoDB"))
            assert said == (f"STATUS=starting: waiting for MongoDB: MongoDB at "
                            f"127.0.0.1:{mongo.port} unreachable: connection refused"), said
            run.says("not reachable within 1 s")
            mongo.start()
            seen.wait_for(lambda m: "READY=1" in lines(m), "READY=1 once MongoDB is up")
            assert verified(legacy, args)
        finally:
            code = run.end()
            mongo.stop()
    assert code == 0, run.text()[-3000:]


def _refused(tmp_path: Path, legacy: Path, url: str) -> tuple[int, str]:
    proc = syncd_process("run", "--sqlite", legacy, "--state-dir", tmp_path / "state",
                         "--mongo-url", url, "--database", "refused", "--source-id", "h",
                         "--mongo-timeout", "2")
    try:
        _out, err = proc.communicate(timeout=120)  # a guard against a loop
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"syncd run kept trying: {proc.communicate()[1][-2000:]}")
    return proc.returncode, err


def test_credentials_the_server_refuses_fail_at_once_with_exit_2(tmp_path, legacy):
    """A wrong password (refused at the first connection) and none at all (the ping
    passes, the first read is refused): settings to fix, never an outage to wait out."""
    server = EmbeddedMongo(tmp_path / "server")
    assert "syncd:" in server.start()  # a server with --auth and syncd's user
    host = f"127.0.0.1:{server.port}/?directConnection=true"
    try:
        for url in (f"mongodb://syncd:not-the-password@{host}&authSource=admin",
                    f"mongodb://{host}"):
            code, err = _refused(tmp_path, legacy, url)
            said = [line for line in err.splitlines() if line.startswith("syncd: error:")]
            assert code == 2, err[-3000:]
            assert len(said) == 1 and "the server refused syncd" in said[0], err[-3000:]
            assert "not-the-password" not in err and "trying again" not in err
    finally:
        server.stop()
