"""The embedded MongoDB and Redis refuse other local accounts (issue 20, item 3).

They listen on TCP loopback, which every account on the host reaches: each requires
a password syncd generated and keeps in the 0600 state directory, which the same
user's commands and CachedWindowDataset find by themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import OperationFailure

from syncd.embedded import EmbeddedMongo, EmbeddedRedis, find_executable
from syncd.errors import SyncdError
from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.hdf5_support import write_h5

NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}

# A neighbour's client: the system python (the venv's may not be executable by others)
# speaking raw RESP and OP_MSG, so it needs nothing syncd installed.
NEIGHBOUR = r"""
import socket, struct, sys

def redis(port, *args):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    s.sendall(out)
    reply = s.recv(200)
    s.close()
    return reply

def bson(pairs):
    body = b""
    for key, value in pairs:
        data = value.encode() + b"\0"
        body += b"\x02" + key.encode() + b"\0" + struct.pack("<i", len(data)) + data
    return struct.pack("<i", len(body) + 5) + body + b"\0"

def mongo(port, command, collection, db):
    msg = struct.pack("<I", 0) + b"\0" + bson([(command, collection), ("$db", db)])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)
    head = b""
    while len(head) < 16:
        head += s.recv(16 - len(head))
    body = b""
    while len(body) < struct.unpack("<i", head[:4])[0] - 16:
        body += s.recv(65536)
    s.close()
    return body

redis_port, mongo_port = int(sys.argv[1]), int(sys.argv[2])
print("REDIS PING", redis(redis_port, b"PING"))
print("REDIS KEYS", redis(redis_port, b"KEYS", b"*"))
print("MONGO FIND", mongo(mongo_port, "find", "experiments", "syncd"))
"""


def _system_python() -> str | None:
    return shutil.which("python3", path="/usr/bin:/bin")


def _as_nobody(*argv: str) -> str:
    """Run a command as the account `nobody` (skipped, visibly, where that cannot be)."""
    python = _system_python()
    if os.geteuid() != 0 or shutil.which("runuser") is None or python is None:
        pytest.skip("needs root, runuser and a system python3 to act as another user")
    done = subprocess.run(["runuser", "-u", "nobody", "--", python, *argv],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def warmed_state(tmp_path):
    """A state dir after `syncd warm` with the embedded MongoDB and Redis."""
    h5 = tmp_path / "h5"
    h5.mkdir()
    write_h5(h5 / "a.h5", n=9)
    state = tmp_path / "state"
    warmed = run_cli("warm", "--hdf5-dir", h5, "--state-dir", state, env=NO_URL)
    assert warmed.code == 0, warmed
    return state, h5 / "a.h5", warmed


def test_other_users_are_refused_and_the_owner_needs_no_password(warmed_state):
    torch = pytest.importorskip("torch")
    from syncd.client.dataset import CachedWindowDataset

    state, h5_file, warmed = warmed_state
    mongo, redis = EmbeddedMongo(state), EmbeddedRedis(state)
    mongo.start()
    redis.start()
    try:
        # Another local account reaches the ports and gets nothing.
        said = _as_nobody("-c", NEIGHBOUR, str(redis.port), str(mongo.port))
        lines = dict(line.split(" ", 2)[1:] for line in said.splitlines())
        assert lines["PING"].startswith("b'-NOAUTH"), said
        assert lines["KEYS"].startswith("b'-NOAUTH"), said
        assert "Unauthorized" in lines["FIND"] and "firstBatch" not in lines["FIND"], said

        secrets = [(state / kind / "credentials").read_text().strip()
                   for kind in ("mongo", "redis")]
        for kind in ("mongo", "redis"):
            assert _mode(state / kind / "credentials") == 0o600
        assert _mode(state / "redis" / "redis.conf") == 0o600  # it names the password

        # The same user: commands and the Dataset find the servers, no password typed.
        status = run_cli("status", "--json", "--state-dir", state, env=NO_URL)
        assert status.code == 3, status  # read fine; no daemon follows this database
        hdf5 = json.loads(status.out)["hdf5"]
        assert hdf5["windows_cached"] == 9 and hdf5["memory"]["redis_used_memory"] > 0
        stats = run_cli("cache", "stats", "--state-dir", state, env=NO_URL)
        assert stats.code == 0, stats
        ds = CachedWindowDataset([h5_file], state_dir=state, local_bytes=0)
        batch = ds.__getitems__(list(range(9)))
        assert len(batch) == 9 and isinstance(batch[0][0], torch.Tensor)
        assert ds.cache_counts() == {"hits": 9, "misses": 0, "bad": 0}  # from Redis
        logs = [p.read_text(errors="replace") for p in (state / "logs").iterdir()]
        for text in [warmed.out, warmed.err, status.out, status.err, stats.out, stats.err,
                     *logs]:
            for secret in secrets:
                assert secret not in text
    finally:
        redis.stop()
        mongo.stop()


def _old_server(data: Path) -> tuple[subprocess.Popen, int]:
    """SecantusDB as the syncd before passwords ran it: no --auth."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([find_executable("secantusd-py") or "secantusd-py", "--host",
                             "127.0.0.1", "--port", str(port), "--storage-path", str(data),
                             "--log-level", "WARNING"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("secantusd-py did not start")


def test_a_state_dir_of_the_previous_version_gets_a_password_and_keeps_its_data(tmp_path):
    if find_executable("secantusd-py") is None:
        pytest.skip("secantusd-py is not installed")
    state = tmp_path / "state"
    data = state / "mongo" / "data"
    data.mkdir(parents=True)
    proc, port = _old_server(data)
    try:
        old = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")
        old.syncd.kept.insert_one({"_id": "from before"})
        old.zzz.command("createUser", "neighbour", pwd="x", roles=["root"])  # planted
        old.close()
    finally:
        proc.terminate()
        proc.wait(30)
    sample = tmp_path / "metadata.db"
    make_eeg2025(sample, runs=2)
    assert run_cli("migrate", "--sqlite", sample, "--state-dir", state, env=NO_URL).code == 0

    mongo = EmbeddedMongo(state)
    url = mongo.start()
    try:
        client = pymongo.MongoClient(url)
        assert client.syncd.kept.find_one() == {"_id": "from before"}
        assert client.syncd.experiments.count_documents({}) == 2
        users = {(u["db"], u["user"]) for u in client.admin["system.users"].find()}
        assert users == {("admin", "syncd")}  # the planted user is gone
        client.close()
        anonymous = pymongo.MongoClient(f"mongodb://127.0.0.1:{mongo.port}/"
                                        "?directConnection=true")
        with pytest.raises(OperationFailure) as refused:
            anonymous.syncd.kept.find_one()
        assert refused.value.code == 13  # Unauthorized
        anonymous.close()
    finally:
        mongo.stop()


def test_a_new_data_directory_written_by_another_process_during_setup_stays_refused(tmp_path):
    """A new data directory that another process wrote to while it had no password yet is
    refused at the start that sets the password, and at every start after it (it holds
    data now, but its setup never ended), until it is removed."""
    if find_executable("secantusd-py") is None:
        pytest.skip("secantusd-py is not installed")
    state = tmp_path / "state"
    data = state / "mongo" / "data"
    data.mkdir(parents=True)
    proc, port = _old_server(data)  # what a neighbour writes in the window: a database
    try:
        neighbour = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")
        neighbour.planted.things.insert_one({"_id": 1})
        neighbour.close()
    finally:
        proc.terminate()
        proc.wait(30)
    (state / "mongo" / "setup-of-new-data").touch()  # the setup of the new directory began
    for _ in range(2):  # refused, and refused again on the next start
        mongo = EmbeddedMongo(state)
        with pytest.raises(SyncdError, match="another process wrote to the new embedded"):
            mongo.start()
        assert not (state / "mongo" / "users-set").exists()
    shutil.rmtree(data)  # as the message says: remove it and start again
    mongo = EmbeddedMongo(state)
    url = mongo.start()
    try:
        client = pymongo.MongoClient(url)
        assert "planted" not in client.list_database_names()
        client.close()
        assert not (state / "mongo" / "setup-of-new-data").exists()
    finally:
        mongo.stop()


def _unopenable(data: Path) -> None:
    """A data directory WiredTiger refuses at open, as one is left when syncd is killed
    while a new server makes its first tables (SecantusDB then fails to open a table it
    was creating)."""
    data.mkdir(parents=True)
    (data / "WiredTiger.turtle").write_text("cut short\n")


def test_a_new_data_directory_cut_short_that_no_longer_opens_is_made_again(tmp_path):
    """kill -9 of syncd during its first start leaves a new data directory whose setup
    never ended; if the server cannot open it, the next start makes it again (it held
    nothing of syncd's) instead of failing at every start."""
    if find_executable("secantusd-py") is None:
        pytest.skip("secantusd-py is not installed")
    state = tmp_path / "state"
    _unopenable(state / "mongo" / "data")
    (state / "mongo" / "setup-of-new-data").touch()
    mongo = EmbeddedMongo(state)
    url = mongo.start()
    try:
        client = pymongo.MongoClient(url)
        client.syncd.kept.insert_one({"_id": 1})
        assert client.syncd.kept.find_one() == {"_id": 1}
        client.close()
        assert not (state / "mongo" / "setup-of-new-data").exists()
        assert (state / "mongo" / "users-set").exists()
    finally:
        mongo.stop()


def test_a_data_directory_in_use_that_does_not_open_is_never_removed(tmp_path):
    """Only a setup cut short is made again: a data directory that was set up (it may
    hold the user's mirror) and does not open is an error naming its log, kept as it is."""
    if find_executable("secantusd-py") is None:
        pytest.skip("secantusd-py is not installed")
    state = tmp_path / "state"
    mongo = EmbeddedMongo(state)
    mongo.start()
    mongo.stop()
    data = state / "mongo" / "data"
    (data / "WiredTiger.turtle").write_text("damaged\n")
    with pytest.raises(SyncdError, match="exited at start"):
        EmbeddedMongo(state).start()
    assert (data / "WiredTiger.turtle").read_text() == "damaged\n"
    assert (data / "WiredTiger.wt").exists()
