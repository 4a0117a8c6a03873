"""What several API functions share: the legacy source, the migrations, the daemon's state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from syncd.config import Settings, require_sqlite
from syncd.connect.mongo import MongoTarget
from syncd.engine.migration_files import load_migrations


@contextlib.contextmanager
def open_source(settings: Settings) -> Iterator[Any]:
    """The legacy database, opened read-only and its schema read (closed after the block)."""
    from legacy_adapters.sqlite import SQLiteSource  # SQLAlchemy: only commands that read it

    source = SQLiteSource(require_sqlite(settings))
    try:
        source.schema()  # fail early, as a configuration error, on an unreadable database
        yield source
    finally:
        source.close()


def migration_files(settings: Settings) -> list[Any]:
    """The migrations configured (--migrations, default: the bundled ones), in order."""
    return load_migrations(settings.migrations)


def where(settings: Settings, target: MongoTarget) -> str:
    """The target database as shown to people: URL (password masked), name, embedded data."""
    shown = f"{target.shown_url} database {settings.database!r}"
    if target.embedded:
        shown += f" (embedded; data in {settings.state_dir / 'mongo' / 'data'})"
    return shown
