"""The dashboard's past, as HTML: the as-of banner and field of the experiments list,
and a run's versions on its page (the data of syncd.http.dashboard.asof).

Escaped as every page is (`e`); no inline script or style (the Content-Security-Policy
forbids both).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

from syncd.http.dashboard.markup import e, shown_value, table

MAX_CHANGES = 12  # keys shown per version; 2 or more beyond it are counted


def as_of_query(data: dict[str, Any]) -> str:
    """`?as_of=...` for a link from a page shown as of a moment ('' for now)."""
    when = (data.get("filters") or {}).get("as_of") or (data.get("as_of") or {}).get("as_of")
    return "?" + urlencode({"as_of": when}) if data.get("as_of") and when else ""


def as_of_field(data: dict[str, Any]) -> str:
    """The list's time field: empty for now (Enter submits the filters with it)."""
    current = (data.get("filters") or {}).get("as_of", "")
    return ("<label>as of <input name=as_of size=26 data-testid=as-of-field "
            f'value="{escape(current)}" placeholder="now (or 2025-10-20T14:00:00+02:00)">'
            "</label>")


def as_of_banner(data: dict[str, Any], back: str = "/experiments") -> str:
    """What moment the page shows (rebuilt from history) and what it cannot show."""
    scope = data.get("as_of")
    if not scope:
        return ""
    starts = sorted((scope.get("history_starts") or {}).values())
    notes = "".join(f"<li>{e(n)}</li>" for n in scope.get("notes") or [])
    return (f'<div class="badge as-of" data-testid=as-of-banner><p>As of {e(scope["as_of"])}'
            f" · rebuilt from history (kept from {e(starts[0] if starts else None)}, the "
            f'first sync) · <a href="{escape(back)}">now</a></p>'
            + (f"<ul>{notes}</ul>" if notes else "") + "</div>")


def _what(version: dict[str, Any]) -> str:
    op, found = version["op"], version["changes"]
    if op == "snapshot":
        return "first seen (the first sync)"
    if op == "delete":
        return "deleted"
    keep = MAX_CHANGES if len(found) > MAX_CHANGES + 1 else len(found)  # never "and 1 more"
    items = [f"<li><code>{e(c['key'])}</code>: "
             + (f"{shown_value(c['before'])} → " if op != "insert" else "")
             + f"{shown_value(c['after'])}</li>" for c in found[:keep]]
    more = len(found) - keep
    if more > 0:
        items.append(f"<li>and {more} more</li>")
    return f"<ul class=changes>{''.join(items)}</ul>" if items else "no field changed"


def versions_section(data: dict[str, Any]) -> str:
    """A run's versions, oldest first: when each statement ran, what it changed."""
    found = data.get("versions")
    if not found:
        return ('<h2>Versions</h2><p class=empty data-testid=versions>no versions recorded '
                "(history starts at the first sync)</p>")
    rows = [[e(v["at"]) + (f"<br><small class=muted>{e(v['note'])}</small>" if v.get("note")
                           else ""), e(v["op"]), _what(v)] for v in found["versions"]]
    return (f"<h2>Versions</h2><p class=muted>history kept from {e(found['since'])} "
            "(the first sync)</p>"
            + table(["when", "what", "changes"], rows, "versions", "no versions recorded"))
