"""A fleet against hostile operators: sources with the same tables and keys, a file put
back from a backup or copied over, odd source ids (issue 23, the fleet side)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for
from tests.restore_support import backup, dump, moment


def _make(path: Path, runs: int, seed: int) -> Path:
    from syncd.sample import make_eeg2025

    path.parent.mkdir(parents=True, exist_ok=True)
    make_eeg2025(path, runs=runs, seed=seed)
    return path


def _as(args: list[str], source: str) -> list[str]:
    """`args` with another --source-id."""
    i = args.index("--source-id")
    return [*args[:i], "--source-id", source, *args[i + 2:]]


def _restored(tmp: Path, name: str, args: list[str], at: str, source: str) -> dict:
    out = tmp / f"restored-{name}.db"
    result = run_cli("restore", "--to", out, "--as-of", at, "--source", source, *args)
    assert result.code == 0, result
    return dump(out)


@pytest.mark.parametrize("how", ["replaced", "copied-over", "replaced-then-written",
                                 "copied-over-then-written"])
def test_a_file_put_back_from_a_backup_is_reconciled_not_resumed(tmp_path, target_args,
                                                                 db, how):
    """A backup put back while syncd is stopped: its change log is behind the saved
    position (same log id), so resuming would skip the writes made after it until the
    log passes that position. The mirror and history must follow the file put back."""
    legacy = _make(tmp_path / "metadata.db", runs=3, seed=1)
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        before = moment()
        backup(legacy, tmp_path / "bak.db")
        shutil.copyfile(tmp_path / "bak.db", tmp_path / "before.db")
        for n in range(6):
            legacy_write(legacy, "UPDATE training_runs SET best_val_loss = ? "
                         "WHERE run_id = 1", (n * 0.1,))
        legacy_write(legacy, "DELETE FROM epoch_history WHERE id = 2")
        wait_for(lambda: verified(legacy, target_args), 60, "the first file exact")
        later = moment()
        backup(legacy, tmp_path / "later.db")
    finally:
        daemon.stop()
    if how.startswith("replaced"):  # a new inode: a restore tool, or `mv`
        os.replace(tmp_path / "bak.db", legacy)
    else:  # the same inode: `cp backup metadata.db`
        shutil.copyfile(tmp_path / "bak.db", legacy)
    if how.endswith("written"):  # the scripts ran on before syncd did: the put-back
        for n in range(12):      # log passes the saved position, with other entries
            legacy_write(legacy, "UPDATE training_runs SET status = ? WHERE run_id = 2",
                         (f"s{n}",))
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        for _ in range(3):
            legacy_write(legacy, "INSERT INTO training_runs (challenge, status) "
                         "VALUES (1, 'running')")
        wait_for(lambda: verified(legacy, target_args), 30, "the file put back exact")
        now = moment()
        backup(legacy, tmp_path / "now.db")
    finally:
        _, err = daemon.stop()
    if how.startswith("copied-over"):  # the change log told: said once, as a warning
        assert err.count("went back") == 1, err
    source = target_args[target_args.index("--source-id") + 1]
    for name, at in (("before", before), ("later", later), ("now", now)):
        got = _restored(tmp_path, name, target_args, at, source)
        assert got == dump(tmp_path / f"{name}.db"), name


def test_two_hosts_files_with_the_same_keys_keep_their_own_history(tmp_path, target_args, db):
    """Two hosts' metadata.db of one project (same tables, same primary keys, other
    values), each followed by its own `syncd run` into one database while both are
    written: each source's restore, as-of answers and verify are its own."""
    a = _make(tmp_path / "a" / "metadata.db", runs=4, seed=1)
    b = _make(tmp_path / "b" / "metadata.db", runs=4, seed=2)
    args = {"A": _as(target_args, "host-a:/data/metadata.db"),
            "B": _as(target_args, "host-b:/data/metadata.db")}
    files = {"A": a, "B": b}
    daemons = {k: Daemon(tmp_path / k.lower(), files[k], args[k]) for k in files}
    try:
        for daemon in daemons.values():
            daemon.wait_ready(db)
        for k, path in files.items():  # the same run ids, other values
            legacy_write(path, "UPDATE training_runs SET status = ?, best_val_loss = ? "
                         "WHERE run_id = 2", (f"done-{k}", 0.5 if k == "A" else 0.1))
        for k in files:
            wait_for(lambda k=k: verified(files[k], args[k]), 60, f"{k} exact")
        mid = moment()
        for k in files:
            backup(files[k], tmp_path / f"{k}-mid.db")
        for k, path in files.items():
            legacy_write(path, "DELETE FROM training_runs WHERE run_id = 3")
            legacy_write(path, "INSERT INTO training_runs (run_id, challenge, status, "
                         "best_val_loss) VALUES (9, 1, 'completed', ?)",
                         (0.01 if k == "A" else 0.02,))
        for k in files:
            wait_for(lambda k=k: verified(files[k], args[k]), 60, f"{k} exact again")
        now = moment()
        for k in files:
            backup(files[k], tmp_path / f"{k}-now.db")
    finally:
        for daemon in daemons.values():
            daemon.stop()
    for k in files:
        source = args[k][args[k].index("--source-id") + 1]
        for name, at in (("mid", mid), ("now", now)):
            got = _restored(tmp_path, f"{k}-{name}", args[k], at, source)
            assert got == dump(tmp_path / f"{k}-{name}.db"), (k, name)
    # as-of answers per source: run 2's status at `mid`, run 9 only after it
    for k in files:
        source = args[k][args[k].index("--source-id") + 1]
        hist = run_cli("experiments", "history", "2", "--as-of", mid, "--source", source,
                       "--json", *args[k])
        assert hist.code == 0, hist
        shown = json.loads(hist.out)
        assert shown["experiment"]["status"] == f"done-{k}"
        assert {e["_source"] for e in [shown["experiment"], *shown["epochs"]]} == {source}
        best = run_cli("experiments", "best", "--challenge", "1", "-n", "100", "--as-of",
                       now, "--source", source, "--json", *args[k])
        assert best.code == 0, best
        rows = json.loads(best.out)
        assert rows and {r["_source"] for r in rows} == {source}
        assert 9 in {r["run_id"] for r in rows}
    # no --source: run 2 is in both, so the answer is refused, naming both
    both = run_cli("experiments", "history", "2", "--as-of", mid, *args["A"])
    assert both.code != 0 and "host-a:/data/metadata.db" in both.err \
        and "host-b:/data/metadata.db" in both.err, both


def test_an_as_of_answer_after_the_client_that_asked_before_was_closed(
        tmp_path, target_args, mongo_url, db):
    """Two clients of one server are equal (pymongo compares their settings), so the
    as-of views kept per client must be kept per client object: a client closed after
    asking (each CLI command closes its own) must not lend its view to the next one."""
    import pymongo

    from syncd.client.tracker import Tracker

    for k in "AB":
        path = _make(tmp_path / k / "metadata.db", runs=4, seed=ord(k))
        assert run_cli("migrate", "--sqlite", path, *_as(target_args, k)).code == 0
    at = moment()
    for k in "AB":
        first = pymongo.MongoClient(mongo_url)
        Tracker(first[db.name], source=k, as_of=at).best_experiments(1)  # `best`, then
        first.close()                                                    # `history`
        second = pymongo.MongoClient(mongo_url)
        try:
            got = Tracker(second[db.name], source=k, as_of=at).history("2")
        finally:
            second.close()
        assert got["experiment"]["_source"] == k and got["epochs"]


def test_one_sources_prune_leaves_the_others_history(tmp_path, target_args, db):
    """`[history] keep` pruning source A (HistoryStore.prune, what A's daemon runs) removes
    none of B's versions; a moment before A's cutoff is refused for A, and for every
    source at once in a line that says the others can be asked alone; B alone answers."""
    from syncd.sinks.history import HistoryStore
    from syncd.sinks.julian import julian_day_now

    files = {k: _make(tmp_path / k / "metadata.db", runs=3, seed=i)
             for i, k in enumerate("AB")}
    daemons = {k: Daemon(tmp_path / k, f, _as(target_args, k)) for k, f in files.items()}
    try:
        for daemon in daemons.values():
            daemon.wait_ready(db)
        early = moment()
        backup(files["B"], tmp_path / "B-early.db")
        for path in files.values():
            for n in range(3):
                legacy_write(path, "UPDATE training_runs SET status = ? WHERE run_id = 1",
                             (f"s{n}",))
        for k, path in files.items():
            wait_for(lambda k=k, path=path: verified(path, _as(target_args, k)), 60, "exact")
    finally:
        for daemon in daemons.values():
            daemon.stop()
    time.sleep(1.1)  # the cutoff is moved back to a whole second: past `early`
    kept_b = list(db["_syncd_history"].find({"source": "B"}).sort("_id", 1))
    assert HistoryStore(db, "A").prune(julian_day_now()) > 0
    assert list(db["_syncd_history"].find({"source": "B"}).sort("_id", 1)) == kept_b
    assert _restored(tmp_path, "B-early", target_args, early, "B") == \
        dump(tmp_path / "B-early.db")
    refused = run_cli("restore", "--to", tmp_path / "A.db", "--as-of", early, "--source",
                      "A", *target_args)
    assert refused.code == 2 and "source 'A'" in refused.err, refused
    both = run_cli("experiments", "best", "--challenge", "1", "--as-of", early,
                   *target_args)
    line = both.err.strip().splitlines()[-1]
    assert both.code == 2 and "source 'A'" in line and "'B'" in line \
        and "--source" in line, both
    alone = run_cli("experiments", "history", "1", "--as-of", early, "--source", "B",
                    "--json", *target_args)
    assert alone.code == 0, alone
    assert json.loads(alone.out)["experiment"]["_source"] == "B"


def test_a_source_removed_from_the_fleet_keeps_its_history_apart(tmp_path, target_args, db):
    """A source retired (`syncd source remove A --yes`, docs/fleet.md "Removing a
    source": its state and documents deleted, its history kept) still restores alone,
    and its history, which no model projects any more, does not break the as-of
    answers of the others."""
    files = {k: _make(tmp_path / k / "metadata.db", runs=3, seed=i)
             for i, k in enumerate("AB")}
    for k, path in files.items():
        assert run_cli("migrate", "--sqlite", path, *_as(target_args, k)).code == 0
    at = moment()
    backup(files["A"], tmp_path / "A-at.db")
    removed = run_cli("source", "remove", "A", "--yes", *target_args)
    assert removed.code == 0, removed
    assert not db["_syncd_state"].find_one({"source_id": "A"})
    assert _restored(tmp_path, "A-at", target_args, at, "A") == dump(tmp_path / "A-at.db")
    best = run_cli("experiments", "best", "--challenge", "1", "-n", "100", "--as-of", at,
                   *target_args)
    assert best.code == 0, best
    assert "source A keeps history but no migrated model" in best.out, best
    rows = json.loads(run_cli("experiments", "best", "--challenge", "1", "-n", "100",
                              "--as-of", at, "--json", *target_args).out)
    assert rows and {r["_source"] for r in rows} == {"B"}
