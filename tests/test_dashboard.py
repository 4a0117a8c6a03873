"""The dashboard in a real headless Chromium (Debian's chromium, driven by playwright),
served by a real `syncd dashboard` process, reading what a real `syncd run` synced from
a copy of the EEG2025 fixture (and an HDF5 cache directory) into SecantusDB and Redis."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from syncd.embedded import free_port
from tests.conftest import run_cli, syncd_process, wait_port
from tests.daemon_support import Daemon, legacy_write, wait_for
from tests.hdf5_support import write_h5

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.timeout(240)


def _browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
    return sync_api.sync_playwright()


@pytest.fixture
def served(tmp_path, fixture_db, target_args, redis_url, db):
    """(dashboard URL, db, legacy path): syncd run following the fixture, syncd dashboard."""
    h5 = tmp_path / "h5"
    h5.mkdir()
    write_h5(h5 / "R1_challenge1_windows.h5", n=24)
    (h5 / "R9_challenge1_windows.h5").write_bytes(b"not an HDF5 file at all")
    prefix = "dash" + uuid.uuid4().hex[:8]
    config = (f'[hdf5]\ndebounce_seconds = 0.0\n[cache]\nprefix = "{prefix}"\n'
              "[features]\nextractors = []\n")
    stores = [*target_args, "--redis-url", redis_url]
    daemon = Daemon(tmp_path, fixture_db, stores, config, extra=["--hdf5-dir", str(h5)])
    dash = None
    try:
        daemon.wait_ready(db)
        wait_for(lambda: db["hdf5_files"].count_documents(
            {"state": {"$in": ["warm", "quarantined"]}}) == 2, 60, "both HDF5 files seen")
        port = free_port()
        dash = syncd_process("dashboard", "--listen", f"127.0.0.1:{port}", "--config",
                             str(daemon.cfg), "--state-dir", str(daemon.state), *stores)
        wait_port(port, dash, "syncd dashboard")
        yield f"http://127.0.0.1:{port}", db, fixture_db
    finally:
        if dash is not None:
            dash.terminate()
            dash.communicate(timeout=30)
        daemon.stop()


def test_every_page_shows_the_fixture_and_the_curve_grows_live(served, tmp_path):
    url, db, legacy = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    runs = sqlite3.connect(legacy).execute("SELECT count(*) FROM training_runs").fetchone()[0]
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        refused: list[str] = []  # what the pages' Content-Security-Policy blocked
        page.on("console", lambda m: "Content Security Policy" in m.text
                and refused.append(m.text))

        # Sync health: the daemon runs; every synced table has a row.
        page.goto(url + "/")
        assert "running" in page.get_by_test_id("daemon-state").inner_text()
        tables = page.get_by_test_id("health-tables").inner_text()
        for name in ("training_runs", "epoch_history", "model_checkpoints"):
            assert name in tables
        assert "testhost" in page.get_by_test_id("health-summary").inner_text()
        page.screenshot(path=shots / "health.png", full_page=True)

        # Experiments: all of the fixture's runs, best validation loss first; filters work.
        # (The fixture's runs are all still running: three finish, as the legacy script
        # records it, so that there are losses to sort and two statuses to filter by.)
        finished = {3: 0.31, 7: 0.12, 5: 0.2}
        for run, loss in finished.items():
            legacy_write(legacy, "UPDATE training_runs SET status = 'completed', "
                         "best_val_loss = ?, best_epoch = 2 WHERE run_id = ?", (loss, run))
        wait_for(lambda: db["experiments"].count_documents(
            {"metrics.best_val_loss": {"$ne": None}}) == 3, 10, "the finished runs synced")
        page.goto(url + "/experiments")
        rows = page.locator("[data-testid=experiments] tbody tr")
        assert rows.count() == runs
        first = [r.split("\t") for r in rows.all_inner_texts()[:4]]
        assert [r[0] for r in first[:3]] == ["7", "5", "3"]
        assert [float(r[4]) for r in first[:3]] == [0.12, 0.2, 0.31] and first[3][4] == "–"
        page.screenshot(path=shots / "experiments.png", full_page=True)
        status = "completed"
        page.select_option("select[name=status]", status)
        page.wait_for_url(f"**status={status}**")
        expected = db["experiments"].count_documents({"status": status})
        assert rows.count() == expected
        assert set(page.locator("[data-testid=experiments] tbody tr td:nth-child(3)")
                   .all_inner_texts()) == {status}

        # One experiment: config, metrics, checkpoints and the chart of its epochs.
        run_id, n = sqlite3.connect(legacy).execute(
            "SELECT run_id, count(*) FROM epoch_history GROUP BY run_id "
            "ORDER BY count(*) DESC, run_id LIMIT 1").fetchone()
        exp = db["experiments"].find_one({"run_id": run_id})
        page.goto(f"{url}/experiments/{exp['_id']}")
        assert f"Run {run_id}" in page.locator("h1").inner_text()
        assert "batch_size" in page.get_by_test_id("config").inner_text()
        chart = page.locator("#chart svg")
        assert chart.get_attribute("data-points") == str(n)
        assert page.locator("#chart .series.train circle").count() == n
        page.wait_for_selector("#live[data-state=live]", timeout=10_000)
        page.evaluate("window.notReloaded = true")
        page.screenshot(path=shots / "experiment.png", full_page=True)

        # A legacy-style commit of the next epoch: the chart gains it without a reload,
        # within a second (the daemon polls every 0.1 s here; the bound leaves room for
        # two busy cores).
        committed = time.monotonic()
        legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss, "
                     "learning_rate, duration_seconds, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (run_id, n + 1, 0.05, 0.002, 0.002, 100.0, "2025-10-24T16:00:00"))
        # (a selector, not wait_for_function: the page's CSP forbids evaluating strings)
        page.wait_for_selector(f"#chart svg[data-points='{n + 1}']", timeout=10_000)
        shown = time.monotonic() - committed
        print(f"commit -> chart: {shown:.3f} s")
        assert shown < 2.0, shown
        assert page.evaluate("window.notReloaded") is True
        assert page.locator("#chart .series.val circle").count() == n + 1
        assert page.locator("[data-testid=epochs] tbody tr").count() == n + 1
        page.screenshot(path=shots / "experiment-live.png", full_page=True)

        # Cache: coverage per file, bytes against the budget, the quarantined file.
        page.goto(url + "/cache")
        files = page.get_by_test_id("cache-files").inner_text()
        assert "R1_challenge1_windows.h5" in files and "100%" in files
        assert "R9_challenge1_windows.h5" in page.get_by_test_id("quarantined-files") \
            .inner_text()
        assert "budget" in page.get_by_test_id("cache-summary").inner_text()
        page.screenshot(path=shots / "cache.png", full_page=True)

        assert not [u for u in failed if not u.endswith("/events")], failed
        assert refused == []
        browser.close()
    for name in ("health", "experiments", "experiment", "experiment-live", "cache"):
        assert (shots / f"{name}.png").stat().st_size > 5000


def test_dashboard_refuses_a_public_address_without_a_token(tmp_path):
    result = run_cli("dashboard", "--listen", f"0.0.0.0:{free_port()}", "--state-dir",
                     tmp_path / "state", "--mongo-url", "mongodb://127.0.0.1:1")
    assert result.code == 2, result
    assert "token" in result.err


def test_a_token_guards_every_route_and_pages_work_without_a_daemon(tmp_path, target_args):
    import base64
    import urllib.error
    import urllib.request

    port = free_port()
    dash = syncd_process("dashboard", "--listen", f"127.0.0.1:{port}", "--state-dir",
                         tmp_path / "state", *target_args, env={"SYNCD_HTTP_TOKEN": "s3cret-t0k"})
    try:
        wait_port(port, dash, "syncd dashboard")
        url = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/health", "/static/dashboard.js"):
            with pytest.raises(urllib.error.HTTPError) as denied:
                urllib.request.urlopen(url + path, timeout=10)
            assert denied.value.code == 401
        basic = base64.b64encode(b"anyone:s3cret-t0k").decode()
        for auth in (f"Basic {basic}", "Bearer s3cret-t0k"):
            request = urllib.request.Request(url + "/", headers={"Authorization": auth})
            with urllib.request.urlopen(request, timeout=10) as answer:
                body = answer.read().decode()
            assert answer.status == 200 and "no daemon has run here" in body
            assert "s3cret-t0k" not in body
        wrong = urllib.request.Request(url + "/", headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(wrong, timeout=10)
        assert denied.value.code == 401
    finally:
        dash.terminate()
        dash.communicate(timeout=30)


def test_a_page_stream_stays_alive_while_other_experiments_change(served):
    """Events of other experiments only: the page's stream still sends something every
    second or so (no proxy or client read timeout), and no `change` for this one; an
    epoch of this experiment then arrives as a `change`."""
    url, _db, legacy = served
    mine, other = (r[0] for r in sqlite3.connect(legacy).execute(
        "SELECT run_id FROM training_runs ORDER BY run_id LIMIT 2"))
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, train_loss) "
                         "VALUES (?, 999, 0.5)", (other,))
            time.sleep(0.02)

    with urllib.request.urlopen(f"{url}/api/experiments/{mine}/events", timeout=3) as stream:
        writer = threading.Thread(target=busy)
        writer.start()
        try:
            received = b""
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:  # a read timeout here fails the test
                received += stream.read1(65536)
        finally:
            stop.set()
            writer.join()
        assert b"event: ready" in received and b"event: change" not in received
        legacy_write(legacy, "INSERT INTO epoch_history (run_id, epoch, train_loss) "
                     "VALUES (?, 999, 0.5)", (mine,))
        deadline = time.monotonic() + 10
        while b"event: change" not in received and time.monotonic() < deadline:
            received += stream.read1(65536)
        assert b"event: change" in received
