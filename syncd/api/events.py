"""`events`: the change events `syncd run` publishes on Redis, as an iterator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from syncd.api.options import endpoints
from syncd.config import Settings
from syncd.connect.redis import tail_redis


@contextlib.contextmanager
def events(settings: Settings, start: str = "$", count: int | None = None) -> Iterator[Any]:
    """Yields the events after stream id `start` ("0": all kept, "$": new) as a `Tail`:
    iterate it for (stream id, event); its `skipped` counts entries that are not events."""
    from syncd.sinks.events import tail  # numpy (through sinks.cache): `syncd events` only

    with tail_redis(endpoints(settings)) as client:
        yield tail(client, start=start, count=count)
