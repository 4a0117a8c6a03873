"""What the HTTP routes may read: the contract between the server and the dashboard.

The server (`syncd run`'s thread, or `syncd dashboard` on its own) builds one
`HttpContext` and hands it to every route. Everything in it is read-only for the
routes: they never write to MongoDB, Redis or the legacy stores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.sources import SourceRef
from syncd.client.local_tier import LocalTierOptions


@dataclass(frozen=True)
class HttpContext:
    """`source`: the configured source (syncd.api builds the context); `mongo_timeout`:
    the bound of a MongoDB wait; `db`: the target database; `redis`: a redis-py
    client or None (no Redis); `status`: returns the daemon's live status document
    (`syncd run`) or None (`syncd dashboard`, which then reads the heartbeat document
    from MongoDB); `migrations`: the configured migrations folder (None: the bundled
    ones), the model the as-of pages project past rows with."""

    source: SourceRef
    mongo_timeout: float
    db: Database
    redis: Any | None = None
    status: Callable[[], dict[str, Any] | None] | None = None
    migrations: Path | None = None
    local_tier: LocalTierOptions | None = None  # this host's (resolved by syncd.api)
