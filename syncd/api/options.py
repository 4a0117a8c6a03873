"""The settings resolved into each stage's typed, frozen options, once per command.

Below `syncd/api/` nothing reads `syncd.config`: each stage is handed what it reads
of the settings (`Endpoints`, `SourceRef`, `MigrateOptions` here; `DaemonOptions` in
run.py, `[hdf5]` and `[http]` in hdf5_options.py and http_options.py).
"""

from __future__ import annotations

from pymongo.database import Database

from syncd.api.shared import history_options
from syncd.checkpoint import sources
from syncd.checkpoint.sources import SourceRef
from syncd.checkpoint.store import StateStore
from syncd.config import Settings, section
from syncd.embedded.endpoints import Endpoints
from syncd.engine.options import MigrateOptions
from syncd.errors import ConfigError
from syncd.logs import LOG_DEFAULTS, LOG_FORMATS
from syncd.redact import redact_url


def endpoints(settings: Settings) -> Endpoints:
    """Where MongoDB and Redis are (URLs, or the embedded servers under --state-dir)."""
    return Endpoints(settings.state_dir, settings.mongo_url, settings.redis_url,
                     settings.database, settings.mongo_timeout, settings.redis_timeout)


def target_label(settings: Settings) -> str:
    """Which MongoDB the settings name, stable across starts (the embedded server's port
    is not): "embedded" (under the state dir) or the URL, password masked. `syncd run`
    records it in daemon.json; `syncd status` shows that file only for the same target."""
    return "embedded" if settings.mongo_url is None else redact_url(settings.mongo_url)


def source_ref(settings: Settings, resolved_id: str | None = None) -> SourceRef:
    """The configured source; `resolved_id`: its id as `state_store` resolved it."""
    if resolved_id is not None:
        return SourceRef(resolved_id, settings.sqlite, named=True)
    return SourceRef(settings.source_id, settings.sqlite, "source_id" in settings.explicit)


def state_store(db: Database, settings: Settings) -> StateStore:
    """The configured source's state in `db`, its id resolved (`sources.resolve`): the
    `source_id` every later stage of the command is given."""
    return sources.store_for(db, source_ref(settings))


def check_source_file(store: StateStore, settings: Settings, record_it: bool = False,
                      adopt: bool = False, verb: str = "sync") -> None:
    """The command's one check that the file is the one the source mirrors."""
    sources.check(store, settings.sqlite, record_it=record_it, adopt=adopt, verb=verb)


def migrate_options(settings: Settings, source_id: str) -> MigrateOptions:
    """What a migration reads, for the source `source_id` (as resolved)."""
    return MigrateOptions(source_id, settings.sqlite, settings.chunk_size, settings.timezone,
                          "timezone" in settings.explicit,
                          frozenset(history_options(settings).exclude))


def log_format(settings: Settings) -> str:
    """`[log] format` from the settings file, checked."""
    fmt = section(settings, "log", LOG_DEFAULTS)["format"]
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"[log] format = {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    return str(fmt)
