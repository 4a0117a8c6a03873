"""Embedded servers: real database servers started as child processes on loopback.

When no MongoDB URL is configured, syncd runs SecantusDB's `secantusd-py` (a
MongoDB-wire-compatible server on WiredTiger) with its data under the state
directory. It is only ever launched as a separate program, never imported (it is
GPL-2.0). The server is shared: a second syncd command finds the running one
through `<state>/mongo/server.json` and reuses it; only the process that started
it stops it, cleanly, at exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from syncd.errors import ConfigError, SyncdError

log = logging.getLogger(__name__)

MONGO_EXECUTABLE = "secantusd-py"
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_executable(name: str) -> str | None:
    """`name` beside the running interpreter (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedMongo:
    """A SecantusDB server for one state directory, started on demand and shared."""

    def __init__(self, state_dir: Path) -> None:
        self.home = Path(state_dir) / "mongo"
        self.data = self.home / "data"
        self.info_file = self.home / "server.json"
        self.log_file = Path(state_dir) / "logs" / "mongo.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.adopted_pid: int | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def _running(self) -> tuple[int, int, bool] | None:
        """(port, pid, orphaned) of a live server started for this state dir, if any.

        Orphaned: the syncd that started it is gone (killed), so nobody would stop it.
        """
        try:
            info = json.loads(self.info_file.read_text())
            pid, port = int(info["pid"]), int(info["port"])
            owner = int(info.get("owner", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _pid_alive(pid) and _port_open(port):
            return port, pid, not (owner and _pid_alive(owner))
        return None

    def start(self) -> str:
        """Reuse the running server or start one; return its URL."""
        with _locked(self.home / "server.lock"):
            running = self._running()
            if running is not None:
                self.port, pid, orphaned = running
                if orphaned:  # adopt it: this process stops it at exit
                    self.adopted_pid = pid
                    self._write_info(pid)
                log.info("using the embedded MongoDB already running on 127.0.0.1:%d",
                         self.port)
                return self.url
            exe = find_executable(MONGO_EXECUTABLE)
            if exe is None:
                raise ConfigError(
                    "--mongo-url is not set and the embedded MongoDB is not installed: "
                    "pip install 'syncd[embedded]' (SecantusDB), or set --mongo-url / "
                    "SYNCD_MONGO_URL"
                )
            self.data.mkdir(parents=True, exist_ok=True)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self.port = free_port()
            cmd = [
                exe, "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", str(self.data), "--sync-on-commit", "--log-level", "WARNING",
            ]
            log.info("starting the embedded MongoDB (SecantusDB) on 127.0.0.1:%d", self.port)
            with self.log_file.open("ab") as out:
                # Its own session: a Ctrl-C in the terminal reaches syncd, which then
                # stops the server cleanly, instead of killing it mid-write.
                self.process = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, cwd=self.home,
                )
            self._wait_ready()
            self._write_info(self.process.pid)
            return self.url

    def _write_info(self, pid: int) -> None:
        self.info_file.write_text(json.dumps({"pid": pid, "port": self.port,
                                              "owner": os.getpid()}))

    def _wait_ready(self) -> None:
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_tail()
                raise SyncdError(
                    f"the embedded MongoDB exited at start (code {self.process.returncode}); "
                    f"see {self.log_file}{': ' + tail if tail else ''}"
                )
            if _port_open(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise SyncdError(f"the embedded MongoDB did not start within {START_TIMEOUT:.0f} s; "
                         f"see {self.log_file}")

    def _stop_adopted(self, timeout: float) -> None:
        pid, self.adopted_pid = self.adopted_pid, None
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            if json.loads(self.info_file.read_text()).get("pid") == pid:
                self.info_file.unlink()

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server if this process started (or adopted) it: SIGTERM, then SIGKILL."""
        if self.adopted_pid is not None:
            self._stop_adopted(timeout)
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the embedded MongoDB did not stop within %.0f s; killing it", timeout)
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            info = json.loads(self.info_file.read_text())
            if info.get("pid") == proc.pid:
                self.info_file.unlink()
