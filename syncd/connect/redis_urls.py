"""Redis URLs: one parser and one client factory for every deployment syncd talks to.

    redis://[[user]:pass@]host[:port][/db]          one server (rediss:// for TLS)
    unix:///path/redis.sock[?db=N]                  one server on a socket
    redis+sentinel://[[user]:pass@]host:port[,host:port...]/MASTER[/db]
                                                    Sentinel (rediss+sentinel:// for TLS)
    redis+cluster://[[user]:pass@]host:port[,host:port...]
                                                    Redis Cluster: any seed nodes, the rest
                                                    discovered (rediss+cluster:// for TLS)

The password (and user) is the data servers'; sentinels are asked without one. TLS
URLs take `?ssl_ca_certs=PATH` and `?ssl_cert_reqs=none|optional|required`. A URL
that does not parse is a `ConfigError` naming `--redis-url` (password masked).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

from syncd.errors import ConfigError
from syncd.redact import redact_url

# What `connect` returns: a client of one server (also Sentinel's master) or of a cluster.
RedisClient = redis.Redis | RedisCluster

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
SCHEMES = {"redis": (SINGLE, False), "rediss": (SINGLE, True), "unix": (SINGLE, False),
           "redis+sentinel": (SENTINEL, False), "rediss+sentinel": (SENTINEL, True),
           "redis+cluster": (CLUSTER, False), "rediss+cluster": (CLUSTER, True)}
TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs")
DEFAULT_PORTS = {SINGLE: 6379, SENTINEL: 26379, CLUSTER: 6379}


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis URL: the kind of deployment, its seed addresses, credentials, db."""

    url: str
    kind: str
    tls: bool
    hosts: list[tuple[str, int]] = field(default_factory=list)
    username: str | None = None
    password: str | None = None
    db: int = 0
    master: str | None = None  # Sentinel's master name
    options: dict[str, str] = field(default_factory=dict)  # TLS options from the query

    @property
    def shown(self) -> str:
        return redact_url(self.url)


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"--redis-url {redact_url(url)}: {why}")


def _host_port(url: str, text: str, default: int) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise _bad(url, f"{text!r} is not host:port")
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        raise _bad(url, f"port {port_text!r} of {host} is not a number") from None
    if not 0 < port < 65536:
        raise _bad(url, f"port {port} of {host} is out of range")
    return host, port


def _db(url: str, text: str) -> int:
    try:
        db = int(text) if text else 0
    except ValueError:
        raise _bad(url, f"database {text!r} is not a number") from None
    if db < 0:
        raise _bad(url, f"database {db} is negative")
    return db


def parse_redis_url(url: str) -> RedisURL:
    """Parse and check `url` (see the module's doc); raises ConfigError naming --redis-url."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise _bad(url, "must start with " + ", ".join(f"{s}://" for s in SCHEMES))
    kind, tls = SCHEMES[scheme.lower()]
    if scheme.lower() == "unix":
        return RedisURL(url, kind, tls)
    rest, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    allowed = TLS_OPTIONS if tls else ()
    unknown = sorted(set(options) - set(allowed)) if kind != SINGLE else []
    if unknown:
        raise _bad(url, f"unknown option {unknown[0]!r} (known: {', '.join(allowed) or 'none'})")
    at = rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
    username = password = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    netloc, _, path = rest.partition("/")
    if not netloc:
        raise _bad(url, "no host")
    seeds = [s for s in netloc.split(",")]
    if any(not s for s in seeds):
        raise _bad(url, "an empty host in the list")
    if kind == SINGLE and len(seeds) > 1:
        raise _bad(url, "one host only (for several, redis+sentinel:// or redis+cluster://)")
    hosts = [_host_port(url, s, DEFAULT_PORTS[kind]) for s in seeds]
    parts = [p for p in path.split("/") if p] if path else []
    master = None
    if kind == SENTINEL:
        if not parts:
            raise _bad(url, "no master name (redis+sentinel://host:port[,host:port]/MASTER[/db])")
        master, parts = unquote(parts[0]), parts[1:]
    if len(parts) > 1:
        raise _bad(url, f"unexpected path {path!r}")
    db = _db(url, parts[0] if parts else "")
    if kind == CLUSTER and db != 0:
        raise _bad(url, "a Redis Cluster has database 0 only")
    return RedisURL(url, kind, tls, hosts, username, password, db, master, options)


def _tls_kwargs(parsed: RedisURL) -> dict[str, Any]:
    if not parsed.tls:
        return {}
    out: dict[str, Any] = {"ssl": True}
    if "ssl_ca_certs" in parsed.options:
        out["ssl_ca_certs"] = parsed.options["ssl_ca_certs"]
    if "ssl_cert_reqs" in parsed.options:
        out["ssl_cert_reqs"] = parsed.options["ssl_cert_reqs"]
    return out


def make_client(url: str, **kwargs: Any) -> RedisClient:
    """A client for `url` with redis-py connection options `kwargs` (timeouts, retry...).

    One server: `redis.Redis`; Sentinel: the master's `redis.Redis` (found again
    after a failover); Cluster: `RedisCluster`, which routes each command by slot.
    """
    parsed = parse_redis_url(url)
    if parsed.kind == SINGLE:
        return redis.Redis.from_url(url, **kwargs)
    auth = {"username": parsed.username, "password": parsed.password}
    if parsed.kind == SENTINEL:
        sentinel_kwargs = {k: v for k, v in kwargs.items()
                           if k in ("socket_timeout", "socket_connect_timeout")}
        sentinel = Sentinel(parsed.hosts, sentinel_kwargs={**sentinel_kwargs,
                                                           **_tls_kwargs(parsed)},
                            **kwargs, **_tls_kwargs(parsed))
        assert parsed.master is not None
        return sentinel.master_for(parsed.master, db=parsed.db, **auth)
    kwargs = {k: v for k, v in kwargs.items() if k != "health_check_interval"}
    nodes = [ClusterNode(host, port) for host, port in parsed.hosts]
    try:  # RedisCluster asks a seed node for the slot map at once
        return RedisCluster(startup_nodes=nodes, **auth, **_tls_kwargs(parsed), **kwargs)
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"no seed node of the cluster answered ({exc})") from None


class DeferredCluster:
    """A Redis Cluster whose seed nodes did not answer yet: made at first use.

    `RedisCluster` asks a seed node for the slot map when it is made, so a daemon
    started while the cluster is down would have no client at all until restarted.
    This stands in for it: every use tries to make the real client (at most once per
    `retry_seconds`) and, until one is made, raises `redis.ConnectionError` as a down
    server does, which the daemon's cache writer and event sender already wait out.
    """

    def __init__(self, factory: Callable[[], RedisCluster], retry_seconds: float = 5.0) -> None:
        self._factory, self._retry = factory, retry_seconds
        self._client: RedisCluster | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    def connected(self) -> RedisCluster:
        """The real client; `redis.ConnectionError` while no seed node answers."""
        with self._lock:
            if self._client is None:
                wait = self._next_try - time.monotonic()
                if wait > 0:
                    raise redis.ConnectionError(f"no seed node of the cluster answered; "
                                                f"next try in {wait:.0f} s")
                try:
                    self._client = self._factory()
                except redis.RedisError:
                    self._next_try = time.monotonic() + self._retry
                    raise
            return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connected(), name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def deferred_client(url: str, **kwargs: Any) -> RedisClient:
    """`make_client`, except that a cluster whose seed nodes do not answer now gives a
    `DeferredCluster` (connected at first use) instead of an error."""
    try:
        return make_client(url, **kwargs)
    except redis.AuthenticationError:
        raise  # a refused password is not going to change: a configuration error
    except redis.ConnectionError:
        if parse_redis_url(url).kind != CLUSTER:
            raise
        return DeferredCluster(lambda: make_client(url, **kwargs))  # type: ignore[return-value]


def is_cluster(client: Any) -> bool:
    """Whether `client` routes by slot (a RedisCluster, made now or at first use)."""
    return isinstance(client, (RedisCluster, DeferredCluster))


def mget_any(client: RedisClient, keys: list[str]) -> list[bytes | None]:
    """MGET of keys in any slots: on a cluster one MGET per slot, pipelined per node
    (the cache spreads a file's values over many slots)."""
    if is_cluster(client):
        return client.mget_nonatomic(keys)
    return client.mget(keys)


def server_info(client: RedisClient, section: str) -> dict[str, Any]:
    """INFO `section` of the one server, or of a cluster's masters summed up: numbers
    added, `run_id` the sorted run ids joined (so any node's restart changes it)."""
    if not is_cluster(client):
        return dict(client.info(section))
    per_node = client.info(section, target_nodes=RedisCluster.PRIMARIES)
    out: dict[str, Any] = {}
    for info in per_node.values():
        for key, value in info.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    if section == "server":
        out["run_id"] = ",".join(sorted(str(i.get("run_id")) for i in per_node.values()))
    return out
