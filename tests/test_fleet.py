"""A fleet: several sources (files, hosts) into one MongoDB database (issue 12)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import NEWEST, run_cli, syncd_process
from tests.daemon_support import Daemon, legacy_write, verified, wait_for

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
    assert all(s["version"] == NEWEST and s["state"] == "no daemon" and not s["stale"]
               for s in status["sources"])  # migrated, no daemon ever ran
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
    assert {d["_v"] for d in db["experiments"].find({"_source": mine})} == {NEWEST}
    assert _own(db, f"{socket.gethostname()}:{other.resolve()}") == theirs
    assert run_cli("verify", "--sqlite", first, *shared_args).code == 0


def test_a_source_joining_during_a_swap_gets_its_documents_back(tmp_path, shared_args, db):
    """Source A, alone, swaps a rebuilt collection in by rename; source B joins and
    writes between A's last check and the rename. The rename drops B's documents, so A
    hands B a reconcile, and B's daemon writes them back."""
    first = _make(tmp_path / "a" / "metadata.db", runs=4, seed=5)
    other = _make(tmp_path / "b" / "metadata.db", runs=3, seed=6)
    assert run_cli("migrate", "--sqlite", first, *shared_args).code == 0
    pause = tmp_path / "pause"
    pause.mkdir()
    down = syncd_process("migrate", "--sqlite", first, "--to", "2", *shared_args,
                         env={"SYNCD_PAUSE_AT": "swap.before_rename",
                              "SYNCD_PAUSE_DIR": str(pause)})
    daemon = None
    try:
        wait_for(lambda: (pause / "swap.before_rename.paused").exists(), 120, "the swap")
        daemon = Daemon(tmp_path / "b", other, shared_args)
        daemon.wait_ready(db)
        theirs = f"{socket.gethostname()}:{other.resolve()}"
        assert db["experiments"].count_documents({"_source": theirs}) == 3
        (pause / "swap.before_rename.resume").touch()
        _, err = down.communicate(timeout=120)
        assert down.returncode == 0, err
        assert "joined the database" in err
        wait_for(lambda: verified(other, shared_args), 60, "the joined source repaired")
        assert db["experiments"].count_documents({"_source": theirs}) == 3
        assert run_cli("verify", "--sqlite", first, *shared_args).code == 0
    finally:
        if down.poll() is None:
            down.kill()
        if daemon is not None:
            daemon.stop()


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
    assert db["experiments"].count_documents({"_source": "testhost", "_v": NEWEST}) == 5
    assert run_cli("verify", "--sqlite", legacy, *plain).code == 0


def _writer(path: Path, count: int, errors: list[BaseException]) -> None:
    """One legacy writer: `count` runs and an epoch each, a commit at a time."""
    try:
        for n in range(count):
            run = legacy_write(path, "INSERT INTO training_runs (challenge, status, "
                               "best_val_loss) VALUES (1, 'completed', ?)", (0.01 * n,))
            legacy_write(path, "INSERT INTO epoch_history (run_id, epoch, train_loss, "
                         "val_loss) VALUES (?, 1, 0.5, ?)", (run, 0.01 * n))
            time.sleep(0.02)
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("count", [2, 4])
def test_daemons_into_one_database(tmp_path, shared_args, db, count):
    legacies = [_make(tmp_path / f"h{i}" / "metadata.db", runs=3, seed=10 + i)
                for i in range(count)]
    daemons = [Daemon(tmp_path / f"h{i}", path, shared_args) for i, path in enumerate(legacies)]
    ids = [f"{socket.gethostname()}:{p.resolve()}" for p in legacies]
    try:
        for daemon in daemons:
            daemon.wait_ready(db)
        errors: list[BaseException] = []
        writers = [threading.Thread(target=_writer, args=(path, 8, errors))
                   for path in legacies]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        assert not errors, errors
        wait_for(lambda: db["experiments"].count_documents({}) == count * 11, 90,
                 "every source's runs")
        for path in legacies:
            wait_for(lambda path=path: verified(path, shared_args), 60, f"{path} exact")
        # A reconcile of one source repairs its own documents and touches no other's.
        others = {s: _own(db, s) for s in ids[1:]}
        victim = db["epochs"].find_one({"_source": ids[0]})
        db["epochs"].delete_one({"_id": victim["_id"]})
        fixed = run_cli("reconcile", "epoch_history", "--json", *daemons[0].args)
        assert fixed.code == 0, fixed
        assert db["epochs"].find_one({"_id": victim["_id"]}) is not None
        assert {s: _own(db, s) for s in ids[1:]} == others
        for path in legacies:
            assert run_cli("verify", "--sqlite", path, *shared_args).code == 0
        best = run_cli("experiments", "best", "--challenge", "1", "-n", "1000", "--json",
                       *shared_args)
        assert best.code == 0, best
        rows = json.loads(best.out)
        assert {d["_source"] for d in rows} == set(ids)
        assert len(rows) == db["experiments"].count_documents(
            {"challenge": 1, "status": "completed", "metrics.best_val_loss": {"$type": "number"}})
        status = daemons[0].status()
        assert len(status["sources"]) == count
        assert not any(s["stale"] for s in status["sources"])
    finally:
        for daemon in daemons:
            daemon.stop()
