"""Child servers never outlive syncd: a death signal from the kernel, and stale ones found.

Signal handlers cover SIGTERM, SIGINT and SIGHUP (syncd/interrupts.py); nothing
covers SIGKILL or a crash of the interpreter, so on Linux each child server also
asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG). A server left
by an older syncd is found by its command line under /proc and stopped.

Why SIGKILL there, and SIGTERM aimed at the main thread everywhere else: a signal
sent to a process is taken by whichever of its threads the kernel picks. SecantusDB
is a Python program, and Python runs its SIGTERM handler only on the main thread,
which SecantusDB parks in a wait that a signal taken by another thread does not
interrupt; that SIGTERM is noted and never acted upon, and the server serves on.
Under load (its connection threads woken at that very moment by the dying syncd's
sockets closing) this happened to the kernel's death signal. A SIGTERM from syncd
goes to the main thread alone (tgkill), which it wakes; the kernel's death signal
cannot be aimed, so it is one that cannot be lost (the data is committed durably:
`--sync-on-commit`; the embedded Redis keeps nothing on disk).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL | None:
    """The C library's functions from the process's own symbols (libc is linked in):
    `ctypes.util.find_library` would run `ldconfig -p` as a child of every command."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError):
        return ctypes.CDLL(None, use_errno=True)
    return None


def _libc_prctl() -> Callable[..., int] | None:
    return getattr(_libc(), "prctl", None)


def die_with_parent(any_thread: bool = False) -> Callable[[], None] | None:
    """A `preexec_fn` making the child get SIGKILL when syncd dies (None where unsupported).

    The kernel ties this to the thread that forks, so it is only offered on the main
    thread (whose end is the process's), or with `any_thread` on a thread that outlives
    its child (syncd/embedded/supervise.py's). Everything is looked up before the fork:
    the function runs in the child, where only async-signal-safe work belongs.
    """
    if not any_thread and threading.current_thread() is not threading.main_thread():
        return None
    prctl = _libc_prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)  # not SIGTERM: see the module docstring

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def _libc_tgkill() -> Callable[..., int] | None:
    return getattr(_libc(), "tgkill", None)


_tgkill = _libc_tgkill()


def send_term(pid: int) -> None:
    """SIGTERM to `pid`'s main thread (whose id is the pid), else to the process.

    Aimed at the main thread, it interrupts the wait there, where Python runs the
    handler (see the module docstring). Raises ProcessLookupError/PermissionError as
    os.kill does.
    """
    if _tgkill is not None and _tgkill(pid, pid, int(signal.SIGTERM)) == 0:
        return
    os.kill(pid, signal.SIGTERM)  # no tgkill, or it failed: the process, as before


def cmdline(pid: int) -> list[str] | None:
    """A process's arguments (Linux /proc), or None when unknown or gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def find_processes(match: Callable[[list[str]], bool]) -> list[int]:
    """Pids (not this process) whose command line satisfies `match`; [] without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        args = cmdline(int(entry.name))
        if args and match(args):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` exists (reaping it first if it is our own exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM, wait up to `timeout`, then SIGKILL; True when the process is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        send_term(pid)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    return not alive(pid)
