"""Which legacy file a database mirrors: one file per database, until the fleet work lands.

The source id defaults to the host name, so a second metadata.db synced into the same
database under the same id would be taken for the same source, and the reconcile would
delete every document of the first file. The first sync records the file (its resolved
absolute path) in `_syncd_state`; `migrate`, `run` and `verify` with another file are
refused, naming both. A file that really moved is adopted with `--adopt-file`. A
database synced before this record existed adopts the first file it sees.
"""

from __future__ import annotations

import logging
from pathlib import Path

from syncd.checkpoint.store import StateStore
from syncd.config import Settings
from syncd.errors import ConfigError

log = logging.getLogger(__name__)


def identity(path: Path) -> str:
    """The file's identity: its resolved absolute path (symbolic links followed)."""
    return str(Path(path).resolve())


def check(store: StateStore, settings: Settings, record: bool = False,
          adopt: bool = False, verb: str = "sync") -> None:
    """Refuse a file other than the one the database mirrors; record it if `record`.

    `adopt` makes this file the mirrored one (a file that moved); `verb` names what
    the refused command would have done, for the message.
    """
    if settings.sqlite is None:
        return
    path = identity(settings.sqlite)
    recorded = store.source_file()
    if recorded is None and record:
        if store.record_source_file(path, settings.source_id):
            return
        recorded = store.source_file()  # another syncd recorded one first
    if recorded is None or recorded.get("path") == path:
        return
    old = recorded.get("path")
    if adopt:
        if record:
            store.record_source_file(path, settings.source_id, replace=True)
            log.warning("database %r now mirrors %s (--adopt-file; it mirrored %s)",
                        store.db.name, path, old)
        return
    head = f"--sqlite {settings.sqlite}: database {store.db.name!r} mirrors another file, {old}"
    if verb == "verify":
        raise ConfigError(f"{head}, so there is nothing to compare {path} with; name the "
                          "database it was synced into (--database NAME); if the file moved, "
                          "syncd migrate --adopt-file records the new path")
    raise ConfigError(f"{head} (to {verb} {path} into it would delete that file's documents); "
                      "give each legacy file its own database (--database NAME); if the file "
                      "moved, pass --adopt-file")
