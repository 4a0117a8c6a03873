"""An embedded MongoDB given up (syncd/embedded/supervise.py: it died again and again)
while `syncd run` still starts ends the run with that error, as it does once the run
follows: the service manager's `Restart=` takes over. Before, a give-up that came
while the start waited out a MongoDB outage was lost: before the daemon existed the
wait went on for ever, and while the daemon waited for its lease the run exited 0
(`Restart=on-failure` then leaves syncd stopped).

The MongoDB here is a real server of the test's own, stopped; the give-up is the
error a supervisor hands on (its own tests, tests/test_embedded_supervise.py, make
one die five times).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pymongo
import pytest

from syncd.api.options import endpoints
from syncd.api.run_daemon import _until_reachable, build_daemon, daemon_options
from syncd.api.shared import open_source
from syncd.config import Settings, load_settings
from syncd.connect.mongo import open_target
from syncd.embedded.supervise import GiveUp
from syncd.errors import SyncdError
from syncd.retry import Backoff
from syncd.sample import make_eeg2025
from syncd.sinks.events import EventPublisher
from tests.daemon_support import wait_for

GAVE_UP = "the embedded MongoDB (pid 1) died 5 times in a row"


@pytest.fixture
def settings(tmp_path: Path, own_mongo: Any) -> Settings:
    mongo, _ = own_mongo
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=3)
    return load_settings({"sqlite": str(legacy), "mongo_url": mongo.url, "database": "gaveup",
                          "source_id": "h", "timezone": "UTC", "mongo_timeout": 0.5,
                          "state_dir": str(tmp_path / "state")}, environ={})


def test_a_give_up_before_the_daemon_exists_ends_the_wait(settings, own_mongo):
    mongo, _ = own_mongo
    mongo.stop()
    give_up, tries = GiveUp(), []

    def check() -> None:  # the start's calls between the connection and the daemon
        tries.append(1)
        assert len(tries) < 5, "still waiting for a MongoDB that was given up"
        with pymongo.MongoClient(mongo.url, serverSelectionTimeoutMS=300) as client:
            client.admin.command("ping")

    give_up(SyncdError(GAVE_UP))  # no daemon bound yet: kept
    with pytest.raises(SyncdError, match="died 5 times in a row"):
        _until_reachable(check, mongo.url, Backoff(base=0.01, cap=0.01), give_up)
    assert len(tries) == 1


def test_a_give_up_while_the_daemon_waits_for_its_lease_fails_the_run(settings, own_mongo):
    mongo, _ = own_mongo
    outcome: dict[str, Any] = {}
    with open_source(settings) as source, open_target(endpoints(settings)) as target:
        daemon = build_daemon(settings, daemon_options(settings), source, target.db,
                              EventPublisher(None, "h", None))
        mongo.stop()  # the lease's first write meets the outage

        def run() -> None:
            try:
                outcome["code"] = daemon.run()
            except BaseException as exc:  # what `syncd run` would exit with
                outcome["raised"] = exc

        thread = threading.Thread(target=run, name="daemon")
        thread.start()
        try:
            wait_for(lambda: daemon.health.state.outage is not None, 60,
                     "the daemon waiting for MongoDB to take its lease")
            daemon.fail(SyncdError(GAVE_UP))
        finally:
            thread.join(60)
    assert not thread.is_alive()
    assert "code" not in outcome, f"exited {outcome.get('code')} as if stopped cleanly"
    assert isinstance(outcome["raised"], SyncdError) and GAVE_UP in str(outcome["raised"])
