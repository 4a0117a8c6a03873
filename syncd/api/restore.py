"""`syncd restore`: a new metadata.db from MongoDB alone, as of a moment (syncd.engine.restore)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.errors import ConfigError
from syncd.progress import Progress


def parse_as_of(text: str | None) -> float | None:
    """A julian day for `--as-of` (None: now). ISO 8601 times with or without an
    offset (`2025-10-20T14:03:38.728+02:00`, `2025-10-20 14:03Z`) and plain dates
    (`2025-10-20`: the start of that day); a time without an offset, and a date, are
    this host's local time."""
    from syncd.sinks.history import julian_day

    if text is None or text.strip().lower() == "now":
        return None
    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise ConfigError(f"--as-of {text!r}: not a time; give an ISO 8601 time such as "
                              "2025-10-20T14:03:38+02:00, 2025-10-20 14:03 (local time) "
                              "or a date, 2025-10-20 (its start, local time)") from None
        when = datetime(day.year, day.month, day.day)
    if when.tzinfo is None:
        when = when.astimezone()  # this host's local time zone
    return julian_day(when)


def restore(settings: Settings, to: Path, as_of: str | None = None,
            source: str | None = None, progress: Progress | None = None) -> Any:
    """Write the SQLite file `to` from the history of `source` (default: the configured
    source id) as of `as_of` (default: now); returns the `RestoreReport`."""
    from syncd.engine.restore import RestoreOptions
    from syncd.engine.restore import restore as restore_file
    from syncd.sinks.history import sources_with_history

    jd = parse_as_of(as_of)
    path = Path(to).expanduser()
    if path.exists() or path.is_symlink():  # before starting any server
        raise ConfigError(f"--to {path}: it exists; restore writes a new file only (move "
                          "it away or name another path)")
    source_id = source or settings.source_id
    with open_target(settings) as target:
        known = sources_with_history(target.db)
        if source_id not in known:
            have = ", ".join(repr(s) for s in known) or "none"
            raise ConfigError(f"source {source_id!r} has no history in database "
                              f"{settings.database!r} (sources with history: {have}); "
                              "name one with --source")
        with progress or Progress(enabled=False) as shown:
            return restore_file(target.db, RestoreOptions(path, source_id, jd), shown)
