"""Rendering the past for people: which moment an as-of answer is of, and a run's
versions (`syncd experiments ... --as-of`, `history REF --versions`)."""

from __future__ import annotations

from typing import Any

from syncd.cli.output import say
from syncd.cli.render import _cell

MAX_CHANGES = 12  # keys listed per version; 2 or more beyond it are counted


def print_as_of(scope: dict[str, Any]) -> None:
    """'as of T (history from ...)' and what the answer cannot show."""
    starts = sorted(scope["history_starts"].values())
    say(f"as of {scope['as_of']} (history from {starts[0] if starts else '?'}: "
        "the first sync)")
    for note in scope["notes"]:
        say(f"  note: {note}")


def _what(version: Any) -> str:
    if version.op == "snapshot":
        return "first seen (the first sync)"
    if version.op == "delete":
        return "deleted"
    parts = []
    shown = version.shown_changes()
    keep = MAX_CHANGES if len(shown) > MAX_CHANGES + 1 else len(shown)  # never "and 1 more"
    for change in shown[:keep]:
        before, after = change.shown()
        parts.append(f"{change.key}: {_cell(before, 30)} -> {_cell(after, 30)}"
                     if version.op != "insert" else f"{change.key}={_cell(after, 30)}")
    more = len(shown) - keep
    text = "; ".join(parts) if version.op != "insert" else "inserted: " + ", ".join(parts)
    return (text or "no field changed") + (f"; and {more} more" if more > 0 else "")


def print_versions(found: Any) -> None:
    """One line per version, oldest first: when its statement ran (or, for one no change
    log gave, when syncd found it), what it did."""
    say(f"run {found.run_id} ({found.source}, _id {found.id}): "
        f"{len(found.versions)} version(s); history starts at "
        f"{found.since.isoformat()} (the first sync)")
    for v in found.versions:
        say(f"{v.shown_at()}  {v.op:<8}  {_what(v)}" + (f"  ({v.note()})" if v.found else ""))
