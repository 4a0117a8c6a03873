"""Crash and pause points for fault tests.

`SYNCD_CRASH_AT=name[:n]` SIGKILLs the process at crash point `name`, the n-th time
it passes (default the first). `SYNCD_PAUSE_AT=name[:n]` stops there instead until
the test says go on: the process creates `<SYNCD_PAUSE_DIR>/name.paused` and waits
(at most 120 s) for `name.resume`, so a test can change the legacy database at
exactly that moment (for example while a reconcile is half done).

A crash point marks a place where a real crash must lose and double nothing
(after a write, before its checkpoint; between collection swaps, ...). Unset,
a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _parse(variable: str) -> tuple[str, int]:
    target, _, nth = os.environ.get(variable, "").partition(":")
    return target, int(nth) if nth.isdigit() else 1


_crash, _crash_left = _parse("SYNCD_CRASH_AT")
_pause, _pause_left = _parse("SYNCD_PAUSE_AT")


def crashpoint(name: str) -> None:
    """Die here, as by `kill -9`, or pause here, if this is the configured point."""
    global _crash_left, _pause_left
    if _crash and name == _crash:
        _crash_left -= 1
        if _crash_left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
    if _pause and name == _pause:
        _pause_left -= 1
        if _pause_left == 0:
            _wait_here(name)


def _wait_here(name: str) -> None:
    folder = Path(os.environ.get("SYNCD_PAUSE_DIR", "."))
    (folder / f"{name}.paused").touch()
    deadline = time.monotonic() + 120
    while not (folder / f"{name}.resume").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
