"""The dashboard's past: the experiments list `?as_of=TIME` and a run's versions.

The list as of a moment is the live list's own query (`Tracker.best_first`) on the
`AsOfTracker` of that moment (syncd.client.tracker), whose rebuilt documents are kept
30 s: turning pages costs one rebuild. A time that cannot be read, or one before
history starts, is a 400 saying so. Read-only, like every dashboard read.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from syncd.client.tracker import Tracker
from syncd.errors import SyncdError
from syncd.http.context import HttpContext
from syncd.http.dashboard.answers import BadQuery, jsonable


@functools.lru_cache(maxsize=4)
def _migrations(folder: str | None) -> tuple[Any, ...]:
    from syncd.engine.migration_files import load_migrations

    return tuple(load_migrations(Path(folder) if folder else None))


def tracker(ctx: HttpContext, as_of: str = "") -> Tracker:
    """The live Tracker, or the one of `as_of` (a BadQuery when it cannot be)."""
    if not as_of.strip():
        return Tracker(ctx.db)
    folder = ctx.migrations
    try:
        return Tracker(ctx.db, as_of=as_of.strip(),
                       migrations=_migrations(str(folder) if folder else None))
    except SyncdError as exc:
        raise BadQuery(str(exc)) from None


def choices(found: Tracker) -> dict[str, list[Any]]:
    """The filters' choices among the runs of that moment."""
    coll = found.experiments
    return {"challenge": sorted((c for c in coll.distinct("challenge") if c is not None),
                                key=str),
            "status": sorted(str(s) for s in coll.distinct("status") if s is not None),
            "source": sorted(str(x) for x in coll.distinct("_source") if x is not None)}


def scope(found: Tracker) -> dict[str, Any] | None:
    """Which moment a page shows, for its banner (None: now)."""
    where = getattr(found, "scope", None)
    return None if where is None else jsonable(where.to_dict())


def versions(ctx: HttpContext, ref: str, as_of: str = "") -> dict[str, Any] | None:
    """A run's versions for its page (None: no history of it is recorded)."""
    from syncd.client.asof import parse_time
    from syncd.client.versions import run_versions
    from syncd.sinks.julian import julian_day

    folder = ctx.migrations
    try:
        until = julian_day(parse_time(as_of)) if as_of.strip() else None
        found = run_versions(ctx.db, ref, None, until,
                             _migrations(str(folder) if folder else None))
    except SyncdError:
        return None
    rows = []
    for v in found.versions:
        rows.append({"at": v.shown_at(), "op": v.op, "note": v.note(),
                     "changes": [{"key": c.key, "before": c.shown()[0], "after": c.shown()[1]}
                                 for c in v.shown_changes()]})
    return jsonable({"since": found.since, "versions": rows})
