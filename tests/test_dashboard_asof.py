"""The dashboard's past over real HTTP: /experiments?as_of= lists the runs as they were
(paging on one cached rebuild), the experiment page shows a run's versions and its
state as of a moment, bad times are a 400 that says why, and everything from the
legacy data is escaped (CSP holds in a real Chromium)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from syncd.client import asof
from tests.history_support import NASTY, build_story
from tests.http_support import request, serve
from tests.test_dashboard import CHROMIUM, _browser
from tests.test_dashboard_csp import WATCH_CSP

pytestmark = pytest.mark.timeout(300)
THEN = "2025-10-20T12:30:00+00:00"  # before the best run failed and another was deleted
LATER = "2025-10-20T14:30:00Z"  # after


@pytest.fixture
def story(tmp_path, db, client, mongo_url):
    yield from build_story(tmp_path, db, client, mongo_url, copies_at=())


def _json(server, path):
    status, _, body = request(server, path)
    assert status == 200, body
    return json.loads(body)


def test_the_list_as_of_a_moment(tmp_path, story):
    db, best, deleted = story["db"], story["best"], story["deleted"]
    with serve(tmp_path, db) as server:
        then = _json(server, f"/api/experiments?as_of={quote(THEN)}")
        later = _json(server, f"/api/experiments?as_of={quote(LATER)}")
        runs = {r["run_id"]: r for r in then["experiments"]}
        assert runs[best]["status"] == "completed" and deleted in runs
        assert then["experiments"][0]["run_id"] == best  # it was the best then
        assert {r["run_id"]: r for r in later["experiments"]}[best]["status"] == "failed"
        assert deleted not in {r["run_id"] for r in later["experiments"]}
        assert then["as_of"]["as_of"] == "2025-10-20T12:30:00+00:00"
        assert then["filters"]["as_of"] == THEN and then["total"] == 12

        # Paging and filtering reuse the one rebuild of that moment (kept 30 s).
        view = asof._views[db.client]
        kept = list(view.values())
        page = _json(server, f"/api/experiments?as_of={quote(THEN)}&offset=3")
        assert page["experiments"] == then["experiments"][3:]
        completed = _json(server, f"/api/experiments?as_of={quote(THEN)}&status=completed")
        assert all(r["status"] == "completed" for r in completed["experiments"])
        assert completed["choices"]["status"] == sorted({r["status"] for r in
                                                         then["experiments"]})
        assert list(asof._views[db.client].values()) == kept

        status, _, html = request(server, f"/experiments?as_of={quote(THEN)}&offset=10")
        assert status == 200 and 'data-testid=as-of-banner' in html
        assert "As of 2025-10-20T12:30:00+00:00" in html
        assert f'value="{THEN}"' in html  # the field keeps the moment
        assert "as_of=2025-10-20T12%3A30%3A00%2B00%3A00" in html  # links keep it

        status, _, html = request(server, "/experiments")
        assert status == 200 and "as-of-banner" not in html


def test_bad_times_are_a_400_that_says_why(tmp_path, story):
    with serve(tmp_path, story["db"]) as server:
        for when, why in (("2025-10-19", "before history starts"),
                          ("2025-10-20T12:00:00", "which time zone"),
                          ("<b>soon</b>", "not a time")):
            status, _, body = request(server, f"/experiments?as_of={quote(when)}")
            assert status == 400 and why in body, body
            assert "<b>soon" not in body
            status, _, body = request(server, f"/api/experiments?as_of={quote(when)}")
            assert status == 400 and why in json.loads(body)["error"]


def test_the_experiment_page_shows_versions_and_a_past_state(tmp_path, story):
    db, best = story["db"], story["best"]
    # as a reconcile records a change no log gave: its time is when it was found
    last = db["_syncd_history"].find_one({"table": "training_runs", "op": "update"},
                                         sort=[("jd", -1)])
    db["_syncd_history"].update_one({"_id": last["_id"]}, {"$set": {"found": True}})
    with serve(tmp_path, db) as server:
        found = _json(server, f"/api/experiments/{best}")
        ops = [v["op"] for v in found["versions"]["versions"]]
        assert ops == ["snapshot", "update", "update", "update"]
        notes = [v["note"] for v in found["versions"]["versions"]]
        assert notes[:3] == [None] * 3 and notes[3].startswith("ran earlier")
        assert found["versions"]["versions"][1]["at"] == "2025-10-20T13:00:00.000+00:00"
        status, _, html = request(server, f"/experiments/{best}")
        assert status == 200 and 'data-testid="versions"' in html
        assert NASTY not in html and "&lt;!--&lt;script&gt;alert(1)" in html
        assert "sekrit" not in html and "***" in html and html.count("ran earlier") == 1
        then = _json(server, f"/api/experiments/{best}?as_of={quote(THEN)}")
        assert then["experiment"]["status"] == "completed"
        assert [v["op"] for v in then["versions"]["versions"]] == ["snapshot"]
        status, _, html = request(server, f"/experiments/{story['deleted']}?as_of={quote(THEN)}")
        assert status == 200 and "data-as-of" in html and "as-of-banner" in html
        status, _, html = request(server, f"/experiments/{story['deleted']}?as_of={quote(LATER)}")
        assert status == 404 and "as of 2025-10-20T14:30:00+00:00" in html


def test_as_of_pages_hold_their_csp_in_a_browser(tmp_path, story):
    db, best = story["db"], story["best"]
    with serve(tmp_path, db) as server, _browser() as p:
        url = f"http://127.0.0.1:{server.port}"
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.add_init_script(WATCH_CSP)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/experiments/{best}?as_of={quote(LATER)}")
        page.locator("#live", has_text="not live").wait_for(timeout=10_000)
        page.goto(f"{url}/experiments/{best}")
        assert NASTY in page.get_by_test_id("versions").inner_text()
        page.goto(f"{url}/experiments")
        page.fill("input[name=as_of]", THEN)
        page.press("input[name=as_of]", "Enter")
        page.wait_for_url("**as_of=**")
        assert page.get_by_test_id("as-of-banner").is_visible()
        assert page.locator("[data-testid=experiments] tbody tr").count() == 12
        assert page.evaluate("window.cspViolations") == [] and errors == []
        browser.close()
