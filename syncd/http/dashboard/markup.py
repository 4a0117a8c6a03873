"""The HTML building blocks every dashboard page is made of: escaped text, the page
frame, tables, fact lists, and data handed to the scripts as a JSON block.

Below the pages (pages.py, pages_history.py) so each can use them without importing
the other. Everything shown goes through `e` (escaped); no inline script or style.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

NAV = (("/", "Sync health"), ("/experiments", "Experiments"), ("/cache", "Cache"))


def e(value: Any) -> str:
    """A value as escaped text ('–' for none)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return escape(f"{value:.4g}")
    return escape(str(value))


# Characters that could end or re-open markup inside a <script> block (`</script>`,
# `<!--`, `<script`), or that JavaScript once read as line ends: as JSON escapes.
SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                  0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(value: Any) -> str:
    """`value` as JSON safe inside `<script type=application/json>` whatever its strings
    hold (a `<!--<script>` in a timestamp would otherwise swallow the rest of the page)."""
    return json.dumps(value).translate(SCRIPT_ESCAPES)


def page(title: str, active: str, body: str, script: bool = False,
         scripts: tuple[str, ...] = ()) -> str:
    """A whole page; `script`: chart.js and dashboard.js (the experiment page's chart and
    live updates, the filters' submit), `scripts`:
    other files of static/ (run in order, after the page is parsed)."""
    nav = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{name}</a>'
                  for href, name in NAV)
    files = (("chart.js", "dashboard.js") if script else ()) + scripts
    js = "".join(f'<script src="/static/{name}" defer></script>' for name in files)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)} · syncd</title>"
            f"<link rel=stylesheet href='/static/dashboard.css'>{js}</head>"
            f"<body><header><span class=brand>syncd</span><nav>{nav}</nav></header>"
            f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")


def table(headers: list[str], rows: list[list[str]], test_id: str, empty: str) -> str:
    if not rows:
        return f'<p class=empty data-testid="{test_id}">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table data-testid="{test_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def facts(pairs: list[tuple[str, Any]], test_id: str) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs)
    return f'<dl class=facts data-testid="{test_id}">{items}</dl>'


def shown_value(value: Any) -> str:
    """A stored value as escaped text (objects and lists as compact JSON)."""
    if isinstance(value, (dict, list)):
        return e(json.dumps(value, separators=(",", ":")))
    return e(value)
