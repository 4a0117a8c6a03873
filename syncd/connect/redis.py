"""The Redis target: a configured URL, or the embedded redis-server when none is set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from syncd.config import Settings
from syncd.embedded import configured_or_embedded
from syncd.embedded.redis import EmbeddedRedis
from syncd.errors import ConfigError
from syncd.redact import redact_url, scrub


@dataclass
class RedisTarget:
    """An open Redis client, its URL (for worker processes) and where it is (password masked)."""

    client: redis.Redis
    url: str
    shown_url: str
    embedded: bool


READ_SIZE = 1 << 20  # windows are ~100 KB: read replies in big pieces, not 64 KB ones


def connect_redis(url: str, timeout: float = 5.0, retry: bool = True,
                  read_timeout: float | None = None) -> redis.Redis:
    """A binary-safe client whose connects are bounded by `timeout` seconds and whose
    replies by `read_timeout` (default: at least 30 s, for large cache values).

    `retry=False` gives up at the first connection error instead of backing off and
    trying again: for readers that have somewhere else to go (the HDF5 files).
    """
    extra = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    reads = max(timeout, 30.0) if read_timeout is None else read_timeout
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=reads,
                                decode_responses=False, health_check_interval=30,
                                socket_read_size=READ_SIZE, **extra)


def embedded_redis_url(state_dir: Path) -> str | None:
    """The URL of the embedded Redis a syncd process is running for `state_dir`, if any.

    A training script uses this to find the cache that `syncd run` keeps warm.
    """
    return EmbeddedRedis(state_dir).running_url()


@contextlib.contextmanager
def open_redis(settings: Settings) -> Iterator[RedisTarget]:
    """Connect to the configured Redis or to the embedded one (started if needed)."""
    with configured_or_embedded(settings.redis_url,
                                lambda: EmbeddedRedis(settings.state_dir)) as (url, embedded):
        shown = redact_url(url)
        client = connect_redis(url, settings.mongo_timeout)
        try:
            try:
                client.ping()
            except redis.AuthenticationError as exc:
                raise ConfigError(f"--redis-url {shown}: the server refused syncd "
                                  f"({scrub(str(exc))})") from None
            except redis.RedisError as exc:
                detail = scrub(str(exc))[:200]
                raise ConfigError(f"--redis-url {shown}: not reachable within "
                                  f"{settings.mongo_timeout:g} s ({detail})") from None
            yield RedisTarget(client, url, shown, embedded)
        finally:
            client.close()
