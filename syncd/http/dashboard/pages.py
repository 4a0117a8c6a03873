"""The dashboard's pages: plain server-rendered HTML (the data of syncd.http.dashboard.data).

No template engine: each page is a few f-strings over escaped values. The scripts are
files of static/ (chart.js draws the loss charts, dashboard.js follows an experiment's
events and submits the filters, compare.js fills the compare page's chart); pages hold
no inline script or style (the Content-Security-Policy of syncd.http.browser forbids
both) and hand the scripts data as a JSON block that is never executed (`script_json`;
the building blocks are syncd.http.dashboard.markup).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from syncd.client.compare import NOUNS
from syncd.http.dashboard import pages_history as past
from syncd.http.dashboard.markup import e, facts, page, script_json, shown_value, table

# -- sync health ---------------------------------------------------------------------------


def health_page(data: dict[str, Any]) -> str:
    daemon = data.get("daemon")
    outage = data.get("outage")
    if daemon is None:
        state = '<p class="badge bad" data-testid=daemon-state>no daemon has run here</p>'
    elif outage:
        state = (f'<p class="badge bad" data-testid=daemon-state>waiting for '
                 f'{e(outage.get("what"))} since {e(outage.get("since"))}: '
                 f'{e(outage.get("error"))}</p>')
    elif daemon.get("running"):
        ready = "in sync" if daemon.get("ready") else "starting (first sync)"
        state = f'<p class="badge ok" data-testid=daemon-state>running: {ready}</p>'
    else:
        state = (f'<p class="badge bad" data-testid=daemon-state>not running '
                 f'{e(daemon.get("note"))}</p>')
    d = daemon or {}
    summary = facts([("source", data.get("source")), ("database", data.get("database")),
                     ("migration version", data.get("version")), ("host", d.get("host")),
                     ("pid", d.get("pid")), ("legacy file", d.get("sqlite")),
                     ("capture", d.get("mode")), ("last heartbeat", d.get("heartbeat_at")),
                     ("quarantined rows", data.get("quarantined"))], "health-summary")
    rows = [[e(data.get("source")), e(t["table"]), e(t["collection"]), e(t["lag_seconds"]),
             e(t["lag_rows"]), e(t["applied"]), e(t["deleted"]), e(t["last_applied_at"]),
             f'<span class="{"bad" if t["last_error"] else ""}">{e(t["last_error"])}</span>',
             e(t["quarantined"]), e(t["dropped_at"])] for t in data.get("tables", [])]
    grid = table(["source", "table", "collection", "lag (s)", "lag (rows)", "applied",
                  "deleted", "last apply", "last error", "quarantined", "dropped"], rows,
                 "health-tables", "no tables followed (no daemon heartbeat)")
    skipped = data.get("not_mirrored") or []
    grid += "" if not skipped else "<h2>Not mirrored</h2>" + table(
        ["table", "why"], [[e(t["table"]), e(t["reason"])] for t in skipped],
        "health-not-mirrored", "")
    events = data.get("events")
    ev = "" if not events else "<h2>Events</h2>" + facts(
        [("sent", events.get("sent")), ("buffered", events.get("buffered")),
         ("dropped", events.get("dropped")),
         ("Redis down since", events.get("redis_down_since"))], "health-events")
    return page("Sync health", "/", state + summary + "<h2>Tables</h2>" + grid + ev)


# -- experiments ---------------------------------------------------------------------------


def _select(name: str, current: str, choices: list[Any]) -> str:
    options = [f'<option value=""{"" if current else " selected"}>any</option>']
    if current and current not in map(str, choices):  # choices are re-read every 30 s
        choices = [*choices, current]
    for choice in choices:
        value = escape(str(choice))
        chosen = " selected" if str(choice) == current else ""
        options.append(f'<option value="{value}"{chosen}>{value}</option>')
    return (f"<label>{name} <select name={name} data-autosubmit>"
            f"{''.join(options)}</select></label>")


def json_block(element_id: str, data: Any) -> str:
    """Data for a page's script: a JSON <script> block (never run; `<` escaped so no value
    can close it)."""
    return f'<script type="application/json" id="{element_id}">{script_json(data)}</script>'


def _pager(data: dict[str, Any], marked: bool = True) -> str:
    """How many match, which of them this page shows, and links to the pages around it
    (`marked`: with the test ids; the copy under the table has none)."""
    total, start, shown = data["total"], data["offset"], len(data["experiments"])
    past_end = bool(total) and not shown  # ?page= or ?offset= beyond the last run
    if not total:
        count = "0 experiment(s)"
    elif past_end:
        count = (f"past the end: {total:,} experiment(s) match, on "
                 f"{data['pages']:,} page(s)")
    else:
        count = (f"{start + 1:,}–{start + shown:,} of {total:,} experiment(s), "
                 "best validation loss first")
    kept = {k: v for k, v in data["filters"].items() if v}

    def mark(test_id: str) -> str:
        return f" data-testid={test_id}" if marked else ""

    page_no, limit = data["page"], data["limit"]

    def link(at: int, text: str, test_id: str) -> str:
        """To the page starting at `at`: `?page=` where pages fall, else `?offset=`."""
        where = {"page": at // limit + 1} if at % limit == 0 else {"offset": at}
        href = "/experiments?" + urlencode({**kept, **where})
        return f'<a href="{escape(href)}"{mark(test_id)}>{text}</a>'

    if past_end:  # back to the last page that holds runs, not to another empty one
        prev = link((data["pages"] - 1) * limit, "← last page", "prev-page")
    else:
        prev = link(max(0, start - limit), "← previous", "prev-page") if start > 0 else ""
    following = link(start + shown, "next →", "next-page") \
        if start + shown < total and shown else ""
    where = f"page {page_no:,} of {data['pages']:,}" if total and not past_end else ""
    return (f'<p class="pager muted"><span{mark("experiments-count")}>{count}</span>'
            f"{prev}<span>{where}</span>{following}</p>")


def experiments_page(data: dict[str, Any]) -> str:
    f, choices = data["filters"], data["choices"]
    form = ("<form class=filters method=get action=/experiments>"
            + "".join(_select(n, f[n], choices[n]) for n in ("challenge", "status", "source"))
            + past.as_of_field(data) + "<noscript><button>filter</button></noscript></form>")
    then = escape(past.as_of_query(data))
    rows = [[f'<a href="/experiments/{quote(x["id"])}{then}">{e(x["run_id"])}</a>',
             e(x["challenge"]), e(x["status"]), e(x["model"]), e(x["best_val_loss"]),
             e(x["best_epoch"]), e(x["total_epochs"]), e(x["start_time"]), e(x["source"]),
             f'<input type=checkbox name=runs value="{e(x["id"])}" form=compare-form '
             f'aria-label="compare run {e(x["run_id"])}">']
            for x in data["experiments"]]
    grid = table(["run", "challenge", "status", "model", "best val loss", "best epoch",
                  "epochs", "started", "source", "compare"], rows, "experiments",
                 "no experiments match these filters")
    pick = ("<form id=compare-form class=compare-bar method=get action=/compare>"
            "<button data-testid=compare-button>compare the ticked runs</button></form>"
            if rows else "")
    return page("Experiments", "/experiments",
                past.as_of_banner(data) + form + _pager(data) + pick + grid
                + _pager(data, marked=False), script=True)


def _config(config: Any) -> str:
    if not isinstance(config, dict) or not config:
        return '<p class=empty>no config</p>'
    return facts(sorted((str(k), json.dumps(v) if isinstance(v, (dict, list)) else v)
                        for k, v in config.items()), "config")


def experiment_page(data: dict[str, Any]) -> str:
    x = data["experiment"]
    metrics = x.get("metrics") or {}
    title = f"Run {x.get('run_id')}"
    summary = facts([("challenge", x.get("challenge")), ("status", x.get("status")),
                     ("model", (x.get("model") or {}).get("name")),
                     ("started", x.get("start_time")), ("ended", x.get("end_time")),
                     ("notes", x.get("notes"))], "experiment-summary")
    metric_list = facts(sorted(metrics.items()), "metrics")
    points = script_json({"id": x["_id"], "epochs": data["epochs"]})
    still = " data-as-of" if data.get("as_of") else ""  # a past state: not followed live
    chart = (f'<figure class=chart><div id=chart data-testid=chart{still} '
             f'data-experiment="{e(x["_id"])}">'
             f'</div><figcaption><span class="key train">train loss</span> '
             f'<span class="key val">validation loss</span> per epoch · '
             f'<span id=live class=muted>connecting…</span></figcaption></figure>'
             f'<script type=application/json id=epochs-data>{points}</script>')
    epochs = table(["epoch", "train loss", "val loss", "learning rate", "time"],
                   [[e(p["epoch"]), e(p["train_loss"]), e(p["val_loss"]),
                     e(p["learning_rate"]), e(p["timestamp"])] for p in data["epochs"]],
                   "epochs", "no epochs yet")
    checkpoints = table(["epoch", "val loss", "file", "size (MB)", "best", "time"],
                        [[e(c.get("epoch")), e((c.get("metrics") or {}).get("val_loss")),
                          e((c.get("file") or {}).get("path")),
                          e((c.get("file") or {}).get("size_mb")), e(c.get("is_best")),
                          e(c.get("timestamp"))] for c in data["checkpoints"]],
                        "checkpoints", "no checkpoints")
    body = (summary + "<h2>Training curve</h2>" + chart + "<h2>Metrics</h2>" + metric_list
            + "<h2>Config</h2>" + _config(x.get("config")) + "<h2>Epochs</h2>"
            + f"<div id=epochs-table>{epochs}</div>"
            + "<h2>Checkpoints</h2>" + checkpoints + past.versions_section(data))
    back = f"/experiments/{quote(str(x['_id']))}"
    return page(title, "/experiments", past.as_of_banner(data, back) + body, script=True)


def compare_page(data: dict[str, Any], show_all: bool, refs: list[str]) -> str:
    """Runs side by side: their validation loss on one chart (static/compare.js), then the
    keys whose values differ (equal ones folded, with a link that shows them)."""
    runs = data["runs"]
    heads = "".join(f'<th><a href="/experiments/{quote(r["id"])}">{e(r["label"])}</a></th>'
                    for r in runs)
    show_all = show_all or len(runs) < 2  # one run: nothing to fold against
    shown = [r for r in data["rows"] if show_all or not r["same"]]
    body = "".join(
        f'<tr{" class=same" if r["same"] and len(runs) > 1 else ""}><th scope=row>'
        f'{e(r["key"] if r["section"] == "run" else r["section"] + "." + r["key"])}</th>'
        + "".join("<td class=muted>missing</td>" if gone else f"<td>{shown_value(v)}</td>"
                  for v, gone in zip(r["values"], r["missing"], strict=True))
        + "</tr>" for r in shown)
    grid = (f'<table data-testid=differences><thead><tr><th></th>{heads}</tr></thead>'
            f"<tbody>{body}</tbody></table>" if shown else
            '<p class=empty data-testid=differences>no differences</p>')
    here = "/compare?" + urlencode({"runs": ",".join(refs)})
    folded = ""
    if not show_all and data["equal"]:
        counts = ", ".join(f"{n} equal {NOUNS[s][n != 1]}" for s, n in data["equal"].items())
        folded = (f'<p class=muted data-testid=folded>{counts} not shown '
                  f'(<a href="{escape(here + "&all=1")}">show them</a>)</p>')
    elif show_all and len(runs) > 1:
        folded = f'<p class=muted><a href="{escape(here)}">only the differences</a></p>'
    chart = ('<figure class=chart><div id=compare-chart data-testid=compare-chart></div>'
             '<figcaption>validation loss per epoch · <span id=compare-legend></span>'
             "</figcaption></figure>" + json_block("compare-data", {"curves": data["curves"]}))
    title = f"Compare {len(runs)} run(s)"
    return page(title, "/experiments", "<h2>Validation loss</h2>" + chart
                + "<h2>Differences</h2>" + grid + folded, scripts=("chart.js", "compare.js"))


# -- cache ---------------------------------------------------------------------------------


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):  # the units [cache] budgets are set in
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return "–"


def _bar(fraction: Any) -> str:
    if not isinstance(fraction, (int, float)):
        return "–"
    pct = max(0.0, min(1.0, float(fraction))) * 100
    return f'<progress class=bar max=100 value="{pct:.1f}"></progress> {pct:.0f}%'


def _local_tier(local: dict[str, Any] | None) -> str:
    """This host's local tier (shards memory-mapped by training processes)."""
    if not local:
        return ""
    if local.get("error"):
        return f'<h2>Local tier</h2><p class=bad data-testid=local-tier>{e(local["error"])}</p>'
    if not local.get("enabled"):
        return ("<h2>Local tier</h2><p class=empty data-testid=local-tier>off on this host "
                "([cache] local_bytes = 0)</p>")
    return "<h2>Local tier (this host)</h2>" + facts(
        [("directory", local.get("directory")),
         ("bytes / budget", f"{_bytes(local.get('bytes'))} / "
                            f"{_bytes(local.get('budget_bytes'))}"),
         ("shards", local.get("shards")), ("hits (windows)", local.get("hits")),
         ("misses (windows)", local.get("misses")), ("fills", local.get("fills")),
         ("bad shards rebuilt", local.get("bad"))], "local-tier")


def cache_page(data: dict[str, Any]) -> str:
    if not data.get("indexed"):
        return page("Cache", "/cache", '<p class=empty data-testid=cache-files>no HDF5 file '
                    "indexed yet (syncd run --hdf5-dir or syncd warm)</p>"
                    + _local_tier(data.get("local")))
    memory = data.get("memory") or {}
    used, budget = memory.get("used_bytes"), memory.get("budget_bytes")
    share = used / budget if isinstance(used, int) and budget else None
    summary = facts([("files", data.get("files_total")),
                     ("windows cached", f"{data.get('windows_cached')} / "
                                        f"{data.get('windows_total')}"),
                     ("coverage", None if data.get("coverage") is None
                      else f"{data['coverage'] * 100:.1f}%"),
                     ("bytes / budget", f"{_bytes(used)} / {_bytes(budget)}"),
                     ("Redis used memory", _bytes(memory.get("redis_used_memory"))),
                     ("last scan", data.get("last_scan_at")),
                     ("Redis", data.get("redis_error") or "reachable")], "cache-summary")
    budget_bar = f'<p data-testid=budget>budget used: {_bar(share)}</p>'
    rows = [[e(f["path"]), e(f["state"]), e(f["generation"]), e(f["cached"]),
             e(f["windows"]), _bar(f["coverage"]), e(", ".join(f["features"])),
             e(f["warmed_at"])] for f in data.get("files", [])]
    grid = table(["file", "state", "generation", "cached", "windows", "coverage", "features",
                  "warmed"], rows, "cache-files", "no files")
    bad = table(["file", "error", "since"],
                [[e(q["path"]), f'<span class=bad>{e(q["error"])}</span>', e(q["at"])]
                 for q in data.get("quarantined", [])], "quarantined-files",
                "no quarantined files")
    return page("Cache", "/cache", summary + budget_bar + "<h2>Files</h2>" + grid
                + "<h2>Quarantined files</h2>" + bad + _local_tier(data.get("local")))
