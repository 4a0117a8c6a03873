"""What a migration reads of the settings: `MigrateOptions`, built by syncd.api."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MigrateOptions:
    """What a migration reads of the settings (syncd.api resolves them): the source's
    resolved id and file, rows per read and bulk write, and the legacy timestamps'
    zone (`timezone_given`: set explicitly, so it wins over the one recorded); the tables
    left out of history (`[history] exclude`: no baseline is recorded for them)."""

    source_id: str
    sqlite: Path | None = None
    chunk_size: int = 5000
    timezone: str | None = None
    timezone_given: bool = False
    history_exclude: frozenset[str] = frozenset()
