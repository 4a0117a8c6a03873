"""Errors of the legacy sources, with the exit code the CLI maps them to.

The adapters import nothing from syncd, so they carry their own small hierarchy;
syncd treats `SourceError` as one of its own failures (syncd.errors.FAILURES).
"""

from __future__ import annotations

import sqlite3


class SourceError(Exception):
    """The legacy source could not be read as asked (exit 1)."""

    exit_code = 1


class SourceConfigError(SourceError):
    """The legacy source is unusable as configured: missing, not SQLite (exit 2)."""

    exit_code = 2


class SourceReadOnly(SourceConfigError):
    """The legacy database cannot be written here (a read-only file, folder or mount), so
    nothing that changes its schema can work: a setting to change, not a failure (exit 2)."""


class SourceBusy(SourceError):
    """Another connection (a legacy writer's long transaction) held the database locked
    past the busy timeout: a wait, not a failure; the caller tries again later."""


def write_error(exc: sqlite3.OperationalError, what: str, busy_timeout: float) -> SourceError:
    """What a failed write to the legacy database means, said after `what`: it cannot be
    written here at all (a read-only file, or a folder where SQLite cannot create its
    journal: a setting to change), another connection held it locked past the busy
    timeout (a wait), or a failure."""
    code, text = getattr(exc, "sqlite_errorcode", None), str(exc)  # the code: Python 3.11+
    if code is None:  # by the message
        read_only = "readonly" in text or "unable to open database file" in text
        busy = "database is locked" in text
    else:  # by the primary code of an extended one
        read_only = code & 0xFF in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
        busy = code & 0xFF == sqlite3.SQLITE_BUSY
    if read_only:
        return SourceReadOnly(f"{what} ({exc}): the database or its folder is read-only here")
    if busy:
        return SourceBusy(f"{what} yet: another connection (a legacy writer's transaction) "
                          f"has held the database locked for over {busy_timeout:g} s ({exc})")
    return SourceError(f"{what} ({exc})")
