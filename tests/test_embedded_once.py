"""A command with `--as-of` starts the embedded MongoDB once, not once per query.

`syncd experiments ... --as-of T` used to open the target once for the as-of check (the
"as of ..." line) and again for the answer, so each such command started SecantusDB
twice. Counted here by the line the embedded starter logs for every process it spawns
(syncd.embedded.server: "starting the embedded MongoDB on ..."), on the real server.
"""

from __future__ import annotations

import json

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(600)

NO_URL = {"SYNCD_MONGO_URL": ""}
STARTED = "starting the embedded MongoDB on"
LATER = "2100-01-01"  # after the first sync: the answer is the state now


def starts(err: str) -> int:
    return err.count(STARTED)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """One migrated source in an embedded MongoDB (its history starts at this sync)."""
    home = tmp_path_factory.mktemp("once")
    sample = home / "metadata.db"
    make_eeg2025(sample, runs=6)
    migrated = run_cli("migrate", "--sqlite", sample, "--state-dir", home / "state",
                       "--source-id", "host-a", env=NO_URL)
    assert migrated.code == 0, migrated
    assert not (home / "state" / "mongo" / "server.json").exists()  # stopped at exit
    return home


@pytest.mark.parametrize("action", [
    ["best", "--challenge", "1"], ["search", "{}"], ["compare", "1", "2"], ["history", "1"],
    ["history", "1", "--versions"]], ids=lambda a: "-".join(a[:1] + a[2:3]))
@pytest.mark.parametrize("shown", ["text", "json"])
def test_experiments_as_of_starts_the_embedded_server_once(state, action, shown):
    extra = ["--json"] if shown == "json" else []
    result = run_cli("experiments", *action, "--as-of", LATER, *extra,
                     "--state-dir", state / "state", env=NO_URL)
    assert result.code == 0, result
    assert starts(result.err) == 1, result.err
    if shown == "text":
        assert "as of 2100-01-01T00:00:00+00:00" in result.out
    else:
        json.loads(result.out)


def test_a_bad_moment_is_refused_before_any_server_starts(state):
    for moment in ("2025-10-20T13:00:00", "yesterday"):
        result = run_cli("experiments", "best", "--challenge", "1", "--as-of", moment,
                         "--state-dir", state / "state", env=NO_URL)
        assert result.code == 2, result
        assert result.err.startswith("syncd: error: --as-of: as of"), result.err
        assert starts(result.err) == 0, result.err
    restored = run_cli("restore", "--to", state / "never.db", "--as-of", "yesterday",
                       "--state-dir", state / "state", env=NO_URL)
    assert restored.code == 2 and starts(restored.err) == 0, restored
    assert restored.err.startswith("syncd: error: --as-of: as of 'yesterday'"), restored.err


def test_restore_as_of_starts_the_embedded_server_once(state):
    to = state / "restored.db"
    result = run_cli("restore", "--to", to, "--as-of", LATER, "--state-dir", state / "state",
                     env=NO_URL)
    assert result.code == 0, result
    assert to.is_file() and starts(result.err) == 1, result.err
