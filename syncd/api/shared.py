"""What several API functions share: the legacy source, the migrations, the daemon's state."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from syncd.config import Settings, require_sqlite
from syncd.connect.mongo import MongoTarget
from syncd.engine.migration_files import load_migrations


@contextlib.contextmanager
def open_source(settings: Settings, wait_busy: bool = False,
                on_busy: Callable[[str], None] | None = None) -> Iterator[Any]:
    """The legacy database, opened read-only and its schema read (closed after the block).
    `wait_busy` (`syncd run`, which waits a writer's long lock out at its start-up): a
    database still locked after the schema read's retries is no error here. `on_busy`:
    told as soon as a read starts waiting for a writer's lock (SQLiteSource.on_busy)."""
    from legacy_adapters.errors import SourceBusy
    from legacy_adapters.sqlite import SQLiteSource  # SQLAlchemy: only commands that read it

    source = SQLiteSource(require_sqlite(settings))
    source.on_busy = on_busy
    try:
        # Fail early, as a configuration error, on an unreadable database, and on one a
        # writer keeps locked (SourceBusy), before any server starts, unless waited for.
        with contextlib.suppress(*((SourceBusy,) if wait_busy else ())):
            source.schema()
        yield source
    finally:
        source.close()


def checked_moment(as_of: Any) -> Any:
    """An `--as-of` moment as an aware UTC datetime, by the one rule every `--as-of`
    follows (syncd.client.asof.parse_time); a bad one is refused (exit 2) before any
    server starts."""
    from syncd.client.asof import parse_time
    from syncd.errors import ConfigError, SyncdError

    try:
        return parse_time(as_of)
    except SyncdError as exc:
        raise ConfigError(f"--as-of: {exc}") from None


def migration_files(settings: Settings) -> list[Any]:
    """The migrations configured (--migrations, default: the bundled ones), in order."""
    return load_migrations(settings.migrations)


def where(settings: Settings, target: MongoTarget) -> str:
    """The target database as shown to people: URL (password masked), name, embedded data."""
    shown = f"{target.shown_url} database {settings.database!r}"
    if target.embedded:
        shown += f" (embedded; data in {settings.state_dir / 'mongo' / 'data'})"
    return shown


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def history_options(settings: Settings) -> Any:
    """The `[history]` settings, checked: `keep` ("forever", or a duration "90d", "12h",
    "30m", "3600s", "2w") and `exclude` (table names left out of history)."""
    from syncd.config import section
    from syncd.errors import ConfigError
    from syncd.sinks.history import HISTORY_DEFAULTS, HistoryOptions

    raw = section(settings, "history", HISTORY_DEFAULTS)
    keep = str(raw["keep"]).strip().lower()
    seconds = None
    if keep != "forever":
        number, unit = keep[:-1], keep[-1:]
        try:
            seconds = float(number) * _UNITS[unit]
        except (KeyError, ValueError):
            raise ConfigError(f"[history] keep = {raw['keep']!r}: use \"forever\" or a "
                              'duration such as "90d", "12h", "30m", "3600s"') from None
        if seconds <= 0:
            raise ConfigError(f"[history] keep = {raw['keep']!r}: must be positive")
    if not all(isinstance(t, str) for t in raw["exclude"]):
        raise ConfigError("[history] exclude: a list of table names")
    return HistoryOptions(keep_seconds=seconds, exclude=frozenset(raw["exclude"]))
