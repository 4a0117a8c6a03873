"""A fleet: several sources (files, hosts) into one MongoDB database (issue 12)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, wait_for

DATA = ("experiments", "epochs", "checkpoints")


def _make(path: Path, runs: int, seed: int) -> Path:
    from syncd.sample import make_eeg2025

    path.parent.mkdir(parents=True, exist_ok=True)
    make_eeg2025(path, runs=runs, seed=seed)
    return path


@pytest.fixture
def shared_args(target_args: list[str]) -> list[str]:
    """The target without --source-id: each file gets the default id, host and file."""
    i = target_args.index("--source-id")
    return target_args[:i] + target_args[i + 2:]


def _own(db, source: str) -> dict[str, list]:
    """Every document of `source`, by collection, in `_id` order (to prove untouched)."""
    return {c: list(db[c].find({"_source": source}).sort("_id", 1)) for c in DATA}


def test_two_files_on_one_host_keep_both_mirrors(tmp_path, shared_args, db):
    first = _make(tmp_path / "a" / "metadata.db", runs=5, seed=1)
    other = _make(tmp_path / "b" / "metadata.db", runs=3, seed=2)
    assert run_cli("migrate", "--sqlite", first, *shared_args).code == 0
    before = _own(db, f"{socket.gethostname()}:{first.resolve()}")
    assert before["experiments"]
    result = run_cli("migrate", "--sqlite", other, *shared_args, "--json")
    assert result.code == 0, result
    assert _own(db, f"{socket.gethostname()}:{first.resolve()}") == before
    for path in (first, other):
        assert run_cli("verify", "--sqlite", path, *shared_args).code == 0
    assert db["experiments"].count_documents({}) == 8
    status = json.loads(run_cli("status", "--json", "--sqlite", other, *shared_args).out)
    assert sorted(s["path"] for s in status["sources"]) == sorted(
        str(p.resolve()) for p in (first, other))
    assert all(s["version"] == 3 and s["stale"] for s in status["sources"])  # no daemon
    assert db["experiments"].index_information()["_source_1__id_1"]


def test_to_n_in_a_shared_database_rebuilds_one_source_in_place(tmp_path, shared_args, db):
    first = _make(tmp_path / "a.db", runs=4, seed=3)
    other = _make(tmp_path / "b.db", runs=4, seed=4)
    for path in (first, other):
        assert run_cli("migrate", "--sqlite", path, *shared_args).code == 0
    theirs = _own(db, f"{socket.gethostname()}:{other.resolve()}")
    ids = {c: db[c].options() for c in DATA}
    down = run_cli("migrate", "--sqlite", first, "--to", "1", *shared_args, "--json")
    assert down.code == 0, down
    assert _own(db, f"{socket.gethostname()}:{other.resolve()}") == theirs
    assert {c: db[c].options() for c in DATA} == ids
    assert not [n for n in db.list_collection_names() if n.startswith("_syncd_stage.")]
    mine = f"{socket.gethostname()}:{first.resolve()}"
    assert db["experiments"].count_documents({"_source": mine}) == 0  # 0001 maps elsewhere
    assert {d["_v"] for d in db["training_runs"].find({"_source": mine})} == {1}
    for path in (first, other):
        assert run_cli("verify", "--sqlite", path, *shared_args).code == 0
    assert run_cli("migrate", "--sqlite", first, *shared_args).code == 0
    assert {d["_v"] for d in db["experiments"].find({"_source": mine})} == {3}
    assert _own(db, f"{socket.gethostname()}:{other.resolve()}") == theirs
    assert run_cli("verify", "--sqlite", first, *shared_args).code == 0


def _as_the_previous_version_left_it(db, source: str) -> None:
    """Strip what this version adds, leaving what the version before it wrote: plain state
    ids, changelog keyed by version, documents without `_source`/`_v`."""
    state = db["_syncd_state"]
    for doc in list(state.find({"source_id": source})):
        kind = "source_file" if doc["kind"] == "source" else doc["kind"]
        old = {k: v for k, v in doc.items() if k not in ("_id", "kind", "host", "fingerprint")}
        if kind != "source_file":
            old.pop("source_id", None)
        state.delete_one({"_id": doc["_id"]})
        state.insert_one({"_id": kind, **old})
    for entry in list(db["_syncd_changelog"].find()):
        db["_syncd_changelog"].delete_one({"_id": entry["_id"]})
        rest = {k: v for k, v in entry.items() if k not in ("_id", "version", "source_id")}
        db["_syncd_changelog"].insert_one({"_id": entry["version"], **rest})
    for name in ("_syncd_runs", "_syncd_quarantine"):
        db[name].update_many({}, {"$unset": {"source_id": ""}})
    for name in DATA:
        db[name].update_many({}, {"$unset": {"_source": "", "_v": ""}})


def test_a_database_of_the_previous_version_upgrades_in_place(tmp_path, target_args, db):
    legacy = _make(tmp_path / "metadata.db", runs=5, seed=5)
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    _as_the_previous_version_left_it(db, "testhost")
    assert db["_syncd_state"].find_one({"_id": "meta"})["params"]["source_id"] == "testhost"
    ids = {c: [d["_id"] for d in db[c].find({}, {"_id": 1}).sort("_id", 1)] for c in DATA}
    i = target_args.index("--source-id")
    plain = target_args[:i] + target_args[i + 2:]  # the new default id would differ
    result = run_cli("migrate", "--sqlite", legacy, *plain, "--json")
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["kind"] == "reconcile" and report["written"] == report["deleted"] == 0, report
    assert {c: [d["_id"] for d in db[c].find({}, {"_id": 1}).sort("_id", 1)]
            for c in DATA} == ids
    assert db["_syncd_state"].find_one({"_id": "meta"}) is None
    assert db["experiments"].count_documents({"_source": "testhost", "_v": 3}) == 5
    assert run_cli("verify", "--sqlite", legacy, *plain).code == 0


def test_two_daemons_into_one_database(tmp_path, shared_args, db):
    legacies = [_make(tmp_path / f"h{i}" / "metadata.db", runs=3, seed=10 + i)
                for i in range(2)]
    daemons = [Daemon(tmp_path / f"h{i}", path, shared_args) for i, path in enumerate(legacies)]
    try:
        for daemon in daemons:
            daemon.wait_ready(db)
        for n in range(5):
            for path in legacies:
                legacy_write(path, "INSERT INTO training_runs (challenge, status, best_val_loss)"
                             " VALUES (1, 'completed', ?)", (0.01 * n,))
        wait_for(lambda: db["experiments"].count_documents({}) == 16, 60, "both sources")
        for daemon in daemons:  # a reconcile of each source touches only its own documents
            daemon.proc.send_signal(10)  # SIGUSR1: reconcile now
        for path in legacies:
            assert run_cli("verify", "--sqlite", path, *shared_args).code == 0
        best = run_cli("experiments", "best", "--challenge", "1", "-n", "100", "--json",
                       *shared_args)
        assert best.code == 0, best
        sources = {d["_source"] for d in json.loads(best.out)}
        assert sources == {f"{socket.gethostname()}:{p.resolve()}" for p in legacies}
        status = daemons[0].status()
        assert len(status["sources"]) == 2 and not any(s["stale"] for s in status["sources"])
    finally:
        for daemon in daemons:
            daemon.stop()
