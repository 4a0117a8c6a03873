"""Where the target servers are: what syncd/connect and syncd/embedded read of the settings
(a configured URL, or the embedded server under the state directory)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Endpoints:
    """MongoDB and Redis as configured (syncd.api builds it from the settings): a URL, or
    None for the embedded server under `state_dir`; each wait's bound; the database."""

    state_dir: Path
    mongo_url: str | None = None
    redis_url: str | None = None
    database: str = "syncd"
    mongo_timeout: float = 5.0
    redis_timeout: float = 5.0
