"""Errors that map onto the CLI's exit codes (1: the work failed, 2: usage or configuration)."""

from __future__ import annotations

from legacy_adapters.errors import SourceError


class SyncdError(Exception):
    """The work failed: the CLI prints one line and exits 1."""

    exit_code = 1


class ConfigError(SyncdError):
    """Bad settings or an unusable input/target: one line naming the setting, exit 2."""

    exit_code = 2


class MigrationError(SyncdError):
    """A migration cannot be planned or applied (changed file, gap in versions, lease held)."""


# What the CLI reports as one line with its exit code, and the daemon retries.
FAILURES: tuple[type[Exception], ...] = (SyncdError, SourceError)
