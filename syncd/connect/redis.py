"""The Redis target: a configured URL, or the embedded redis-server when none is set.

The only place that decides between `--redis-url` and the embedded server. Each
caller picks one policy by name: start the embedded server if needed
(`open_redis`), use one only if it already runs (`running_redis_url`,
`running_redis`, `tail_redis`), or tolerate an absent or unreachable Redis
(`daemon_redis`). Every wait is bounded by `ends.redis_timeout`. Every client is
made by `connect_redis`, for any URL `redis_urls` parses: one server, TLS, Sentinel
or Cluster.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from syncd.connect.redis_urls import RedisClient, deferred_client, make_client
from syncd.embedded import configured_or_embedded
from syncd.embedded.endpoints import Endpoints
from syncd.embedded.redis import EmbeddedRedis
from syncd.errors import ConfigError, SyncdError
from syncd.redact import redact_url, scrub

log = logging.getLogger("syncd")


@dataclass
class RedisTarget:
    """An open Redis client, its URL (for worker processes) and where it is (password masked)."""

    client: RedisClient
    url: str
    shown_url: str
    embedded: bool


READ_SIZE = 1 << 20  # windows are ~100 KB: read replies in big pieces, not 64 KB ones


def connect_redis(url: str, timeout: float = 5.0, retry: bool = True,
                  read_timeout: float | None = None, deferred: bool = False) -> RedisClient:
    """A binary-safe client whose connects are bounded by `timeout` seconds and whose
    replies by `read_timeout` (default: at least 30 s, for large cache values).

    `retry=False` gives up at the first connection error instead of backing off and
    trying again: for readers that have somewhere else to go (the HDF5 files).
    `deferred=True`: a cluster that does not answer now is connected at first use
    (one server's client always connects lazily), for the long-running daemon.
    """
    extra = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    reads = max(timeout, 30.0) if read_timeout is None else read_timeout
    make = deferred_client if deferred else make_client
    return make(url, socket_connect_timeout=timeout, socket_timeout=reads,
                decode_responses=False, health_check_interval=30,
                socket_read_size=READ_SIZE, **extra)


def reader_redis(url: str | None) -> RedisClient | None:
    """A reader's client (the Dataset's): short connects, no retries (the files are its
    fallback). None without a URL, or when a cluster's seed nodes do not answer now."""
    if not url:
        return None
    try:
        return connect_redis(url, timeout=2.0, retry=False)
    except redis.RedisError as exc:
        log.warning("Redis %s is unreachable (%s): reading from the HDF5 files",
                    redact_url(url), scrub(str(exc))[:200])
        return None


def running_redis_url(ends: Endpoints) -> str | None:
    """The configured Redis, else the embedded one a syncd process runs for the state dir.

    Never starts a server: a training script uses this to find the cache that
    `syncd run` keeps warm, and a status read must not create one.
    """
    return ends.redis_url or EmbeddedRedis(ends.state_dir).running_url()


def tls_hint(url: str, exc: Exception) -> str:
    """What to check when a TLS URL times out or fails its handshake: a plain-text Redis
    never answers a TLS handshake, so all one sees is a timeout."""
    if not url.startswith("rediss") or not isinstance(exc, (redis.TimeoutError,
                                                            redis.ConnectionError)):
        return ""
    return ("; the URL asks for TLS (rediss://): does that port serve TLS? A plain-text "
            "Redis never answers the handshake (use redis://)")


def _unreachable(shown: str, url: str, ends: Endpoints, exc: Exception) -> ConfigError:
    """The one line for a Redis that did not answer in time (with the TLS hint)."""
    return ConfigError(f"--redis-url {shown}: not reachable within {ends.redis_timeout:g} s "
                       f"({scrub(str(exc))[:200]}){tls_hint(url, exc)}")


@contextlib.contextmanager
def open_redis(ends: Endpoints) -> Iterator[RedisTarget]:
    """Connect to the configured Redis or to the embedded one (started if needed)."""
    with configured_or_embedded(ends.redis_url,
                                lambda: EmbeddedRedis(ends.state_dir)) as (url, embedded):
        shown = redact_url(url)
        client = None
        try:
            try:
                client = connect_redis(url, ends.redis_timeout)
                client.ping()
            except redis.AuthenticationError as exc:
                raise ConfigError(f"--redis-url {shown}: the server refused syncd "
                                  f"({scrub(str(exc))})") from None
            except redis.RedisError as exc:
                raise _unreachable(shown, url, ends, exc) from None
            yield RedisTarget(client, url, shown, embedded)
        finally:
            if client is not None:
                client.close()


@contextlib.contextmanager
def running_redis(ends: Endpoints) -> Iterator[RedisClient | None]:
    """A client of `running_redis_url`, or None; for status reads.

    A Redis that hangs must not hang the read: bounded, no retries.
    """
    url = running_redis_url(ends)
    if url is None:
        yield None
        return
    try:
        client = connect_redis(url, ends.redis_timeout, retry=False,
                               read_timeout=ends.redis_timeout)
    except redis.RedisError as exc:  # a cluster is asked for its nodes at once
        log.warning("Redis %s is unreachable (%s)", redact_url(url), scrub(str(exc))[:200])
        yield None
        return
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def tail_redis(ends: Endpoints) -> Iterator[RedisClient]:
    """The Redis `syncd run` publishes to (configured, or its running embedded one), pinged.

    None running, unreachable or refusing is a configuration error naming --redis-url.
    """
    url = running_redis_url(ends)
    if url is None:
        raise ConfigError("--redis-url is not set and no embedded Redis is running for "
                          f"--state-dir {ends.state_dir}: start syncd run, or name the "
                          "Redis it publishes to")
    try:
        client = connect_redis(url, ends.redis_timeout)
    except redis.RedisError as exc:
        raise _unreachable(redact_url(url), url, ends, exc) from None
    with contextlib.closing(client):
        try:
            client.ping()
        except redis.RedisError as exc:
            what = "refused syncd" if isinstance(exc, (redis.AuthenticationError,
                                                       redis.ResponseError)) \
                else f"not reachable within {ends.redis_timeout:g} s"
            raise ConfigError(f"--redis-url {redact_url(url)}: {what} "
                              f"({scrub(str(exc))[:200]}){tls_hint(url, exc)}") from None
        yield client


def _redis_gave_up(error: SyncdError) -> None:
    """An embedded Redis that keeps dying ends the cache side only: the copy of record
    in MongoDB does not depend on it."""
    log.error("%s; the MongoDB sync goes on without Redis (events wait in the buffer, the "
              "cache is not warmed) until syncd run is started again", error)


@contextlib.contextmanager
def daemon_redis(ends: Endpoints, needed: bool, supervise: bool = False
                 ) -> Iterator[tuple[RedisClient | None, RedisClient | None]]:
    """Redis for `syncd run`: (cache client, events client), or (None, None).

    Unlike other commands, an unreachable Redis is not fatal here: the MongoDB sync
    goes on, events wait in a buffer and the cache is warmed once Redis is back. A
    refused password is a configuration error. The events client has short timeouts
    and no retries: a Redis that hangs must not hold anything up. With `supervise`, an
    embedded Redis started here is started again when it dies (embedded/supervise.py);
    one that keeps dying is left down, said once, and the MongoDB sync goes on.
    """
    embedded = None
    if ends.redis_url:
        url = ends.redis_url
    else:
        embedded = EmbeddedRedis(ends.state_dir)
        try:
            url = embedded.start()
        except ConfigError as exc:
            if needed:
                raise
            log.warning("no --redis-url and no embedded Redis (%s): events are not published",
                        exc)
            yield None, None
            return
        if supervise:
            embedded.supervise(_redis_gave_up)
    # A cluster that is down now is connected when it answers; the sync goes on meanwhile.
    client = connect_redis(url, ends.redis_timeout, deferred=True)
    events = connect_redis(url, 2.0, retry=False, read_timeout=2.0, deferred=True)
    try:
        try:
            events.ping()
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            raise ConfigError(f"--redis-url {redact_url(url)}: the server refused syncd "
                              f"({scrub(str(exc))})") from None
        except redis.RedisError as exc:
            log.warning("Redis %s is unreachable (%s%s): the MongoDB sync goes on; events "
                        "wait and the cache is warmed when it is back", redact_url(url),
                        scrub(str(exc))[:200], tls_hint(url, exc))
        yield client, events
    finally:
        client.close()
        events.close()
        if embedded is not None:
            embedded.stop()
