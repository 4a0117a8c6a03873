"""The `[daemon]` settings of `syncd run`: defaults, the typed options, the OS priority.

`syncd.api.options.daemon_options` reads and checks them once (with the few shared
settings the daemon needs) into a frozen `DaemonOptions`; nothing below `api/`
reads the settings file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncd.sinks.events import MAXLEN as EVENTS_MAXLEN
from syncd.sinks.history import HistoryOptions

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
# How often every table is reconciled unless `[daemon] reconcile_seconds` says: a scan
# finds updates and deletes only this way; a change log misses only what it cannot see.
RECONCILE_SECONDS = {"triggers": 3600.0, "scan": 300.0}


@dataclass(frozen=True)
class DaemonOptions:
    """The resolved `[daemon]` settings, and the shared settings the daemon reads."""

    sqlite: Path  # the legacy database followed
    state_dir: Path  # where daemon.json (the local status) is written
    chunk_size: int  # rows per read and bulk write of a reconcile
    capture: str = DEFAULTS["capture"]
    poll_seconds: float = DEFAULTS["poll_seconds"]
    busy_commits_per_second: float = DEFAULTS["busy_commits_per_second"]
    min_step_seconds: float = DEFAULTS["min_step_seconds"]
    checkpoint_seconds: float = DEFAULTS["checkpoint_seconds"]
    batch: int = DEFAULTS["batch"]
    reconcile_seconds: float = 3600.0  # resolved: never 0
    prune_seconds: float = DEFAULTS["prune_seconds"]
    heartbeat_seconds: float = DEFAULTS["heartbeat_seconds"]
    backoff_max_seconds: float = DEFAULTS["backoff_max_seconds"]
    events_maxlen: int = DEFAULTS["events_maxlen"]
    watch: bool = DEFAULTS["watch"]
    hdf5_rescan_seconds: float = DEFAULTS["hdf5_rescan_seconds"]
    log_retention_seconds: float = DEFAULTS["log_retention_seconds"]
    nice: int = DEFAULTS["nice"]
    history: HistoryOptions = field(default_factory=HistoryOptions)  # `[history]`
    target: str = ""  # which MongoDB (syncd.api.options.target_label), for daemon.json


def lower_priority(nice: int) -> None:
    """Yield the CPU and the disk to the legacy writers (children inherit both)."""
    if nice <= 0:
        return
    with contextlib.suppress(OSError):
        os.nice(nice)
    with contextlib.suppress(Exception):  # Linux only; psutil comes with the embedded extra
        import psutil

        psutil.Process().ionice(psutil.IOPRIO_CLASS_BE, value=7)
