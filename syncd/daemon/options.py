"""The `[daemon]` settings of `syncd run`: defaults, checks, and the OS priority."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from syncd.config import Settings, section
from syncd.errors import ConfigError
from syncd.sinks.events import MAXLEN as EVENTS_MAXLEN

DEFAULTS: dict[str, Any] = {
    "capture": "triggers",
    "poll_seconds": 0.5,
    # A commit is applied at once while the legacy writers commit at most this often;
    # above it (busy writers) steps start at least min_step_seconds apart and a burst of
    # commits is applied in one step (0: always coalesce).
    "busy_commits_per_second": 100.0,
    "min_step_seconds": 0.05,
    # The applied position is saved at most this often (applying is idempotent: a
    # crash re-applies at most this much; the log is pruned only up to what is saved).
    "checkpoint_seconds": 1.0,
    "batch": 2000,
    "reconcile_seconds": 0.0,  # 0: the mode's default (scan 300 s, triggers 3600 s)
    "prune_seconds": 5.0,
    "heartbeat_seconds": 5.0,
    "backoff_max_seconds": 30.0,
    "events_maxlen": EVENTS_MAXLEN,
    "watch": True,
    "hdf5_rescan_seconds": 60.0,
    # Another consumer of the change log (a `syncd run` into another database) keeps
    # its unapplied entries this long while it is stopped; one gone longer reconciles.
    "log_retention_seconds": 86400.0,
    # CPU niceness (and lowest best-effort I/O priority when > 0) of syncd and its
    # embedded servers: the legacy writers get the machine first.
    "nice": 0,
}
MODES = ("triggers", "scan")


def lower_priority(nice: int) -> None:
    """Yield the CPU and the disk to the legacy writers (children inherit both)."""
    if nice <= 0:
        return
    with contextlib.suppress(OSError):
        os.nice(nice)
    with contextlib.suppress(Exception):  # Linux only; psutil comes with the embedded extra
        import psutil

        psutil.Process().ionice(psutil.IOPRIO_CLASS_BE, value=7)


def daemon_options(settings: Settings, capture: str | None = None) -> dict[str, Any]:
    """The `[daemon]` settings, checked; `capture` (the --capture flag) wins."""
    options = section(settings, "daemon", DEFAULTS)
    if capture:
        options["capture"] = capture
    if options["capture"] not in MODES:
        raise ConfigError(f"[daemon] capture = {options['capture']!r}: use one of "
                          f"{', '.join(MODES)}")
    for key in ("poll_seconds", "prune_seconds", "heartbeat_seconds", "backoff_max_seconds",
                "hdf5_rescan_seconds", "log_retention_seconds"):
        if options[key] <= 0:
            raise ConfigError(f"[daemon] {key} = {options[key]}: must be positive")
    for key in ("min_step_seconds", "checkpoint_seconds", "busy_commits_per_second"):
        if options[key] < 0:
            raise ConfigError(f"[daemon] {key} = {options[key]}: must not be negative")
    if not 0 <= options["nice"] <= 19:
        raise ConfigError(f"[daemon] nice = {options['nice']}: use 0 (as started) to 19")
    if options["batch"] <= 0:
        raise ConfigError(f"[daemon] batch = {options['batch']}: must be positive")
    if not options["reconcile_seconds"]:
        options["reconcile_seconds"] = 300.0 if options["capture"] == "scan" else 3600.0
    return options
