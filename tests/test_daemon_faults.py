"""`syncd run` under faults: MongoDB going away, Redis down, bad rows, busy legacy writers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from syncd.embedded import free_port
from syncd.sample import make_eeg2025
from syncd.sinks.cache import Keys
from syncd.sinks.events import STREAM
from tests.conftest import NEWEST, run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for
from tests.hdf5_support import RedisProcess


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=15)
    return path


def test_mongodb_outage_is_reported_and_caught_up(tmp_path, legacy, own_mongo):
    mongo, client = own_mongo
    args = mongo.target_args("outage")
    daemon = Daemon(tmp_path, legacy, args)
    try:
        daemon.wait_ready(client.outage)
        mongo.stop()
        for epoch in range(50, 60):  # the legacy scripts go on writing meanwhile
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, val_loss) "
                         "VALUES (1, ?, 0.25)", (epoch,))
        local = tmp_path / "state" / "daemon.json"
        wait_for(lambda: json.loads(local.read_text()).get("outage"), 30,
                 "the outage in the local status")
        status = run_cli("status", *daemon.args)
        assert status.code == 1
        assert "OUTAGE: MongoDB unavailable" in status.out and "not reachable" in status.out
        # daemon.json's times as syncd shows them elsewhere, not str()'s "2026-12-08 01:54:31.98"
        assert re.search(r"last heartbeat \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", status.out)
        # one short line, not pymongo's topology dump
        assert (f"retries): MongoDB at 127.0.0.1:{mongo.port} unreachable: " in status.out
                and "Topology" not in status.out), status.out
        assert daemon.proc.poll() is None  # it waits; it does not die
        mongo.start()
        wait_for(lambda: verified(legacy, args), 60, "the catch-up after the outage")
        assert client.outage.epochs.count_documents({"epoch": {"$gte": 50}}) == 10
        wait_for(lambda: json.loads(local.read_text()).get("outage") is None, 30,
                 "the outage to clear")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]
    assert f"MongoDB at 127.0.0.1:{mongo.port} unreachable" in err and "is back after" in err


def test_status_of_an_unreachable_target_never_shows_another_targets_daemon(
        tmp_path, legacy, target_args, db):
    """The state dir's daemon.json is of a `syncd run` on the test's MongoDB; `syncd
    status --mongo-url <unreachable>` beside it says so and does not show that daemon's
    tables as the unreachable target's."""
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
    finally:
        assert daemon.stop()[0] == 0
    local = json.loads((daemon.state / "daemon.json").read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", local["heartbeat_at"])
    url = target_args[target_args.index("--mongo-url") + 1]
    other = ["--sqlite", legacy, "--state-dir", daemon.state, "--database", db.name,
             "--mongo-url", f"mongodb://127.0.0.1:{free_port()}", "--mongo-timeout", "1"]
    shown = run_cli("status", *other)
    assert shown.code == 1, shown
    assert (f"daemon.json is the status of a syncd run on another target ({url}, "
            f"database {db.name!r}), not this one's: not shown") in shown.out, shown
    assert "daemon:" not in shown.out and "training_runs" not in shown.out, shown
    found = json.loads(run_cli("status", "--json", *other).out)
    assert found["daemon"] is None and found["daemon_elsewhere"]["target"] == url, found


def test_events_on_redis_and_redis_down_never_stops_the_sync(tmp_path, legacy, target_args,
                                                             db):
    redis_server = RedisProcess(tmp_path / "redis")
    redis_server.start()
    daemon = Daemon(tmp_path, legacy, [*target_args, "--redis-url", redis_server.url])
    rc = redis_server.client()
    try:
        daemon.wait_ready(db)
        run = legacy_write(legacy, "INSERT INTO training_runs (challenge, status) "
                           "VALUES (2, 'running')")

        def event_for_run() -> dict | None:
            for _, fields in rc.xrange(STREAM):
                event = json.loads(fields[b"event"])
                if event.get("collection") == "experiments" and \
                        event.get("operation") == "upsert":
                    doc = db.experiments.find_one({"run_id": run})
                    if doc and str(doc["_id"]) in event["ids"]:
                        return event
            return None
        event = wait_for(event_for_run, 30, "the event of the new run")
        assert event["table"] == "training_runs" and event["source_id"] == "testhost"
        assert event["type"] == "table.upsert"
        kept = [json.loads(f[b"event"]) for _, f in rc.xrange(STREAM)]
        assert any(e["type"] == "migrated" and e["version"] == NEWEST for e in kept)
        assert event["version"] == NEWEST and event["time"].endswith("+00:00")
        # `syncd events` tails the stream from the beginning.
        tail = run_cli("events", "--from", "0", "--count", "1", "--json", "--redis-url",
                       redis_server.url)
        assert tail.code == 0, tail
        assert json.loads(tail.out)["source_id"] == "testhost"

        redis_server.kill()
        legacy_write(legacy, "UPDATE training_runs SET status = 'failed' WHERE run_id = ?",
                     (run,))
        wait_for(lambda: db.experiments.find_one({"run_id": run})["status"] == "failed", 30,
                 "the MongoDB sync with Redis down")
        events = wait_for(lambda: daemon.status()["daemon"]["events"].get("buffered"), 30,
                          "events to wait in the buffer")
        assert events >= 1
        redis_server.start()  # back (empty): the buffered events are sent
        rc2 = redis_server.client()
        wait_for(lambda: rc2.xlen(STREAM) >= 1, 30, "the buffered events to be sent")
        rc2.close()
    finally:
        code, err = daemon.stop()
        rc.close()
        redis_server.kill()
    assert code == 0, err[-3000:]


def test_a_row_mongodb_or_the_migration_rejects_is_quarantined(tmp_path, legacy,
                                                               target_args, db):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_strict.py").write_text(textwrap.dedent("""
        VERSION = 1
        DESCRIPTION = "runs; a poisoned note cannot be projected"
        def run(row, ctx):
            if row["notes"] == "poison":
                raise ValueError("poisoned row")
            return {"run_id": row["run_id"], "status": row["status"]}
        def upgrade(model):
            model.map_table("training_runs", "runs", build=run)
    """))
    args = [*target_args, "--migrations", str(migrations)]
    daemon = Daemon(tmp_path, legacy, args)
    try:
        daemon.wait_ready(db)
        bad = legacy_write(legacy, "INSERT INTO training_runs (status, notes) VALUES "
                           "('running', 'poison')")
        good = legacy_write(legacy, "INSERT INTO training_runs (status) VALUES ('running')")
        wait_for(lambda: db.runs.find_one({"run_id": good}), 30, "the good row")
        quarantined = wait_for(lambda: db["_syncd_quarantine"].find_one({"key.run_id": bad}),
                               30, "the bad row in quarantine")
        assert "poisoned row" in quarantined["error"]
        status = daemon.status()
        assert status["quarantined"] == 1
        assert status["quarantine_samples"][0]["key"] == {"run_id": bad}
        legacy_write(legacy, "UPDATE training_runs SET notes = 'fixed' WHERE run_id = ?",
                     (bad,))
        wait_for(lambda: db.runs.find_one({"run_id": bad}), 30, "the fixed row")
        wait_for(lambda: db["_syncd_quarantine"].count_documents({}) == 0, 30,
                 "the quarantine to be released")
        assert verified(legacy, args, ("--migrations", str(migrations)))
    finally:
        assert daemon.stop()[0] == 0


def test_a_document_mongodb_refuses_is_quarantined_and_the_rest_syncs(tmp_path, legacy,
                                                                      target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        huge = b"\x00" * (17 * 1024 * 1024)  # a BLOB larger than a BSON document may be
        legacy_write(legacy, "INSERT INTO subjects (subject_id, notes) VALUES ('BIG', ?)",
                     (huge,))
        legacy_write(legacy, "INSERT INTO subjects (subject_id, age) VALUES ('SMALL', 11.0)")
        wait_for(lambda: db.subjects.find_one({"subject_id": "SMALL"}), 30, "the small row")
        entry = wait_for(lambda: db["_syncd_quarantine"].find_one(
            {"key.subject_id": "BIG"}), 30, "the refused row in quarantine")
        assert entry["table"] == "subjects"
        # The client refuses it before sending: as DocumentTooLarge for a replace, as
        # a write error "object to insert too large" for an insert.
        assert any(text in entry["error"] for text in ("DocumentTooLarge", "larger than",
                                                        "too large")), entry["error"]
        assert db.subjects.find_one({"subject_id": "BIG"}) is None
        legacy_write(legacy, "UPDATE subjects SET notes = 'trimmed' WHERE subject_id = 'BIG'")
        wait_for(lambda: db.subjects.find_one({"subject_id": "BIG", "notes": "trimmed"}), 30,
                 "the fixed row")
        wait_for(lambda: db["_syncd_quarantine"].count_documents({}) == 0, 30,
                 "the quarantine to be released")
        assert verified(legacy, target_args)
    finally:
        assert daemon.stop()[0] == 0


def test_polling_alone_follows_changes_without_file_events(tmp_path, legacy, target_args,
                                                           db):
    """Filesystems without inotify (NFS): PRAGMA data_version polling still sees commits."""
    daemon = Daemon(tmp_path, legacy, target_args, "watch = false\n")
    try:
        daemon.wait_ready(db)
        run = legacy_write(legacy, "INSERT INTO training_runs (status) VALUES ('running')")
        wait_for(lambda: db.experiments.find_one({"run_id": run}), 30, "the polled change")
    finally:
        assert daemon.stop()[0] == 0


WRITER = textwrap.dedent("""
    import json, sqlite3, sys, time
    path, loops, name, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    commits = errors = 0
    for _ in range(loops):
        try:
            conn = sqlite3.connect(path)  # the legacy pattern: 5 s timeout, journal=delete
            cur = conn.execute("INSERT INTO training_runs (challenge, model_name, status, "
                               "config) VALUES (1, ?, 'running', '{}')", (name,))
            conn.commit()
            conn.execute("INSERT INTO epoch_history (run_id, epoch, val_loss) VALUES "
                         "(?, 1, 0.5)", (cur.lastrowid,))
            conn.commit()
            conn.execute("UPDATE training_runs SET status = 'completed' WHERE run_id = ?",
                         (cur.lastrowid,))
            conn.commit()
            conn.close()
            commits += 3
        except sqlite3.OperationalError as exc:
            errors += 1
            print(exc, file=sys.stderr)
        time.sleep(pause)
    print(json.dumps({"commits": commits, "errors": errors}))
""")
WRITERS, LOOPS = 3, 150
# Between a writer's transactions: about 50 commits/s per writer on an idle machine (the
# performance figures' rate), well beyond what training scripts commit. Writers going
# flat out starve each other in SQLite's busy handler once the machine is loaded, with
# no syncd at all (3 of them, `stress-ng --cpu 2`: 4 `database is locked` in 20 s):
# that measures the machine, not syncd.
PAUSE = 0.02


def _writers(path, name_prefix: str) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(LOOPS),
                              f"{name_prefix}{i}", str(PAUSE)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(WRITERS)]


def _results(writers: list[subprocess.Popen[str]]) -> tuple[int, int, list[str]]:
    """Errors, the fewest commits of one writer, and the writers' stderr."""
    results = [w.communicate(timeout=300) for w in writers]
    stats = [json.loads(out) for out, _ in results]
    return (sum(s["errors"] for s in stats), min(s["commits"] for s in stats),
            [err for _, err in results if err])


def test_several_legacy_writers_never_fail_while_syncd_runs(tmp_path, legacy, target_args,
                                                             db):
    """Three legacy writers on the database syncd follows fail no more often than three
    identical writers, at the same moments, on a copy of it that nothing follows.

    The copy is the control: it shares the machine's load (stress, other tests, syncd's
    own CPU use), so a `database is locked` the machine alone causes shows on both; one
    that syncd causes (a lock it holds for seconds) shows only on the followed file. On a
    machine with room both counts are 0, as strict as asserting 0.
    """
    control = tmp_path / "control" / "metadata.db"
    control.parent.mkdir()
    shutil.copyfile(legacy, control)
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        followed, alone = _writers(legacy, "w"), _writers(control, "c")
        errors, fewest, stderr = _results(followed)
        control_errors, control_fewest, control_stderr = _results(alone)
        assert fewest > 0 and control_fewest > 0
        assert errors <= control_errors, (
            f"{errors} `database is locked` with syncd following, {control_errors} on the "
            f"unfollowed copy at the same time: {stderr} / {control_stderr}")
        wait_for(lambda: verified(legacy, target_args), 90, "syncd to catch up")
        assert db.experiments.count_documents({"model.name": "w2"}) > 0
    finally:
        assert daemon.stop()[0] == 0


def test_run_keeps_the_hdf5_caches_warm(tmp_path, legacy, target_args, db, monkeypatch):
    from tests.hdf5_support import write_h5

    cache = tmp_path / "cached"
    cache.mkdir()
    write_h5(cache / "R1_windows.h5", n=12)
    redis_server = RedisProcess(tmp_path / "redis")
    redis_server.start()
    config = ("hdf5_rescan_seconds = 1.0\n[hdf5]\ndebounce_seconds = 0.2\n"
              "[features]\nextractors = []\n")
    args = [*target_args, "--redis-url", redis_server.url]
    daemon = Daemon(tmp_path, legacy, args, config, extra=["--hdf5-dir", str(cache)])
    rc = redis_server.client()
    try:
        daemon.wait_ready(db)
        first = wait_for(lambda: db.hdf5_files.find_one({"name": "R1_windows.h5",
                                                         "state": "warm"}), 60,
                         "the first file indexed and warm")
        assert first["n_windows"] == 12 and first["attrs"]["release"] == "R1"
        write_h5(cache / "R2_windows.h5", n=7, layout="data", seed=3)
        second = wait_for(lambda: db.hdf5_files.find_one({"name": "R2_windows.h5",
                                                          "state": "warm"}), 60,
                          "a new file picked up from its file event")
        assert second["n_windows"] == 7
        assert rc.exists(Keys().labels(second["fid"], second["generation"]))
        refused = run_cli("warm", "--hdf5-dir", cache, *daemon.args, "--redis-url",
                          redis_server.url)
        assert refused.code == 1 and "keeps the HDF5 caches warm" in refused.err
        monkeypatch.chdir(tmp_path)  # the same folder named relative, as a user types it
        refused = run_cli("warm", "--hdf5-dir", "cached", *target_args, "--redis-url",
                          redis_server.url)
        assert refused.code == 1 and "keeps the HDF5 caches warm" in refused.err, refused
        # The metadata sync goes on beside it.
        run = legacy_write(legacy, "INSERT INTO training_runs (status) VALUES ('running')")
        wait_for(lambda: db.experiments.find_one({"run_id": run}), 30, "the metadata change")
    finally:
        code, err = daemon.stop()
        rc.close()
        redis_server.kill()
    assert code == 0, err[-3000:]


def test_a_redis_that_hangs_never_holds_up_the_mongodb_sync(tmp_path, legacy, target_args,
                                                             db):
    """A Redis that accepts connections and never answers (a wedged server, a black hole)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # hold it open, say nothing
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    daemon = Daemon(tmp_path, legacy, [*target_args, "--redis-url", url])
    try:
        daemon.wait_ready(db, timeout=30)
        for n in range(3):
            run = legacy_write(legacy, "INSERT INTO training_runs (status) VALUES ('running')")
            wait_for(lambda run=run: db.experiments.find_one({"run_id": run}), 10,
                     f"change {n} synced while Redis hangs")
        events = wait_for(lambda: daemon.status()["daemon"]["events"], 10, "event status")
        assert events["buffered"] >= 1 and events["sent"] == 0
    finally:
        code, err = daemon.stop(timeout=30)
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert code == 0, err[-3000:]
