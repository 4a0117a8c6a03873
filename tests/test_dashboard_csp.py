"""The dashboard's pages in a real Chromium under their Content-Security-Policy (issue
20, item 5): markup-like text in the data breaks nothing, no script runs inline, and a
live stream refused at the cap falls back to re-reading."""

from __future__ import annotations

import pytest

from tests.http_support import add_experiment, serve
from tests.test_dashboard import CHROMIUM, _browser

pytestmark = pytest.mark.timeout(120)

NASTY = "<!--<script>"

WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def test_markup_in_the_data_breaks_no_page_and_nothing_runs_inline(tmp_path, db, rclient):
    epochs = [{"epoch": i, "train_loss": 1.0 / i, "val_loss": 1.2 / i, "timestamp": NASTY}
              for i in range(1, 6)]
    oid = add_experiment(db, 1, epochs, notes=f"{NASTY} and </script><script>alert(1)",
                         status="running")
    add_experiment(db, 2, [], status="completed")
    with serve(tmp_path, db, rclient, "max_streams = 1") as server, _browser() as p:
        url = f"http://127.0.0.1:{server.port}"
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.add_init_script(WATCH_CSP)
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{url}/experiments/{oid}")
        page.wait_for_selector("#chart svg", timeout=10_000)
        assert page.locator("#chart svg").get_attribute("data-points") == "5"
        assert page.locator("#chart .series.train circle").count() == 5
        assert NASTY in page.get_by_test_id("experiment-summary").inner_text()
        assert NASTY in page.get_by_test_id("epochs").inner_text()
        page.wait_for_selector("#live[data-state=live]", timeout=10_000)  # its stream

        # A second page while the first holds the only stream: refused, it re-reads.
        other = browser.new_page()
        other.add_init_script(WATCH_CSP)
        other.on("pageerror", lambda exc: errors.append(str(exc)))
        other.goto(f"{url}/experiments/{oid}")
        other.locator("#live", has_text="refused").wait_for(timeout=10_000)
        assert other.locator("#chart svg").get_attribute("data-points") == "5"

        # The filters submit themselves from the static script (no inline handler).
        page.goto(f"{url}/experiments")
        page.select_option("select[name=status]", "completed")
        page.wait_for_url("**status=completed**")
        assert page.locator("[data-testid=experiments] tbody tr").count() == 1

        for each in (page, other):
            assert each.evaluate("window.cspViolations") == []
        for path in ("/", "/cache"):  # the other pages: nothing refused either
            page.goto(url + path)
            assert page.locator("h1").count() == 1
            assert page.evaluate("window.cspViolations") == [], path
        # the icon the browser asks for by itself is one it can draw (a 404 would be an
        # error in its console, which `errors` would hold)
        size = page.evaluate("""() => new Promise((done) => { const icon = new Image();
            icon.onload = () => done([icon.naturalWidth, icon.naturalHeight]);
            icon.onerror = () => done(null); icon.src = "/favicon.ico"; })""")
        assert size == [16, 16], size
        assert errors == []
        browser.close()
