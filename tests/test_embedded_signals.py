"""No embedded server outlives its syncd, whatever stops syncd and whenever.

Each test runs syncd as a real process with no MongoDB URL (so it starts SecantusDB
as a child under a temp state dir), stops it at some moment of the start-up, and
checks that no child server survives and that the next command works.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

from syncd.embedded import find_executable, free_port
from syncd.sample import make_eeg2025
from tests.conftest import run_cli, syncd_process, wait_port
from tests.daemon_support import wait_for

NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=40)
    return path


def _listening(proc: psutil.Process) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in proc.net_connections("tcp"))
    except psutil.Error:
        return False


def _is_server(kid: psutil.Process) -> bool:
    """Whether a child is the embedded MongoDB (not a short-lived helper some library
    runs while syncd imports, such as `uname -p`: signalling syncd then tested nothing)."""
    try:
        return any("secantusd" in part for part in kid.cmdline())
    except psutil.Error:
        return False


def _server_of(proc: subprocess.Popen[str], listening: bool) -> psutil.Process:
    """The child server of a syncd process, once it exists (and listens, if asked)."""
    parent = psutil.Process(proc.pid)

    def found() -> psutil.Process | None:
        if proc.poll() is not None:
            pytest.fail(f"syncd exited {proc.returncode} before its server was up: "
                        f"{proc.communicate()[1][-2000:]}")
        kids = [kid for kid in parent.children(recursive=True) if _is_server(kid)]
        if not listening:
            return kids[0] if kids else None
        return next((kid for kid in kids if _listening(kid)), None)
    return wait_for(found, 60, "the embedded server to start")


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_leftover(server: psutil.Process) -> None:
    if not _gone(server):
        server.kill()


def _default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


CASES = [
    ("migrate", signal.SIGTERM, False), ("migrate", signal.SIGINT, False),
    ("migrate", signal.SIGHUP, True), ("migrate", signal.SIGTERM, True),
    ("status", signal.SIGTERM, True),
]


@pytest.mark.parametrize(("command", "sig", "listening"), CASES,
                         ids=[f"{c}-{s.name}-{'listening' if x else 'spawned'}"
                              for c, s, x in CASES])
def test_stop_signal_during_start_leaves_no_server(tmp_path, sample, command, sig, listening):
    """The signal comes at a state the test observes, never after a guess of how long the
    work takes: syncd holds at a pause point (syncd.faults) it reaches only with its server
    up, so it cannot finish first however slow or loaded the machine is. "listening"
    signals once syncd is there; "spawned" as soon as the server process exists."""
    state = tmp_path / "state"
    args = ["--sqlite", sample, "--state-dir", state, "--source-id", "h", "--timezone", "UTC"]
    if command == "status":  # status reads existing state only (it creates none)
        assert run_cli("migrate", *args, env=NO_URL).code == 0
    point = "copy.after_insert" if command == "migrate" else "status.connected"
    pause = {"SYNCD_PAUSE_AT": point, "SYNCD_PAUSE_DIR": str(tmp_path)}
    # A SIGHUP a terminal would deliver: run under nohup (as CI may be), the process tree
    # inherits SIGHUP ignored, and syncd, as any Unix program, keeps an ignored SIGHUP
    # ignored; that is not what this case tests, so the child starts with the default.
    proc = syncd_process(command, *(args if command == "migrate" else args[2:4]),
                         env={**NO_URL, **pause}, preexec_fn=_default_sighup)
    server = _server_of(proc, listening=False)
    if listening:
        wait_for(lambda: (tmp_path / f"{point}.paused").exists() or proc.poll() is not None,
                 120, f"syncd at {point}, its server listening")
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        # the server syncd works with now (a new state directory's first start runs a
        # short-lived one without a password to create syncd's user, then this one)
        server = _server_of(proc, listening=True)
        assert _listening(server)
    try:
        proc.send_signal(sig)
        # a deadline, not a measure (a signal lost would show as exit 0 after the pause
        # point's 120 s): what is checked is how it ends
        _, err = proc.communicate(timeout=300)
        assert proc.returncode != 0, err  # interrupted work is not a success
        assert "Traceback" not in err
        assert _gone(server), f"the embedded server (pid {server.pid}) outlived syncd: {err}"
    finally:
        _kill_leftover(server)
    again = run_cli("migrate", *args, env=NO_URL)
    assert again.code == 0, again
    assert run_cli("verify", *args, env=NO_URL).code == 0


def test_kill_9_of_syncd_takes_its_server_down(tmp_path, sample):
    state = tmp_path / "state"
    args = ["--sqlite", sample, "--state-dir", state, "--source-id", "h", "--timezone", "UTC"]
    proc = syncd_process("migrate", *args, env=NO_URL)
    server = _server_of(proc, listening=True)
    try:
        proc.kill()
        proc.communicate(timeout=30)
        wait_for(lambda: _gone(server), 30, "the server to follow its killed syncd")
    finally:
        _kill_leftover(server)
    again = run_cli("migrate", *args, env=NO_URL)
    assert again.code == 0, again


# A program like SecantusDB under load: a SIGTERM is taken by a thread other than the
# main one, where Python only notes it for the main thread, which waits on and never
# acts on it. (Blocking SIGTERM on the main thread makes the kernel's choice certain.)
_DEAF_MAIN_THREAD = """
import signal, sys, threading
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
threading.Thread(target=threading.Event().wait, daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
threading.Event().wait()
"""

# A parent that starts it as syncd starts its servers, then is killed outright.
_KILLED_PARENT = """
import os, signal, subprocess, sys
from syncd.embedded import children
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True, preexec_fn=children.die_with_parent())
child.stdout.readline()
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_server_whose_other_thread_takes_the_death_signal_still_dies():
    parent = subprocess.run([sys.executable, "-c", _KILLED_PARENT, _DEAF_MAIN_THREAD],
                            capture_output=True, text=True, timeout=60)
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    try:
        child = psutil.Process(int(parent.stdout.split()[0]))
    except psutil.NoSuchProcess:
        return  # already gone
    try:
        wait_for(lambda: _gone(child), 30, "the child to follow its killed parent")
    finally:
        _kill_leftover(child)


def _orphan(state, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """A secantusd-py on the state dir's data, as an older syncd killed mid-start left it."""
    exe = find_executable("secantusd-py")
    assert exe is not None
    data = state / "mongo" / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port),
                               "--storage-path", str(data), "--log-level", "WARNING", *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    wait_port(port, server, "secantusd-py")
    return server, port


def test_server_left_without_a_record_is_stopped_and_named(tmp_path, sample):
    state = tmp_path / "state"
    server, _ = _orphan(state)  # no server.json: its syncd died before writing one
    try:
        result = run_cli("migrate", "--sqlite", sample, "--state-dir", state, env=NO_URL)
        assert result.code == 0, result
        assert f"(pid {server.pid}) left running" in result.err
        assert server.wait(30) is not None
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.parametrize("auth", [True, False])
def test_server_left_with_a_dead_owner_is_adopted_and_stopped(tmp_path, sample, auth):
    """One with the password is adopted; one of the syncd before passwords (no "auth"
    in server.json) is stopped and a server that requires the password started."""
    state = tmp_path / "state"
    if auth:  # the data gets syncd's user, as any syncd run before the kill did
        assert run_cli("migrate", "--sqlite", sample, "--state-dir", state,
                       env=NO_URL).code == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    server, port = _orphan(state, *(["--auth"] if auth else []))
    try:
        (state / "mongo" / "server.json").write_text(json.dumps(
            {"pid": server.pid, "port": port, "owner": dead.pid, **({"auth": True} if auth
                                                                   else {})}))
        result = run_cli("migrate", "--sqlite", sample, "--state-dir", state, env=NO_URL)
        assert result.code == 0, result
        assert ("already running" if auth else f"(pid {server.pid}) left running") \
            in result.err
        assert server.wait(30) is not None  # adopted (or stopped at once), then stopped
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_while_run_waits_for_mongodb_is_a_clean_stop(tmp_path, sample, sig):
    url = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"  # nothing listens
    proc = syncd_process("run", "--sqlite", sample, "--state-dir", tmp_path / "state",
                         "--mongo-url", url, "--mongo-timeout", "0.5", env=NO_URL)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the daemon says it waits, then waits
        seen.append(line)
        if "trying again" in line:
            break
    else:
        pytest.fail(f"syncd run exited {proc.wait()} without waiting: {''.join(seen)}")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(seen) + err
    assert "Traceback" not in err


def test_a_library_traceback_of_the_stop_signal_is_not_printed(capsys):
    """SQLAlchemy's pool logs an exception raised while it closes a connection, with its
    traceback, before passing it on: when that exception is syncd's own stop signal,
    the traceback is noise (syncd says "stopped by SIGHUP" itself); its real errors
    and syncd's own records still show."""
    import logging

    from syncd.embedded.interrupts import Interrupted
    from syncd.logs import setup_logging

    setup_logging(0)
    pool = logging.getLogger("sqlalchemy.pool.impl.NullPool")

    def logged(exc: BaseException, logger: logging.Logger = pool) -> str:
        try:
            raise exc
        except BaseException:
            logger.error("Exception closing connection <sqlite3.Connection>", exc_info=True)
        return capsys.readouterr().err

    try:
        assert logged(Interrupted(signal.SIGHUP)) == ""
        assert logged(KeyboardInterrupt()) == ""
        assert "Traceback" in logged(OSError("disk I/O error"))  # a real error shows
        assert "Traceback" in logged(Interrupted(signal.SIGHUP), logging.getLogger("syncd.x"))
    finally:
        logging.getLogger().handlers.clear()
