"""`syncd source remove ID`: one source out of a shared database, the others untouched,
its history kept (restore still works) unless --drop-history; refused while a
`syncd run` holds its lease (docs/fleet.md, "Removing a source")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import run_cli
from tests.daemon_support import Daemon
from tests.restore_support import dump

HISTORY = ("_syncd_history", "_syncd_schemas", "_syncd_history_kept")
STATE = ("_syncd_state", "_syncd_changelog", "_syncd_runs", "_syncd_quarantine")


def _make(path: Path, seed: int) -> Path:
    from syncd.sample import make_eeg2025

    path.parent.mkdir(parents=True, exist_ok=True)
    make_eeg2025(path, runs=3, seed=seed)
    return path


def _as(args: list[str], source: str) -> list[str]:
    i = args.index("--source-id")
    return [*args[:i], "--source-id", source, *args[i + 2:]]


def _held(db: Any, source: str) -> dict[str, list[Any]]:
    """Everything stored for `source`, collection by collection, sorted by `_id`."""
    out: dict[str, list[Any]] = {}
    for name in sorted(db.list_collection_names()):
        field = ("source" if name in HISTORY else "source_id" if name in STATE
                 else "_source")
        docs = sorted(db[name].find({field: source}), key=lambda d: str(d["_id"]))
        if docs:
            out[name] = docs
    return out


def _two_sources(tmp_path: Path, target_args: list[str], db: Any) -> dict[str, Path]:
    """Sources A and B with the same tables and keys (different values), each with a
    quarantined row and scan marks, in one database."""
    from syncd.checkpoint.positions import save_scan_marks
    from syncd.checkpoint.store import StateStore

    files = {k: _make(tmp_path / k / "metadata.db", seed=i) for i, k in enumerate("AB")}
    for k, path in files.items():
        assert run_cli("migrate", "--sqlite", path, *_as(target_args, k)).code == 0
        store = StateStore(db, k)
        store.quarantine_rows([{"_id": f"{k}:epochs:1", "table": "epochs", "key": [1],
                                "error": "odd"}])
        save_scan_marks(store, {"epochs": 1})
    return files


def _restored(tmp_path: Path, target_args: list[str], source: str, name: str) -> Any:
    out = tmp_path / f"{name}.db"
    return run_cli("restore", "--to", out, "--source", source, *target_args), out


def test_removing_a_source_leaves_the_other_exact_and_keeps_its_history(tmp_path,
                                                                         target_args, db):
    files = _two_sources(tmp_path, target_args, db)
    before_a, before_b = _held(db, "A"), _held(db, "B")
    assert set(before_a) >= {"experiments", "epochs", "_syncd_state", "_syncd_quarantine",
                             "_syncd_changelog", "_syncd_history", "_syncd_schemas"}

    dry = run_cli("source", "remove", "A", *target_args)
    assert dry.code == 0, dry
    assert "dry run, nothing deleted" in dry.out and "would delete" in dry.out, dry
    assert _held(db, "A") == before_a  # nothing deleted
    plan = json.loads(run_cli("source", "remove", "A", "--json", *target_args).out)
    assert plan["dry_run"] and plan["history_kept"]
    assert plan["documents"] == {name: len(docs) for name, docs in before_a.items()
                                 if not name.startswith("_syncd")}
    assert plan["state"]["_syncd_quarantine"] == 1
    assert plan["state"]["_syncd_state scan"] == 1
    assert plan["state"]["_syncd_state source"] == 1
    assert plan["history"] == {name: len(before_a[name]) for name in HISTORY
                               if name in before_a}

    done = run_cli("source", "remove", "A", "--yes", *target_args)
    assert done.code == 0, done
    assert "removed" in done.out and "history kept" in done.out, done
    left = _held(db, "A")
    assert set(left) == set(HISTORY) & set(before_a), left  # history alone is left
    assert all(left[name] == before_a[name] for name in left)
    assert _held(db, "B") == before_b  # not one of B's documents changed
    assert run_cli("verify", "--sqlite", files["B"], *_as(target_args, "B")).code == 0
    result, out = _restored(tmp_path, target_args, "A", "A-kept")
    assert result.code == 0, result
    assert dump(out) == dump(files["A"])
    status = run_cli("status", "--json", *_as(target_args, "B"))
    assert [s["source_id"] for s in json.loads(status.out)["sources"]] == ["B"], status

    # still known by its history: --drop-history forgets it entirely
    gone = run_cli("source", "remove", "A", "--yes", "--drop-history", *target_args)
    assert gone.code == 0, gone
    assert _held(db, "A") == {}
    assert _held(db, "B") == before_b
    result, _ = _restored(tmp_path, target_args, "A", "A-gone")
    assert result.code == 2 and "source 'A' has no history" in result.err, result
    result, out = _restored(tmp_path, target_args, "B", "B")
    assert result.code == 0 and dump(out) == dump(files["B"]), result


def test_an_unknown_source_is_refused_naming_the_known_ones(tmp_path, target_args, db):
    _two_sources(tmp_path, target_args, db)
    before = {name: db[name].count_documents({}) for name in db.list_collection_names()}
    result = run_cli("source", "remove", "host-c", "--yes", *target_args)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "'host-c'" in lines[0], result
    assert "known sources: 'A', 'B'" in lines[0], result
    assert {name: db[name].count_documents({}) for name in db.list_collection_names()} \
        == before


def test_drop_history_at_once(tmp_path, target_args, db):
    _two_sources(tmp_path, target_args, db)
    before_b = _held(db, "B")
    dry = json.loads(run_cli("source", "remove", "A", "--drop-history", "--json",
                             *target_args).out)
    assert dry["dry_run"] and not dry["history_kept"] and dry["history"]["_syncd_history"]
    assert run_cli("source", "remove", "A", "--yes", "--drop-history",
                   *target_args).code == 0
    assert _held(db, "A") == {} and _held(db, "B") == before_b
    result, _ = _restored(tmp_path, target_args, "A", "A")
    assert result.code == 2 and "source 'A' has no history" in result.err, result
    again = run_cli("source", "remove", "A", *target_args)
    assert again.code == 2 and "known sources: 'B'" in again.err, again


def test_refused_while_a_syncd_run_holds_the_lease(tmp_path, target_args, db):
    legacy = _make(tmp_path / "A" / "metadata.db", seed=3)
    args = _as(target_args, "A")
    daemon = Daemon(tmp_path, legacy, args)
    try:
        daemon.wait_ready(db)
        before = _held(db, "A")
        for extra in ((), ("--yes",), ("--yes", "--drop-history")):
            refused = run_cli("source", "remove", "A", *extra, *target_args)
            assert refused.code == 1, refused
            assert "not removed" in refused.err and "`syncd run`" in refused.err, refused
            assert f"pid {daemon.proc.pid}" in refused.err, refused
        after = _held(db, "A")
        assert {k: len(v) for k, v in after.items() if not k.startswith("_syncd")} == \
            {k: len(v) for k, v in before.items() if not k.startswith("_syncd")}
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-2000:]
    done = run_cli("source", "remove", "A", "--yes", *target_args)
    assert done.code == 0, done
    assert set(_held(db, "A")) <= set(HISTORY)
