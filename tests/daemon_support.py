"""Shared pieces of the `syncd run` tests: a daemon process, legacy writes, waiting."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from syncd.embedded import find_executable, free_port
from tests.conftest import run_cli, syncd_process, wait_port

FAST = """
[daemon]
poll_seconds = 0.1
heartbeat_seconds = 0.3
prune_seconds = 0.3
backoff_max_seconds = 1.0
"""


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (then return it) or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the thing we wait for may not exist yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def legacy_write(path: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    """One write exactly as the legacy scripts do it: connect, execute, commit, close."""
    conn = sqlite3.connect(path)
    try:
        cur = conn.execute(sql, params)
        conn.commit()
        return cur.lastrowid or cur.rowcount
    finally:
        conn.close()


class Daemon:
    """A `syncd run` process for a test, stopped (SIGTERM) at the end."""

    def __init__(self, tmp: Path, legacy: Path, target_args: list[str], config: str = "",
                 env: dict[str, str] | None = None, extra: list[str] | None = None) -> None:
        self.cfg = tmp / "syncd.toml"
        self.cfg.write_text(FAST + config)
        self.state = tmp / "state"
        self.args = ["--sqlite", str(legacy), "--config", str(self.cfg), "--state-dir",
                     str(self.state), *target_args]
        self.proc = syncd_process("run", *self.args, *(extra or []), env=env)

    def wait_ready(self, db: Any, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                pytest.fail(f"syncd run exited {self.proc.returncode}: {err[-3000:]}")
            doc = db["_syncd_state"].find_one({"kind": "daemon", "pid": self.proc.pid})
            return bool(doc and doc.get("ready") and doc.get("pid") == self.proc.pid
                        and doc.get("running"))
        wait_for(ready, timeout, "syncd run to be ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err

    def status(self) -> dict[str, Any]:
        result = run_cli("status", "--json", *self.args)
        return json.loads(result.out)


def verified(legacy: Path, target_args: list[str], extra: tuple[str, ...] = ()) -> bool:
    return run_cli("verify", "--sqlite", legacy, *target_args, *extra).code == 0


class MongoProcess:
    """A SecantusDB of a test's own: stopped and started again on the same port and data."""

    def __init__(self, home: Path, *flags: str) -> None:
        exe = find_executable("secantusd-py")
        if exe is None:
            pytest.fail("secantusd-py is not installed")
        self.exe, self.home, self.port, self.flags = exe, home, free_port(), flags
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [self.exe, "--host", "127.0.0.1", "--port", str(self.port), "--storage-path",
             str(self.home / "data"), "--log-level", "WARNING", *self.flags],
            stdout=log, stderr=log, start_new_session=True)
        wait_port(self.port, self.proc, "secantusd-py", self.home / "server.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def target_args(self, database: str, timeout: float = 1.0) -> list[str]:
        """syncd's flags for a database on this server (short waits: tests stop it)."""
        return ["--mongo-url", self.url, "--database", database, "--source-id", "h",
                "--timezone", "UTC", "--mongo-timeout", f"{timeout:g}"]


class LoggedRun:
    """A `syncd run` whose log goes to a file the test reads as it goes (not a pipe)."""

    def __init__(self, tmp: Path, legacy: Path, target_args: list[str],
                 env: dict[str, str] | None = None) -> None:
        cfg = tmp / "syncd.toml"
        cfg.write_text(FAST)
        self.state, self.log = tmp / "state", tmp / "run.log"
        self.args = ["--sqlite", str(legacy), "--state-dir", str(self.state), *target_args]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "--config", str(cfg), *self.args],
                env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=err)

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
