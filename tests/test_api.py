"""The library API (syncd.api) called directly: data back, nothing printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd import api
from syncd.api.options import endpoints
from syncd.config import Settings, load_settings
from syncd.connect.redis import running_redis_url
from syncd.errors import ConfigError, SyncdError


@pytest.fixture
def settings(tmp_path: Path, mongo_url: str, db_name: str) -> Settings:
    sqlite = tmp_path / "metadata.db"
    api.sample(sqlite, seed=7)
    return load_settings({"sqlite": str(sqlite), "mongo_url": mongo_url, "database": db_name,
                          "source_id": "testhost", "timezone": "UTC",
                          "state_dir": str(tmp_path / "state")}, environ={})


def test_migrate_verify_status_return_data_and_print_nothing(settings, db, capsys):
    plan = api.migrate(settings, dry_run=True)
    assert plan.report is None and plan.plan.current == 0 and plan.plan.target >= 1
    assert not plan.embedded and repr(settings.database) in plan.target
    assert db.list_collection_names() == []  # a dry run writes nothing

    done = api.migrate(settings)
    assert done.report.to_version == plan.plan.target
    assert done.report.total("rows") > 0 and done.report.total("quarantined") == 0

    report = api.verify(settings)
    assert report.ok and all(c.ok for c in report.collections)

    status = api.status(settings)
    assert status["version"] == plan.plan.target
    assert status["params"]["source_id"] == "testhost"
    counts = {c["collection"]: c["documents"] for c in status["collections"]}
    assert counts["experiments"] > 0 and status["hdf5"]["files_total"] == 0

    best = api.experiments_best(settings, challenge=1, n=3, status=None)
    assert 0 < len(best.docs) <= 3 and best.why_none is None
    history = api.experiments_history(settings, best.docs[0]["run_id"])
    assert history["experiment"]["_id"] == best.docs[0]["_id"]
    nothing = api.experiments_search(settings, {"status": "no such status"})
    assert nothing.docs == [] and nothing.why_none

    db["experiments"].delete_one({"_id": best.docs[0]["_id"]})
    assert not api.verify(settings).ok
    assert capsys.readouterr().out == ""


def test_capture_install_status_uninstall(settings):
    path, installed = api.capture_install(settings)
    assert path == settings.sqlite and installed
    data = api.capture_status(settings)
    assert data["log"] and set(data["tables"].values()) == {"yes"}
    assert api.capture_install(settings)[1] == []  # already there
    _, removed = api.capture_uninstall(settings)
    assert removed > 0 and not api.capture_status(settings)["log"]


def test_refusals_are_the_cli_errors(settings):
    with pytest.raises(ConfigError, match="the file exists"):
        api.sample(settings.sqlite)
    api.migrate(settings)
    with pytest.raises(SyncdError, match="no syncd run is following"):
        api.reconcile(settings, ["experiments"], timeout=1)


def test_redis_url_policy_is_configured_else_a_running_embedded_one(tmp_path):
    configured = load_settings({"redis_url": "redis://127.0.0.1:1/0"}, environ={})
    assert running_redis_url(endpoints(configured)) == "redis://127.0.0.1:1/0"
    assert running_redis_url(endpoints(load_settings({"state_dir": str(tmp_path)},
                                                  environ={}))) is None
    from_env = load_settings({}, environ={"SYNCD_REDIS_URL": "redis://h:2/0"})
    assert running_redis_url(endpoints(from_env)) == "redis://h:2/0"


@pytest.mark.parametrize("command", ["migrate", "verify"])
def test_a_database_a_writer_keeps_locked_fails_a_command_at_once(settings, db, monkeypatch,
                                                                  command):
    """Only `syncd run` waits a busy database out; migrate and verify say so after the
    first schema read's retries, before MongoDB is touched (they went on, recorded the
    file and failed at the next read, after retrying a second time)."""
    import sqlite3

    import legacy_adapters.sqlite as sqlite_source
    from legacy_adapters.errors import SourceBusy

    monkeypatch.setattr(sqlite_source, "LOCKED_RETRIES", 1)  # one 5 s busy timeout, not 8
    writer = sqlite3.connect(settings.sqlite, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(SourceBusy, match="stayed locked by a writer"):
            getattr(api, command)(settings)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert db.list_collection_names() == []  # not even the file's record
