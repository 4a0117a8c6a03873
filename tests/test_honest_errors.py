"""Honest errors and honest output (issue 10, item 12): status shows the last migrate,
passwords stay hidden whatever they contain, bad local settings are exit 2 and one
line naming the setting, a directory without state says so, and an empty answer says why.
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from syncd.redact import redact_url, register_url, scrub
from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=6)
    return path


# -- (a) the last migrate shows in syncd status ----------------------------------------------


def test_status_shows_the_last_migrate(sample, target_args):
    assert run_cli("migrate", "--sqlite", sample, *target_args).code == 0
    result = run_cli("status", *target_args, "--json")
    assert result.code == 0, result  # migrated; no daemon ever ran, so none is stale
    last = json.loads(result.out)["last_run"]
    assert last is not None and last["kind"] == "rebuild" and last["rows"] > 0, last
    text = run_cli("status", *target_args)
    assert "last migrate:" in text.out and "rebuild 0->" in text.out, text


def test_status_after_the_quick_start_says_no_daemon_runs_and_exits_0(sample, target_args,
                                                                      tmp_path, db):
    """Right after `syncd migrate` (the quick start) no daemon has ever followed the
    source: status says so and how to follow changes, and is healthy; a daemon that ran
    and stopped (or died) is STALE, exit 3, as before (issue 21 item 7)."""
    assert run_cli("migrate", "--sqlite", sample, *target_args).code == 0
    result = run_cli("status", *target_args)
    assert result.code == 0, result
    assert "health: no daemon running (last migrate 20" in result.out, result
    assert "`syncd run` follows changes) (exit 0)" in result.out, result
    assert "STALE" not in result.out and "no daemon" in result.out.split("this source")[0]
    # nothing follows the source, so its lag is unknown ("-"), not a reassuring 0.0
    row = result.out.splitlines()[3].split()
    assert row[-5:] == ["-", "-", "0", "no", "daemon"], result  # lag rows, lag s, quarantined
    source = json.loads(run_cli("status", *target_args, "--json").out)["sources"][0]
    assert source["lag_seconds"] is None and source["lag_rows"] is None, source
    daemon = Daemon(tmp_path, sample, target_args)
    try:
        daemon.wait_ready(db)
    finally:
        assert daemon.stop()[0] == 0
    stopped = run_cli("status", *target_args)
    assert stopped.code == 3, stopped
    assert "STALE" in stopped.out and "no fresh heartbeat" in stopped.out, stopped


# -- (b) a password with a raw "@" (or ":" or "/") is masked whole ---------------------------


@pytest.mark.parametrize("url, shown", [
    ("redis://:p@ss@host:6379/0", "redis://:***@host:6379/0"),
    ("mongodb://admin:P4ss@P4ss@h1:27017,h2/db?replicaSet=rs",
     "mongodb://admin:***@h1:27017,h2/db?replicaSet=rs"),
    ("mongodb+srv://user:s3@cret@cluster0.example.net/db",
     "mongodb+srv://user:***@cluster0.example.net/db"),
    ("rediss://:a:b@c@cache.example.net:6380/1", "rediss://:***@cache.example.net:6380/1"),
    ("redis://:pa/ss?w@host/0", "redis://:***@host/0"),
    ("mongodb://me@corp.example:pw@host/", "mongodb://me@corp.example:***@host/"),
    ("mongodb://127.0.0.1:27017/db", "mongodb://127.0.0.1:27017/db"),
    ("redis://user@host/0", "redis://user@host/0"),
])
def test_redact_masks_up_to_the_last_at(url, shown):
    assert redact_url(url) == shown
    assert redact_url(f"failed: '{url}' (timeout)") == f"failed: '{shown}' (timeout)"


def test_a_raw_at_in_a_password_never_leaks_from_the_cli(tmp_path):
    secret = "Tail0fP4ss"
    url = f"mongodb://admin:x@{secret}@127.0.0.1:9/?directConnection=true"
    result = run_cli("status", "--mongo-url", url, "--mongo-timeout", "0.3",
                     "--state-dir", tmp_path / "st")
    assert result.code == 2, result
    assert secret not in result.err + result.out, result
    assert "--mongo-url mongodb://admin:***@127.0.0.1:9" in result.err, result
    register_url("redis://:one@two@host/0")
    assert scrub("the password one@two was refused") == "the password *** was refused"


# -- (c) an unusable state dir or Redis is exit 2 and one line naming the setting ------------


NO_URL = {"SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": ""}


def _one_line(result, setting: str) -> str:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("syncd: error: ") and setting in lines[0], \
        result
    assert re.search(r"\b[A-Za-z]+(Error|Exception): ", lines[0]) is None, result  # no raw type
    return lines[0]


def test_a_state_dir_that_cannot_be_made_is_a_config_error(tmp_path, sample):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli("migrate", "--sqlite", sample, "--state-dir", blocker / "state", env=NO_URL)
    _one_line(result, f"--state-dir {blocker / 'state'}")


def test_a_default_state_dir_that_cannot_be_made_names_the_directory(tmp_path, sample,
                                                                      monkeypatch):
    (tmp_path / ".syncd").write_text("")  # as root, only this stops a mkdir of ./.syncd
    monkeypatch.chdir(tmp_path)
    result = run_cli("migrate", "--sqlite", sample, env={**NO_URL, "SYNCD_STATE_DIR": ""})
    line = _one_line(result, "--state-dir .syncd")
    assert str(tmp_path) in line, line


def test_an_unreachable_redis_url_is_a_config_error(tmp_path):
    from syncd.embedded import free_port

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    result = run_cli("events", "--redis-url", url, "--count", "1", "--redis-timeout", "0.5")
    line = _one_line(result, "--redis-url redis://:***@127.0.0.1:")
    assert "s3cret" not in line


# -- (d) status where there is no state creates nothing and says where it looked -------------


def test_status_without_state_creates_nothing_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("status", env={**NO_URL, "SYNCD_STATE_DIR": ""})
    line = _one_line(result, "--state-dir .syncd")
    assert "no syncd state" in line and "--mongo-url" in line and "--database" in line, line
    assert str(tmp_path) in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["verify", "reconcile"])
def test_verify_and_reconcile_in_the_wrong_directory_create_nothing(tmp_path, monkeypatch,
                                                                    sample, command):
    """Run from another directory than `syncd migrate`'s, they made a new, empty embedded
    MongoDB there and said `run syncd migrate` (which would start a second mirror); now
    they say where they looked and how to point at the data, as status does."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run_cli(command, "--sqlite", sample, env={**NO_URL, "SYNCD_STATE_DIR": ""})
    line = _one_line(result, "--state-dir .syncd")
    assert "no syncd state" in line and "--mongo-url" in line and str(work) in line, line
    assert list(work.iterdir()) == []


def test_status_with_a_mongo_url_needs_no_state_dir(tmp_path, target_args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("status", *target_args)
    assert result.code == 3, result  # no syncd run follows this database
    assert "not migrated yet" in result.out and "--database" in result.out, result
    assert list(tmp_path.iterdir()) == []


# -- (e) an empty answer says what was searched and why nothing matched ----------------------


def test_best_of_a_fixture_where_every_run_is_running_says_why(fixture_db, target_args):
    assert run_cli("migrate", "--sqlite", fixture_db, *target_args).code == 0
    result = run_cli("experiments", "best", "--challenge", "2", *target_args)
    assert result.code == 0, result
    lines = result.out.strip().splitlines()
    assert len(lines) == 1, result  # one line, no empty table
    # no run has a loss at all: said at once, not after a hint to try --status ''
    assert "no experiment of challenge 2 has a best_val_loss yet" in lines[0], lines
    assert "37 running" in lines[0] and "experiments search" in lines[0], lines
    assert "--status" not in lines[0], lines
    any_status = run_cli("experiments", "best", "--challenge", "2", "--status", "", *target_args)
    assert "has a best_val_loss yet" in any_status.out and "37 running" in any_status.out
    # times to the millisecond MongoDB keeps, not str()'s six digits ending in 000
    shown = run_cli("experiments", "history", "3", *target_args)
    assert "2025-10-19T18:48:21.465Z " in shown.out and "21.465000" not in shown.out, shown
    # a running run with a loss: the completed ones are none, and --status '' shows it
    conn = sqlite3.connect(fixture_db)
    with conn:
        conn.execute("UPDATE training_runs SET best_val_loss = 0.5 WHERE run_id = 3")
    conn.close()
    name = target_args[target_args.index("--database") + 1]
    other_db = [a if a != name else name + "_loss" for a in target_args]
    assert run_cli("migrate", "--sqlite", fixture_db, *other_db).code == 0
    result = run_cli("experiments", "best", "--challenge", "2", *other_db)
    assert "no completed experiments" in result.out and "--status ''" in result.out, result
    other = run_cli("experiments", "best", "--challenge", "1", *target_args)
    assert "no experiments for challenge 1" in other.out and "challenge 2" in other.out, other
    search = run_cli("experiments", "search", '{"status": "completed"}', *target_args)
    assert search.code == 0 and "no experiments match" in search.out, search
    assert "37 running" in search.out, search
    assert json.loads(run_cli("experiments", "best", "--challenge", "2", "--json",
                              *target_args).out) == []


def test_a_filter_the_server_refuses_is_one_line_and_exit_2(sample, target_args):
    """`experiments search '{"$where": ...}'` (or an unknown operator): one line saying
    the filter was refused and why, exit 2 as other bad input, never pymongo's dict."""
    assert run_cli("migrate", "--sqlite", sample, *target_args).code == 0
    for query in ('{"$where": "1"}', '{"$foo": 1}'):
        result = run_cli("experiments", "search", query, *target_args)
        assert result.code == 2, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"syncd: error: filter {query}: "
                                                       "refused by MongoDB ("), result
        assert "full error" not in result.err and "errmsg" not in result.err, result
    past = run_cli("experiments", "search", '{"$where": "1"}', "--as-of", "now", *target_args)
    assert past.code == 2 and "$where is not supported in an as-of query" in past.err, past


def test_best_in_an_empty_database_says_so(target_args):
    result = run_cli("experiments", "best", "--challenge", "2", *target_args)
    assert result.code == 0, result
    assert result.out.startswith("no experiments in database"), result
    assert "--database" in result.out, result
