"""`syncd status` naming no source, on a database of several: every source's state.

It used to take the default id (the host name), find no such source and say "not
migrated", exit 3, on a database where two sources were migrated and fine. Now it lists
each source's health by the one source's rules and exits with the first that applies
to any of them; `--source-id` / `--sqlite` still show one source in detail.
"""

from __future__ import annotations

import json

import pytest

from syncd.checkpoint.daemon_doc import save_daemon_doc
from syncd.checkpoint.store import StateStore, utcnow
from syncd.sample import make_eeg2025
from tests.conftest import NEWEST, run_cli

pytestmark = pytest.mark.timeout(300)

RUNS = {"host-a": 5, "host-b": 3}


@pytest.fixture
def fleet(tmp_path, mongo_url, db_name, db):
    """Two sources migrated into one database; the target args that name neither."""
    where = ["--mongo-url", mongo_url, "--database", db_name, "--timezone", "UTC"]
    files = {}
    for seed, (source, runs) in enumerate(RUNS.items()):
        files[source] = tmp_path / f"{source}.db"
        make_eeg2025(files[source], runs=runs, seed=seed)
        done = run_cli("migrate", "--sqlite", files[source], "--source-id", source, *where)
        assert done.code == 0, done
    return where, files


def test_bare_status_lists_every_source_with_its_state(fleet):
    where, files = fleet
    shown = run_cli("status", *where)
    assert shown.code == 0, shown
    assert "not migrated" not in shown.out and "this source" not in shown.out
    for source in RUNS:
        assert f"{source}: no daemon running (last migrate " in shown.out, shown.out
        assert str(files[source]) in shown.out  # the fleet table's file column
    assert "2 sources and none named: --source-id ID (or --sqlite FILE)" in shown.out
    assert "health: every source is fine (2 sources) (exit 0)" in shown.out

    result = run_cli("status", "--json", *where)
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["source_id"] is None and "version" not in data
    assert [s["source_id"] for s in data["sources"]] == list(RUNS)
    assert set(data["source_details"]) == set(RUNS)
    for source, runs in RUNS.items():
        detail = data["source_details"][source]
        assert detail["version"] == NEWEST and detail["params"]["source_id"] == source
        counts = {c["collection"]: c["documents"] for c in detail["collections"]}
        assert counts["experiments"] == runs
        assert detail["daemon"] is None and detail["quarantined"] == 0


def test_one_named_source_is_shown_alone_as_before(fleet):
    where, files = fleet
    for pick in (["--source-id", "host-b"], ["--sqlite", files["host-b"]]):
        result = run_cli("status", "--json", *pick, *where)
        assert result.code == 0, result
        data = json.loads(result.out)
        assert data["source_id"] == "host-b" and data["version"] == NEWEST
        assert "source_details" not in data and len(data["sources"]) == 2
    shown = run_cli("status", "--source-id", "host-a", *where)
    assert shown.code == 0 and "this source: 'host-a'" in shown.out, shown
    missing = run_cli("status", "--source-id", "nope", *where)
    assert missing.code == 3, missing
    assert ("not migrated yet: source 'nope' has no syncd state in database "
            f"{where[3]!r}, whose sources are 'host-a', 'host-b'") in missing.out


def test_one_stopped_daemon_makes_the_fleet_exit_3_naming_it(fleet, db):
    where, _ = fleet
    # What `syncd run` writes as it stops (syncd.daemon.health): its last heartbeat.
    save_daemon_doc(StateStore(db, "host-b"), {"running": False, "heartbeat_at": utcnow(),
                                               "heartbeat_seconds": 5, "tables": []})
    shown = run_cli("status", *where)
    assert shown.code == 3, shown
    assert "host-a: no daemon running (last migrate " in shown.out
    assert "host-b: no syncd run is following" in shown.out and "(exit 3)" in shown.out
    assert "health: source 'host-b': no syncd run is following" in shown.out
    result = run_cli("status", "--json", *where)
    assert result.code == 3, result
    rows = {s["source_id"]: s for s in json.loads(result.out)["sources"]}
    assert rows["host-b"]["state"] == "stale" and rows["host-a"]["state"] == "no daemon"
    assert run_cli("status", "--source-id", "host-a", *where).code == 0
