"""Errors of the legacy sources, with the exit code the CLI maps them to.

The adapters import nothing from syncd, so they carry their own small hierarchy;
syncd treats `SourceError` as one of its own failures (syncd.errors.FAILURES).
"""

from __future__ import annotations


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
