"""`syncd run` keeps its embedded servers alive: one that dies is started again.

A child server can die under syncd (kill -9 of it, the kernel's OOM killer, a crash).
Without a watch, `syncd run` would retry a dead port for ever (readyz 503) while
nothing starts it again. The `Supervisor` thread waits on the child it started, says
so in one log line the moment it dies (exit status or signal, where its log is), and
starts it again on the same port and data with a growing delay (1, 2, 4, ... s). The
clients reconnect to the same URL by themselves, and the daemon's retries resume
following; the embedded MongoDB commits durably (`--sync-on-commit`), so nothing
acknowledged is lost. After `MAX_QUICK_DEATHS` deaths in a row each within
`QUICK_SECONDS` of its start it gives up: `on_give_up` gets the error. For MongoDB
`syncd run` then exits non-zero, for the service manager's `Restart=` to take over;
a Redis is left down and the MongoDB sync goes on (syncd/connect/redis.py).

The restarted child is spawned by this thread, so the kernel's death signal
(PR_SET_PDEATHSIG, children.py) is tied to it: the thread never ends while a child it
spawned lives (it waits for it; a child that never gets ready is stopped first).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from syncd.embedded import children
from syncd.errors import SyncdError


class Supervised(Protocol):
    """What a supervisor needs of the server it watches (`EmbeddedServer` has it)."""

    kind: str
    port: int | None
    process: subprocess.Popen[bytes] | None
    log_file: Path

    def respawn(self, preexec: Callable[[], None] | None) -> None: ...

    def wait_ready(self) -> None: ...

    def log_tail(self) -> str: ...


log = logging.getLogger(__name__)

QUICK_SECONDS = 60.0  # a death this soon after the (re)start counts towards giving up
MAX_QUICK_DEATHS = 5
FIRST_DELAY, MAX_DELAY = 1.0, 30.0


def describe_exit(code: int | None) -> str:
    """How a child ended, in words: 'killed by SIGKILL' or 'exited with code 3'."""
    if code is None:
        return "ended (status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (kill -9, or the kernel's OOM killer)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


class GiveUp:
    """Where a supervisor's final error goes; the callback may be named later (the
    daemon exists only after the servers start): an error before that is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callback: Callable[[SyncdError], None] | None = None
        self.error: SyncdError | None = None

    def bind(self, callback: Callable[[SyncdError], None]) -> None:
        with self._lock:
            self._callback, error = callback, self.error
        if error is not None:
            callback(error)

    def __call__(self, error: SyncdError) -> None:
        with self._lock:
            self.error, callback = self.error or error, self._callback
        if callback is not None:
            callback(error)


class Supervisor(threading.Thread):
    """Watches `server`'s child process; restarts it on the same port when it dies."""

    def __init__(self, server: Supervised, on_give_up: Callable[[SyncdError], None]) -> None:
        super().__init__(name=f"supervise-{server.kind}", daemon=True)
        self.server, self.on_give_up = server, on_give_up
        self.lock = threading.Lock()  # held while spawning: halt() waits for a spawn
        self.halted = threading.Event()
        self.restarts = 0

    def halt(self) -> None:
        """No more restarts (syncd stops the server next); waits for a spawn under way."""
        with self.lock:
            self.halted.set()

    def run(self) -> None:
        try:
            self._watch()
        except Exception as exc:  # a bug here must not leave syncd on a dead server
            if self.halted.is_set():  # syncd stops the server anyway: no failure to report
                log.debug("the embedded %s's supervisor ended during the stop: %s",
                          self.server.kind, exc)
                return
            log.exception("the embedded %s's supervisor failed", self.server.kind)
            self.on_give_up(SyncdError(f"the embedded {self.server.kind}'s supervisor "
                                       f"failed: {exc}"))

    def _watch(self) -> None:
        server, quick, delay = self.server, 0, FIRST_DELAY
        since = time.monotonic()
        while True:
            proc = server.process
            if proc is None:
                return
            code = proc.wait()
            if self.halted.is_set():
                return
            quick = quick + 1 if time.monotonic() - since < QUICK_SECONDS else 1
            if quick == 1:
                delay = FIRST_DELAY
            how = describe_exit(code)
            if quick >= MAX_QUICK_DEATHS:
                self._give_up(proc.pid, how, quick)
                return
            log.error("the embedded %s (pid %d, 127.0.0.1:%s) died: %s; its log: %s; "
                      "starting it again on the same port and data in %.0f s",
                      server.kind, proc.pid, server.port, how, server.log_file, delay)
            if self.halted.wait(delay):
                return
            delay = min(delay * 2, MAX_DELAY)
            since = time.monotonic()
            try:
                restarted = self._restart()
            except (SyncdError, OSError) as exc:  # cannot even spawn it (executable gone)
                self._stopped_for_good(exc if isinstance(exc, SyncdError) else SyncdError(
                    f"the embedded {server.kind} cannot be started again: {exc}"))
                return
            if restarted:
                self.restarts += 1
                log.warning("the embedded %s is back on 127.0.0.1:%s (pid %d)", server.kind,
                            server.port, server.process.pid if server.process else 0)

    def _restart(self) -> bool:
        """Spawn the server again and wait until it answers; False if it did not (its
        death, or its stop, is then what the loop waits for)."""
        with self.lock:
            if self.halted.is_set():
                return False
            self.server.respawn(children.die_with_parent(any_thread=True))
        try:
            self.server.wait_ready()
        except SyncdError as exc:
            proc = self.server.process
            if proc is not None and proc.poll() is None:  # never answered: stop it
                children.terminate(proc.pid)
            if not self.halted.is_set():
                log.error("%s", exc)
            return False
        return True

    def _give_up(self, pid: int, how: str, deaths: int) -> None:
        server = self.server
        tail = server.log_tail()
        error = SyncdError(
            f"the embedded {server.kind} (pid {pid}) died {deaths} times in a row, each "
            f"within {QUICK_SECONDS:.0f} s of its start (last: {how}); not starting it "
            f"again: see {server.log_file}{': ' + tail if tail else ''}")
        self._stopped_for_good(error)

    def _stopped_for_good(self, error: SyncdError) -> None:
        log.error("%s", error)
        self.on_give_up(error)
