"""The HTTP server of `syncd run`: /metrics, /healthz, /readyz, auth, and status exit codes."""

from __future__ import annotations

import base64
import json
import re
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.api.http_options import http_context, http_options
from syncd.config import load_settings
from syncd.http.app import build_app
from syncd.http.server import HttpServer
from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon, LoggedRun, legacy_write, verified, wait_for


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=10)
    return path


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_url(daemon: Daemon) -> str:
    """Where the daemon serves (port 0 in tests: its local status says which)."""
    local = daemon.state / "daemon.json"
    return wait_for(lambda: json.loads(local.read_text()).get("http"), 30, "the HTTP url")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_agree_with_status(tmp_path, legacy, target_args, db):
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        url = http_url(daemon)
        run = legacy_write(legacy, "INSERT INTO training_runs (challenge, status) "
                           "VALUES (1, 'running')")
        for epoch in (1, 2, 3):
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, train_loss, "
                         "val_loss) VALUES (?, ?, 0.5, 0.6)", (run, epoch))
        wait_for(lambda: verified(legacy, target_args), 30, "the writes synced")

        def agree() -> Any:
            code, text = get(url + "/metrics")
            assert code == 200
            found = samples(text)
            status = daemon.status()
            tables = {t["table"]: t for t in status["daemon"]["tables"]}
            applied = {
                table: found.get(("syncd_applied_rows_total",
                                  (("op", "upsert"), ("source", "testhost"),
                                   ("table", table))))
                for table in tables}
            want = {table: float(t["applied"]) for table, t in tables.items()}
            lag = {t: found.get(("syncd_lag_rows", (("source", "testhost"), ("table", t))))
                   for t in tables}
            events = found.get(("syncd_event_queue_depth", ()))
            return (applied == want and lag == {t: float(v["lag_rows"])
                                                for t, v in tables.items()}
                    and events == status["daemon"]["events"]["buffered"]
                    and (found, status))
        found, status = wait_for(agree, 30, "/metrics to agree with syncd status --json")
        assert found[("syncd_applied_rows_total", (("op", "upsert"), ("source", "testhost"),
                                                   ("table", "epoch_history")))] >= 3
        assert found[("syncd_up", ())] == 1
        assert found[("syncd_target_up", (("target", "mongodb"),))] == 1
        assert found[("syncd_quarantined_rows", (("source", "testhost"),))] == \
            status["quarantined"] == 0
        assert found[("syncd_apply_errors_total", (("source", "testhost"),))] == 0
        assert found[("syncd_event_queue_depth", ())] == status["daemon"]["events"]["buffered"]
        last = found[("syncd_last_apply_timestamp_seconds", (("source", "testhost"),))]
        assert time.time() - 120 < last <= time.time() + 1
        assert ("process_cpu_seconds_total", ()) in found  # the process collector
        code, body = get(url + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        assert get(url + "/")[0] == 200
        # Running, ready, in sync, nothing quarantined: a shell check passes.
        result = run_cli("status", *daemon.args)
        assert result.code == 0, result
        assert "health: in sync" in result.out
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]


def test_readyz_follows_a_mongodb_outage_and_status_sees_a_dead_daemon(tmp_path, legacy,
                                                                        own_mongo):
    mongo, client = own_mongo
    args = mongo.target_args("ready")
    daemon = Daemon(tmp_path, legacy, args)
    try:
        daemon.wait_ready(client["ready"])
        url = http_url(daemon)
        wait_for(lambda: get(url + "/readyz")[0] == 200, 30, "/readyz 200")
        mongo.stop()
        stopped = time.monotonic()
        wait_for(lambda: get(url + "/readyz")[0] == 503, 10, "/readyz 503")
        assert time.monotonic() - stopped < 5
        code, body = get(url + "/readyz")
        assert code == 503 and "MongoDB" in json.loads(body)["reason"], body
        assert get(url + "/healthz")[0] == 200  # waiting out an outage is healthy
        status = run_cli("status", *daemon.args)
        assert status.code == 1, status  # MongoDB unreachable
        mongo.start()
        wait_for(lambda: get(url + "/readyz")[0] == 200, 60, "/readyz 200 again")
        wait_for(lambda: run_cli("status", *daemon.args).code == 0, 30, "status exit 0")
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(30)
        result = wait_for(lambda: (r := run_cli("status", *daemon.args)).code != 0 and r,
                          30, "status to notice the dead daemon")
        assert result.code == 3 and "no fresh heartbeat" in result.out, result
    finally:
        daemon.stop()


def test_a_public_address_needs_auth(tmp_path, legacy, target_args):
    result = run_cli("run", "--sqlite", legacy, *target_args, "--state-dir",
                     tmp_path / "s", "--http", "0.0.0.0:0")
    assert result.code == 2, result
    assert "not a loopback address" in result.err and "token" in result.err, result
    assert "SYNCD_HTTP_TOKEN" in result.err, result  # what the README tells a user to set


def test_every_route_asks_for_the_token_or_the_password(tmp_path, target_args, db):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text('[http]\nlisten = "127.0.0.1:0"\ntoken = "tok-3xample"\n'
                   'username = "ops"\npassword = "pw-3xample"\n')
    settings = load_settings({"config": str(cfg), "mongo_url": target_args[1],
                              "database": db.name})
    options = http_options(settings, listen="0.0.0.0:0")  # public, but with auth: allowed
    options = http_options(settings, listen="127.0.0.1:0")
    with HttpServer(build_app(http_context(settings, db), options), options) as server:
        basic = base64.b64encode(b"ops:pw-3xample").decode()
        for path in ("/metrics", "/healthz", "/readyz", "/"):
            assert get(server.url + path)[0] == 401
            assert get(server.url + path, {"Authorization": "Bearer wrong"})[0] == 401
        ok = wait_for(lambda: get(server.url + "/readyz",
                                  {"Authorization": "Bearer tok-3xample"})[0] == 200, 10,
                      "/readyz with the token")
        assert ok
        assert get(server.url + "/metrics", {"Authorization": f"Basic {basic}"})[0] == 200


def test_listen_settings():
    settings = load_settings({})
    assert http_options(settings, listen=None).url.startswith("http://127.0.0.1:")
    assert http_options(settings, listen="").host is None  # off
    assert http_options(settings, listen=":9000").host == "127.0.0.1"
    assert http_options(settings, listen="[::1]:9000").url == "http://[::1]:9000"
    for bad in ("nope", "127.0.0.1:99999"):
        with pytest.raises(Exception, match="HOST:PORT"):
            http_options(settings, listen=bad)


def test_healthz_says_stuck_while_the_follow_loop_is_held(tmp_path, legacy, target_args, db):
    """A follow loop held in the middle of a step (a pause point right after a write)
    turns /healthz to 503 once `[http] stuck_seconds` pass, and 200 again after."""
    pause = tmp_path / "pause"
    pause.mkdir()
    daemon = Daemon(tmp_path, legacy, target_args, config="[http]\nstuck_seconds = 2\n",
                    env={"SYNCD_PAUSE_AT": "daemon.after_apply", "SYNCD_PAUSE_DIR": str(pause)})
    try:
        daemon.wait_ready(db)
        url = http_url(daemon)
        assert get(url + "/healthz")[0] == 200
        legacy_write(legacy, "INSERT INTO training_runs (challenge, status) VALUES (1, 'running')")
        wait_for(lambda: (pause / "daemon.after_apply.paused").exists(), 30, "the loop held")
        code, body = wait_for(lambda: (r := get(url + "/healthz"))[0] == 503 and r, 15,
                              "/healthz 503")
        assert json.loads(body)["status"] == "stuck", body
        assert get(url + "/metrics")[0] == 200  # the server itself still answers
        (pause / "daemon.after_apply.resume").touch()
        wait_for(lambda: get(url + "/healthz")[0] == 200, 15, "/healthz 200 again")
        wait_for(lambda: verified(legacy, target_args), 30, "in sync after the hold")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-3000:]


def test_a_dead_mongodb_is_one_short_line_in_readyz_status_and_log(tmp_path, legacy,
                                                                    own_mongo):
    """pymongo's error carries every host's timeouts and a topology dump; /readyz, the
    daemon's outage (systemd STATUS, syncd status) and its warning say one line, and
    the log keeps the whole text."""
    mongo, _client = own_mongo
    run = LoggedRun(tmp_path, legacy, mongo.target_args("short"))
    try:
        run.says("(Ctrl-C or SIGTERM to stop)")
        url = http_url(run)  # type: ignore[arg-type]
        mongo.stop()
        # While the server shuts down a request may meet a closed or reset connection,
        # after it a refused one: each is one short line.
        short = re.escape(f"MongoDB at 127.0.0.1:{mongo.port} unreachable: connection ") \
            + "(closed|refused|reset by peer)"
        code, body = wait_for(lambda: (r := get(url + "/readyz"))[0] == 503 and r, 30,
                              "/readyz 503")
        assert json.loads(body)["status"] == "not ready", body
        assert re.fullmatch(short, json.loads(body)["reason"]), body
        legacy_write(legacy, "INSERT INTO subjects (subject_id, age) VALUES ('NDAR_X', 9.5)")
        warned = f"WARNING syncd.daemon.health: {short}; retrying with backoff\n"
        wait_for(lambda: re.search(warned, run.text()), 60, "the outage's one-line warning")
        # pymongo's whole error (a topology dump when it was refused) on the next line
        run.says("INFO syncd.daemon.health: MongoDB: ")
        mongo.start()
        wait_for(lambda: get(url + "/readyz")[0] == 200, 60, "/readyz 200 again")
    finally:
        code = run.end()
    assert code == 0, run.text()[-3000:]
    assert "Topology" not in "".join(line for line in run.text().splitlines()
                                     if "WARNING" in line)
