"""`syncd restore`: a new metadata.db from MongoDB alone, as of a moment (syncd.engine.restore)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.api.options import endpoints, state_store
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.embedded.statedir import user_umask
from syncd.errors import ConfigError
from syncd.progress import Progress


def parse_as_of(text: str | None) -> float | None:
    """A julian day for `--as-of` (None: now), by the one rule every `--as-of` follows
    (syncd.api.shared.checked_moment: ISO 8601 with its offset, or a date, its 00:00 UTC;
    a time without a zone is refused rather than guessed)."""
    from syncd.api.shared import checked_moment
    from syncd.sinks.julian import julian_day

    if text is None or text.strip().lower() == "now":
        return None
    return julian_day(checked_moment(text))


def restore(settings: Settings, to: Path, as_of: str | None = None,
            source: str | None = None, progress: Progress | None = None) -> Any:
    """Write the SQLite file `to` from the history of `source` (default: the configured
    source id) as of `as_of` (default: now); returns the `RestoreReport`."""
    from legacy_adapters.sqlite_restore import RestoreFile
    from syncd.engine.restore import RestoreOptions
    from syncd.engine.restore import restore as restore_file
    from syncd.sinks.history import sources_with_history

    jd = parse_as_of(as_of)
    path = Path(to).expanduser()
    if path.exists() or path.is_symlink():  # before starting any server
        raise ConfigError(f"--to {path}: it exists; restore writes a new file only (move "
                          "it away or name another path)")
    with open_target(endpoints(settings)) as target:
        known = sources_with_history(target.db)
        if source:
            source_id = source
        elif settings.sqlite is None and len(known) == 1:
            source_id = known[0]  # no file named: the one source this database has
        else:  # resolved as every command resolves it (an older database's id too)
            source_id = state_store(target.db, settings).source_id
        if source_id not in known:
            have = ", ".join(repr(s) for s in known) or "none"
            if (len(known) > 1 and not source and settings.sqlite is None
                    and "source_id" not in settings.explicit):
                # no source named at all: say so, not "source '<hostname>' has none"
                raise ConfigError(f"database {settings.database!r} holds the history of "
                                  f"{len(known)} sources ({have}): name one with --source")
            raise ConfigError(f"source {source_id!r} has no history in database "
                              f"{settings.database!r} (sources with history: {have})"
                              + ("" if source else "; name one with --source"))
        with progress or Progress(enabled=False) as shown:
            options = RestoreOptions(path, source_id, jd, 0o666 & ~user_umask())
            return restore_file(target.db, options, shown, RestoreFile)
