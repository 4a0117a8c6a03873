"""Stop signals as exceptions, so the `finally` that stops a child server always runs.

Python's default SIGTERM and SIGHUP kill the process on the spot: a syncd stopped
that way while its embedded MongoDB starts leaves the server running, holding the
state directory. While `raising()` is active (from before a child server is spawned
until it is stopped), SIGTERM and SIGHUP raise `Interrupted` and SIGINT raises
KeyboardInterrupt, in the main thread. Inside `deferred()` (spawning a child and
recording it, stopping it) a signal is held and delivered at the block's end, so it
can never fall between "the child exists" and "syncd knows it does".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_depth = 0
_saved: dict[int, Any] = {}
_held: list[int] | None = None


class Interrupted(SystemExit):
    """A SIGTERM or SIGHUP arrived; the exit code is the shell's 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def stop_requested(exc: BaseException) -> bool:
    """Whether `exc` is a SIGTERM or SIGINT (Ctrl-C): a stop someone asked for."""
    if isinstance(exc, Interrupted):
        return exc.signum in (signal.SIGTERM, signal.SIGINT)
    return isinstance(exc, KeyboardInterrupt)


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _held is not None:
        _held.append(signum)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def _is_default(signum: int, current: Any) -> bool:
    if signum == signal.SIGINT:
        return current is signal.default_int_handler
    return current == signal.SIG_DFL


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def acquire() -> None:
    """Start raising on stop signals (nested calls count; handlers set by others are kept)."""
    global _depth
    if not _main_thread():
        return
    if _depth == 0:
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if _is_default(signum, current):
                _saved[signum] = current
                signal.signal(signum, _handler)
    _depth += 1


def release() -> None:
    """Undo one `acquire()`; the last one puts the default handlers back."""
    global _depth
    if not _main_thread() or _depth == 0:
        return
    _depth -= 1
    if _depth == 0:
        for signum, previous in list(_saved.items()):
            if signal.getsignal(signum) is _handler:  # not replaced meanwhile (the daemon's)
                signal.signal(signum, previous)
        _saved.clear()


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """Stop signals raise inside the block (see the module docstring)."""
    acquire()
    try:
        yield
    finally:
        release()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals during the block; deliver the first one held at its end."""
    global _held
    if not _main_thread() or _held is not None:
        yield
        return
    _held = []
    try:
        yield
    finally:
        held, _held = _held, None
        if held:
            signal.raise_signal(held[0])
