"""Honest errors and honest output (issue 10, item 12): status shows the last migrate,
passwords stay hidden whatever they contain, bad local settings are exit 2 and one
line naming the setting, a directory without state says so, and an empty answer says why.
"""

from __future__ import annotations

import json

import pytest

from syncd.redact import redact_url, register_url, scrub
from syncd.sample import make_eeg2025
from tests.conftest import run_cli


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=6)
    return path


# -- (a) the last migrate shows in syncd status ----------------------------------------------


def test_status_shows_the_last_migrate(sample, target_args):
    assert run_cli("migrate", "--sqlite", sample, *target_args).code == 0
    result = run_cli("status", *target_args, "--json")
    assert result.code == 0, result
    last = json.loads(result.out)["last_run"]
    assert last is not None and last["kind"] == "rebuild" and last["rows"] > 0, last
    text = run_cli("status", *target_args)
    assert "last migrate:" in text.out and "rebuild 0->" in text.out, text


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
