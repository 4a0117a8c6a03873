"""Test fixtures: a real SecantusDB server (over the wire, via pymongo), real SQLite files.

The server is started once per session as a child process on a free loopback
port, exactly as syncd's embedded mode starts it. No mocks of MongoDB anywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from syncd.embedded import find_executable, free_port

# Every `syncd run` of the suite serves HTTP on a port of its own (never the fixed
# default, which another run on this host may hold); its status says which.
os.environ.setdefault("SYNCD_HTTP_LISTEN", "127.0.0.1:0")

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DB = ROOT.parent / "shared" / "fixtures" / "eeg2025" / "metadata.db"
# The newest migration version: the bundled migrations are 0001.. without gaps.
NEWEST = len(list((ROOT / "migrations").glob("[0-9][0-9][0-9][0-9]_*.py")))


def wait_port(port: int, proc: subprocess.Popen | None = None, what: str = "server",
              log: Path | None = None, timeout: float = 60.0) -> None:
    """Wait until a server listens on 127.0.0.1:`port` (fail if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            pytest.fail(f"{what} exited with code {proc.returncode}: {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's local tier (CachedWindowDataset's shards) in a directory of its own,
    never the user's ~/.cache."""
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = find_executable("secantusd-py")
    if exe is None:
        pytest.fail("secantusd-py is not installed: pip install -e '.[embedded,test]'")
    port = free_port()
    data = tmp_path_factory.mktemp("secantus")
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                             str(data / "wt"), "--log-level", "WARNING"],
                            stdout=log, stderr=log, start_new_session=True)
    wait_port(port, proc, "secantusd-py", data / "server.log")
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def client(mongo_url: str) -> Iterator[pymongo.MongoClient]:
    c = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10000)
    c.admin.command("ping")
    yield c
    c.close()


@pytest.fixture
def db_name(client: pymongo.MongoClient) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    client.drop_database(name)


@pytest.fixture
def db(client: pymongo.MongoClient, db_name: str) -> pymongo.database.Database:
    return client[db_name]


@pytest.fixture
def fixture_db(tmp_path: Path) -> Path:
    """A private copy of the real EEG2025 metadata.db (beside the project in dev and CI)."""
    if not FIXTURE_DB.exists():
        pytest.skip(f"the shared EEG2025 fixture is not beside this clone ({FIXTURE_DB})")
    copy = tmp_path / "metadata.db"
    shutil.copyfile(FIXTURE_DB, copy)
    return copy


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-1500:]!r}, err={self.err[-1500:]!r})"


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `syncd ARGS` in this process, capturing output (fast; same code as the script)."""
    from syncd.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old_env = dict(os.environ)
    if env:
        os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    return Result(code, out.getvalue(), err.getvalue())


def syncd_process(*args: str, env: dict[str, str] | None = None,
                  **kwargs: object) -> subprocess.Popen[str]:
    """Start `syncd ARGS` as a real separate process (for kill -9 and coexistence tests)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "syncd", *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=kwargs.pop("cwd", None), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def target_args(mongo_url: str, db_name: str) -> list[str]:
    return ["--mongo-url", mongo_url, "--database", db_name, "--source-id", "testhost",
            "--timezone", "UTC"]


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[tuple[object, pymongo.MongoClient]]:
    """A SecantusDB of the test's own (tests/daemon_support.py MongoProcess, which the
    test may stop and start) and a client of it; both closed after the test."""
    from tests.daemon_support import MongoProcess

    mongo = MongoProcess(tmp_path / "mongo")
    mongo.start()
    client = pymongo.MongoClient(mongo.url, serverSelectionTimeoutMS=10000)
    yield mongo, client
    client.close()
    mongo.stop()


# Real Redis fixtures of the HDF5 cache tests (tests/hdf5_support.py).
from tests.hdf5_support import own_redis, prefix, rclient, redis_url  # noqa: E402, F401
