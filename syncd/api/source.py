"""`syncd source remove ID`: one source taken out of a shared database
(syncd.engine.removal), its history kept unless asked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.api.options import endpoints
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.engine.removal import Removal


def remove_source(settings: Settings, source_id: str, yes: bool = False,
                  drop_history: bool = False) -> Removal:
    """Delete `source_id`'s documents and state (and history, if `drop_history`) from
    the configured database; without `yes`, only count them (a dry run). Returns the
    `Removal`. An id the database does not know is a ConfigError naming the known ones."""
    from syncd.checkpoint.store import state_sources
    from syncd.engine.removal import remove_source as remove
    from syncd.sinks.history import sources_with_history

    with open_target(endpoints(settings)) as target:
        known = state_sources(target.db) | set(sources_with_history(target.db))
        if source_id not in known:
            have = ", ".join(repr(s) for s in sorted(known)) or "none"
            raise ConfigError(f"source {source_id!r} is not in database "
                              f"{settings.database!r} (known sources: {have})")
        return remove(target.db, source_id, drop_history, dry_run=not yes)
