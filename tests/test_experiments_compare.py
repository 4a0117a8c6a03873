"""Comparing experiments and paging through many: `syncd experiments compare/search/best`
and the dashboard's /compare and /experiments?page= over real HTTP, on a real SecantusDB
holding documents of the experiment model (migration 0002)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest
from bson import ObjectId

from syncd.embedded import free_port
from tests.conftest import run_cli, syncd_process, wait_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.timeout(180)
SAME = {f"same_{i:02d}": i for i in range(11)} | {"batch_size": 32}  # 12 equal keys


def experiment(run_id: int, config: dict | None = None, best: float | None = None,
               status: str = "completed", challenge: int = 1) -> dict:
    """An `experiments` document as migration 0002 projects a training_runs row."""
    return {"_id": ObjectId(), "run_id": run_id, "challenge": challenge, "status": status,
            "model": {"name": "EEGNet"}, "config": config or {},
            "metrics": {"best_val_loss": best, "best_epoch": 3, "total_epochs": 10},
            "start_time": dt.datetime(2025, 10, 1), "end_time": None, "notes": None,
            "_source": "testhost", "_v": 2}


def three_runs(db) -> list[dict]:
    """Three runs that differ in lr, dropout (one lacks it) and their loss; 12 keys equal."""
    docs = [experiment(1, {**SAME, "lr": 0.001, "dropout": 0.5}, 0.42),
            experiment(2, {**SAME, "lr": 0.01, "dropout": 0.25}, 0.31),
            experiment(3, {**SAME, "lr": 0.1}, 0.57)]
    db["experiments"].insert_many(docs)
    epochs = [{"_id": ObjectId(), "experiment_id": d["_id"], "run_id": d["run_id"], "epoch": e,
               "metrics": {"train_loss": 1.0 / (e + d["run_id"]), "val_loss": 1.1 / (e + 1),
                           "learning_rate": 0.01}, "timestamp": None, "_source": "testhost"}
              for d in docs for e in range(1, 2 + d["run_id"] * 2)]
    db["epochs"].insert_many(epochs)
    return docs


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.status == 200
        return answer.read().decode()


@pytest.fixture
def dashboard(tmp_path: Path, target_args: list[str]):
    port = free_port()
    dash = syncd_process("dashboard", "--listen", f"127.0.0.1:{port}", "--state-dir",
                         tmp_path / "state", *target_args)
    try:
        wait_port(port, dash, "syncd dashboard")
        yield f"http://127.0.0.1:{port}"
    finally:
        dash.terminate()
        dash.communicate(timeout=30)


def test_compare_shows_what_differs_and_folds_equal_keys(db, target_args):
    three_runs(db)
    result = run_cli("experiments", "compare", "1", "2", "3", *target_args)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].split() == ["run", "1", "run", "2", "run", "3"]  # one column per run
    row = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert row["config.lr"] == ["0.001", "0.01", "0.1"]
    assert row["config.dropout"] == ["0.5", "0.25", "missing"]  # run 3 has no dropout
    assert row["metrics.best_val_loss"] == ["0.42", "0.31", "0.57"]
    assert "config.batch_size" not in result.out and "metrics.best_epoch" not in result.out
    assert "12 equal config keys not shown (--all shows them)" in result.out
    assert "2 equal metrics not shown (--all shows them)" in result.out

    every = run_cli("experiments", "compare", "1", "2", "3", "--all", *target_args)
    assert every.code == 0, every
    assert re.search(r"config\.batch_size\s+32\s+32\s+32\s+=", every.out)
    assert re.search(r"config\.lr\s+0\.001\s+0\.01\s+0\.1\s+differs", every.out)
    assert "not shown" not in every.out

    as_json = json.loads(run_cli("experiments", "compare", "1", "3", "--json",
                                 *target_args).out)
    assert [r["label"] for r in as_json["runs"]] == ["run 1", "run 3"]
    assert {d["key"] for d in as_json["differences"]} == {"lr", "dropout", "best_val_loss"}
    assert as_json["equal"]["config"] == 12


def test_a_key_one_run_lacks_and_the_other_holds_null_differs(db, target_args, dashboard):
    """`prefetch_factor` missing from one run's config and null in the other's: not both
    "–" and equal, but "missing" against "–", a difference (CLI, --json, /compare)."""
    db["experiments"].insert_many([experiment(37, {**SAME}),
                                   experiment(38, {**SAME, "prefetch_factor": None})])
    every = run_cli("experiments", "compare", "38", "37", "--all", *target_args)
    assert re.search(r"config\.prefetch_factor\s+–\s+missing\s+differs", every.out), every
    assert "12 equal config keys" in run_cli("experiments", "compare", "38", "37",
                                             *target_args).out  # the 13th differs
    found = json.loads(run_cli("experiments", "compare", "38", "37", "--json",
                               *target_args).out)["differences"]
    key = next(d for d in found if d["key"] == "prefetch_factor")
    assert key["values"] == [None, None] and key["missing"] == [False, True], key
    html = get(f"{dashboard}/compare?runs=38,37")
    row = html[html.index("<th scope=row>config.prefetch_factor</th>"):]
    assert row[:row.index("</tr>")].endswith("<td>–</td><td class=muted>missing</td>"), row


def test_compare_show_and_json_never_print_a_config_credential(db, target_args):
    """A legacy config that holds an API key or a password: the dashboard masks it, and
    so does every CLI output (compare's table and --json, history and search --json)."""
    secret = "sk-live-0123456789abcdef"
    db["experiments"].insert_many([
        experiment(1, {"lr": 0.1, "wandb_api_key": secret, "db": {"password": secret}}, 0.4),
        experiment(2, {"lr": 0.2, "wandb_api_key": secret + "x", "db": {"password": None}})])
    outputs = [run_cli("experiments", "compare", "1", "2", "--all", *target_args),
               run_cli("experiments", "compare", "1", "2", "--json", *target_args),
               run_cli("experiments", "history", "1", "--json", *target_args),
               run_cli("experiments", "search", "{}", "--json", *target_args)]
    for result in outputs:
        assert result.code == 0, result
        assert secret not in result.out, result
    assert re.search(r"config\.wandb_api_key\s+\*\*\*\s+\*\*\*\s+differs", outputs[0].out)
    assert re.search(r"config\.lr\s+0\.1\s+0\.2", outputs[0].out)  # the rest as it is


def test_search_and_best_say_how_many_of_how_many_and_page(db, target_args):
    db["experiments"].insert_many([experiment(i, best=i / 100) for i in range(1, 26)])
    page = run_cli("experiments", "search", "--limit", "10", "--offset", "10", *target_args)
    assert page.code == 0, page
    shown = [int(line.split()[0]) for line in page.out.splitlines()[2:12]]
    assert shown == list(range(11, 21))
    assert "showing 11-20 of 25 experiment(s) (--offset 20 shows the next)" in page.out
    best = run_cli("experiments", "best", "--challenge", "1", "-n", "5", *target_args)
    assert "showing 1-5 of 25 experiment(s) (--offset 5 shows the next)" in best.out
    last = run_cli("experiments", "best", "--challenge", "1", "-n", "5", "--offset", "20",
                   *target_args)
    assert [int(line.split()[0]) for line in last.out.splitlines()[2:7]] == [21, 22, 23, 24, 25]
    assert "showing 21-25 of 25 experiment(s)" in last.out and "shows the next" not in last.out


def test_a_page_past_the_end_says_so_and_links_the_last_page(db, dashboard, target_args):
    """38 runs, `?page=2` (or `--offset 100`): not "none after the first 100 of 38 ...
    page 2 of 1" but past the end, how many match, and a link back to the last page."""
    db["experiments"].insert_many([experiment(i, best=i / 100) for i in range(1, 39)])
    for query in ("page=2", "page=7", "offset=150"):
        page = get(f"{dashboard}/experiments?{query}")
        assert "past the end: 38 experiment(s) match, on 1 page(s)" in page, query
        assert "of 1<" not in page and "first 1" not in page, query
        assert 'href="/experiments?page=1" data-testid=prev-page>← last page' in page, query
    cli = run_cli("experiments", "search", "--offset", "100", *target_args)
    assert cli.code == 0 and cli.out == "--offset 100 is past the end: 38 experiment(s) match\n"


def test_the_experiments_page_says_the_true_count_and_pages(db, dashboard):
    docs = [experiment(i, best=None if i % 3 == 0 else round((i * 7919) % 1000 / 1000, 3),
                       status="completed" if i % 2 else "running") for i in range(1, 2501)]
    db["experiments"].insert_many(docs)
    ranked = sorted(docs, key=lambda d: (d["metrics"]["best_val_loss"] is None,
                                         d["metrics"]["best_val_loss"] or 0, d["run_id"]))
    first = get(dashboard + "/experiments")
    assert "1–100 of 2,500 experiment(s)" in first and "page 1 of 25" in first
    assert "1000 experiment(s)" not in first
    runs = re.findall(r'<a href="/experiments/[0-9a-f]{24}">(\d+)</a>', first)
    assert [int(r) for r in runs] == [d["run_id"] for d in ranked[:100]]
    assert 'data-testid=next-page' in first and 'data-testid=prev-page' not in first

    second = get(dashboard + "/experiments?page=2")
    assert "101–200 of 2,500 experiment(s)" in second
    runs = re.findall(r'<a href="/experiments/[0-9a-f]{24}">(\d+)</a>', second)
    assert [int(r) for r in runs] == [d["run_id"] for d in ranked[100:200]]
    assert 'href="/experiments?page=1" data-testid=prev-page' in second
    assert 'href="/experiments?page=3" data-testid=next-page' in second

    # Across the border between runs with a loss and runs without one, by offset.
    border = sum(1 for d in docs if d["metrics"]["best_val_loss"] is not None)
    api = json.loads(get(f"{dashboard}/api/experiments?offset={border - 30}"))
    assert api["total"] == 2500 and api["offset"] == border - 30
    assert [x["run_id"] for x in api["experiments"]] == \
        [d["run_id"] for d in ranked[border - 30:border + 70]]
    between = get(f"{dashboard}/experiments?offset=150")
    assert "151–250 of 2,500" in between
    assert 'href="/experiments?offset=50" data-testid=prev-page' in between
    assert 'href="/experiments?offset=250" data-testid=next-page' in between
    last = get(dashboard + "/experiments?page=25")
    assert "2,401–2,500 of 2,500" in last and "data-testid=next-page" not in last

    # Runs losing their loss move the border: pages read before are exact after it.
    db["experiments"].update_many({"run_id": {"$gt": 1000}},
                                  {"$set": {"metrics.best_val_loss": None}})
    for d in docs:
        if d["run_id"] > 1000:
            d["metrics"]["best_val_loss"] = None
    ranked = sorted(docs, key=lambda d: (d["metrics"]["best_val_loss"] is None,
                                         d["metrics"]["best_val_loss"] or 0, d["run_id"]))
    moved = sum(1 for d in docs if d["metrics"]["best_val_loss"] is not None)
    for at in (border - 30, moved - 30, moved + 100):
        api = json.loads(get(f"{dashboard}/api/experiments?offset={at}"))
        assert [x["run_id"] for x in api["experiments"]] == \
            [d["run_id"] for d in ranked[at:at + 100]], at

    # Filters narrow the count and stay in the page links.
    running = get(dashboard + "/experiments?status=running&page=2")
    assert "101–200 of 1,250 experiment(s)" in running
    assert 'href="/experiments?status=running&amp;page=3"' in running


def test_the_compare_page_shows_the_differences_and_one_curve_per_run(db, dashboard, tmp_path):
    docs = three_runs(db)
    refs = ",".join(str(d["_id"]) for d in docs)
    html = get(f"{dashboard}/compare?runs={refs}")
    assert "<h1>Compare 3 run(s)</h1>" in html
    table = html[html.index("data-testid=differences"):]
    table = table[:table.index("</table>")]
    assert "config.lr" in table and "config.dropout" in table
    assert "config.batch_size" not in table and "metrics.best_epoch" not in table
    assert "12 equal config keys, 2 equal metrics not shown" in html
    # No inline script: the page's data is a JSON block, its code static files.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert all(body == "" or 'type="application/json"' in attrs for attrs, body in scripts)
    data = json.loads(next(body for attrs, body in scripts if "compare-data" in attrs))
    assert [len(c["epochs"]) for c in data["curves"]] == [3, 5, 7]
    every = get(f"{dashboard}/compare?runs=1,2,3&all=1")
    assert "config.batch_size" in every and "not shown" not in every

    # In a browser: tick three runs on the experiments list, compare, one line per run.
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(dashboard + "/experiments")
        for run in (2, 1, 3):  # best loss first: the list shows 2, 1, 3
            page.get_by_label(f"compare run {run}").check()
        page.get_by_test_id("compare-button").click()
        page.wait_for_url("**/compare?runs=*")
        series = page.locator("#compare-chart svg g.series")
        assert series.count() == 3
        assert series.evaluate_all("gs => gs.map(g => g.dataset.series)") == \
            ["run 2", "run 1", "run 3"]
        assert [series.nth(i).locator("circle").count() for i in range(3)] == [5, 3, 7]
        assert page.locator("#compare-legend .legend-item").count() == 3
        assert "config.lr" in page.get_by_test_id("differences").inner_text()
        page.screenshot(path=tmp_path / "compare.png", full_page=True)
        assert not errors, errors
        browser.close()
