"""The fast MGET path for every Redis URL: one server, Sentinel's master, or a Cluster.

`open_direct(url)` gives the reader an object with `mget_into(keys, targets)` and
`close()` (syncd.client.mget describes them), or None where only redis-py can go
(TLS). On a Redis Cluster, `ClusterMget` groups a batch's keys by hash slot (a file's
windows are spread over many slots in blocks: syncd.sinks.cache.Keys), sends every
group's MGET to the master that owns its slot, all of one master's in one send, before
reading any reply (one round trip per master a batch involves), and follows the cluster
while slots move: on MOVED it reloads the slot map and asks the new owner; on ASK
it sends ASKING and the MGET to the node named; on TRYAGAIN (a slot half moved) it
waits a moment and asks again. A group still not answered after `ATTEMPTS` tries is
reported as misses (the Dataset reads those windows from the files): never a wrong
window, never a failed batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import quote

import redis
from redis.crc import key_slot
from redis.sentinel import Sentinel

from syncd.client.mget import MISS, DirectMget, MgetError, Redirect
from syncd.connect.redis_urls import CLUSTER, SENTINEL, RedisURL, parse_redis_url

log = logging.getLogger(__name__)

ATTEMPTS = 5
TRYAGAIN_PAUSE = 0.02  # seconds, times the attempt number


class Mget(Protocol):
    def mget_into(self, keys: Sequence[str], targets: Sequence[memoryview | None]) -> list[int]:
        ...

    def close(self) -> None:
        ...


def _node_url(parsed: RedisURL, host: str, port: int, db: int = 0) -> str:
    auth = ""
    if parsed.password is not None:
        auth = f"{quote(parsed.username or '', safe='')}:{quote(parsed.password, safe='')}@"
    return f"redis://{auth}{host}:{port}/{db}"


def open_direct(url: str, timeout: float = 10.0) -> Mget | None:
    """The fast MGET for `url`, or None for URLs only redis-py serves (TLS).

    Raises MgetError when the server (or every seed node, or every sentinel) is down.
    """
    parsed = parse_redis_url(url)
    if parsed.tls:
        return None
    if parsed.kind == CLUSTER:
        return ClusterMget(parsed, timeout)
    if parsed.kind == SENTINEL:
        assert parsed.master is not None
        sentinel = Sentinel(parsed.hosts, socket_timeout=timeout,
                            socket_connect_timeout=timeout)
        try:
            host, port = sentinel.discover_master(parsed.master)
        except redis.RedisError as exc:
            raise MgetError(f"no sentinel named the master: {exc}") from None
        finally:
            for s in sentinel.sentinels:
                s.close()
        return DirectMget.connect(_node_url(parsed, host, port, parsed.db), timeout)
    return DirectMget.connect(url, timeout)


class ClusterMget:
    """MGET into preallocated arrays across a Redis Cluster's masters (one per worker)."""

    def __init__(self, parsed: RedisURL, timeout: float = 10.0) -> None:
        self.parsed, self.timeout = parsed, timeout
        self.nodes: dict[tuple[str, int], DirectMget] = {}
        self.owner: list[tuple[str, int] | None] = []
        self.known = list(parsed.hosts)
        self.redirects: Counter[str] = Counter()  # MOVED, ASK, TRYAGAIN answers followed
        self.refresh()

    def refresh(self) -> None:
        """Load the slot map from the first node that answers CLUSTER SLOTS."""
        errors = []
        for host, port in dict.fromkeys([*self.known, *self.nodes]):
            client = redis.Redis(host=host, port=port, username=self.parsed.username,
                                 password=self.parsed.password, socket_timeout=self.timeout,
                                 socket_connect_timeout=self.timeout)
            try:
                ranges = client.execute_command("CLUSTER SLOTS")
            except redis.RedisError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            finally:
                client.close()
            owner: list[tuple[str, int] | None] = [None] * 16384
            for start, end, master, *_ in ranges:
                address = ((master[0].decode() if isinstance(master[0], bytes)
                            else str(master[0])) or host, int(master[1]))
                owner[start:end + 1] = [address] * (end - start + 1)
                self.known.append(address)
            self.owner = owner
            self.known = list(dict.fromkeys(self.known))
            return
        raise MgetError("no cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _node(self, address: tuple[str, int]) -> DirectMget:
        conn = self.nodes.get(address)
        if conn is None:
            conn = DirectMget.connect(_node_url(self.parsed, *address), self.timeout)
            assert conn is not None
            self.nodes[address] = conn
        return conn

    def mget_into(self, keys: Sequence[str], targets: Sequence[memoryview | None]) -> list[int]:
        """As `DirectMget.mget_into`, for keys in any slots (see the module's doc)."""
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()), []).append(i)
        out = [MISS] * len(keys)
        todo = [(slot, idx, None) for slot, idx in groups.items()]
        for attempt in range(ATTEMPTS):
            todo = self._round(todo, keys, targets, out)
            if not todo:
                return out
            if any(r is not None and r.kind in ("TRYAGAIN", "CLUSTERDOWN") for _, _, r in todo):
                time.sleep(TRYAGAIN_PAUSE * (attempt + 1))
        log.warning("%d key group(s) still moving after %d tries: read from the files",
                    len(todo), ATTEMPTS)
        return out

    def _round(self, todo: list[tuple[int, list[int], Redirect | None]], keys: Sequence[str],
               targets: Sequence[memoryview | None],
               out: list[int]) -> list[tuple[int, list[int], Redirect | None]]:
        """Send every group's MGET (to its owner, or where an ASK pointed), then read the
        replies; returns the groups redirected, with the redirection."""
        if any(r is not None and r.kind == "MOVED" for _, _, r in todo):
            self.refresh()
        sent = []
        commands: dict[DirectMget, list[bytes]] = {}
        for slot, idx, previous in todo:
            ask = previous is not None and previous.kind == "ASK"
            address = previous.address if ask and previous.address else self.owner[slot]
            if address is None:
                raise MgetError(f"slot {slot} is not served by any node")
            conn = self._node(address)
            commands.setdefault(conn, []).append(
                DirectMget.mget_command([keys[i] for i in idx], asking=ask))
            sent.append((slot, idx, conn, ask))
        for conn, parts in commands.items():  # one send per node, whatever its slots
            conn.send_raw(b"".join(parts))
        again = []
        for slot, idx, conn, ask in sent:
            try:
                status = conn.read_mget([keys[i] for i in idx], [targets[i] for i in idx],
                                        asking=ask)
            except Redirect as redirect:
                self.redirects[redirect.kind] += 1
                again.append((slot, idx, redirect))
                continue
            for i, s in zip(idx, status):
                out[i] = s
        return again

    def close(self) -> None:
        for conn in self.nodes.values():
            conn.close()
        self.nodes.clear()
