"""Crash points for fault tests: `SYNCD_CRASH_AT=name[:n]` SIGKILLs the process there.

A crash point marks a place where a real crash must lose and double nothing
(after a write, before its checkpoint; between collection swaps, ...). Tests set
the variable to kill a real `syncd` process at exactly that place, the n-th time
it passes (default the first). Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("SYNCD_CRASH_AT", "")
_target, _, _nth = _spec.partition(":")
_remaining = int(_nth) if _nth.isdigit() else 1


def crashpoint(name: str) -> None:
    """Die here, as by `kill -9`, if this is the configured crash point."""
    global _remaining
    if not _target or name != _target:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
