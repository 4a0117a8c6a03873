"""The experiments as they were at a moment: what `Tracker(db, as_of=T)` reads.

An as-of tracker (syncd.client.tracker.AsOfTracker) is a `Tracker` whose three
collections are this module's `AsOfView`: in memory, the documents of T, rebuilt
from history (syncd.client.rebuild), behind the read methods the Tracker calls
(syncd.client.memory). Every query (best, search, compare, history,
paging) is therefore the Tracker's own, with MongoDB's filter and sort rules, on the
state of T. A view is kept VIEW_SECONDS per database, moment and scope, so turning
pages or reloading costs one rebuild, not one per page; later versions of an earlier
moment can still arrive (a daemon catching up), which the short life allows for.

A time is an ISO 8601 moment with its offset (`2025-10-20T14:03:00+02:00`, `...Z`) or
a date alone (`2025-10-20`: that day's 00:00 UTC), or `now` (the moment it is read,
from history like any other); a `datetime` without a zone is UTC, as pymongo reads it.
History starts at the first sync: a moment before it is refused, and so is one before
the cutoff of `[history] keep` (what pruning left is exact only from there on:
syncd.sinks.history_reader.HistoryReader.check_kept).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from syncd.checkpoint.store import StateStore
from syncd.client.memory import MemoryCollection
from syncd.client.rebuild import (
    collection_as_of,
    history_sources,
    history_start,
    run_key,
    run_rows_as_of,
    when,
)
from syncd.engine.migration_files import MigrationFile
from syncd.errors import ConfigError
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import julian_day

VIEW_SECONDS = 30.0
VIEWS_KEPT = 8  # per client
RUNS_KEPT = 64  # one run's epochs and checkpoints, per view
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME_HELP = ("an ISO 8601 time with its offset (2025-10-20T14:03:00+02:00, or Z for UTC), "
             "a date (2025-10-20: its 00:00 UTC) or now")

Moment = str | dt.datetime | dt.date


def parse_time(value: Moment) -> dt.datetime:
    """An as-of moment as an aware UTC datetime (see the module for what is accepted)."""
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return _in_utc(moment, str(value))
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    text = str(value).strip()
    if text.lower() == "now":
        return dt.datetime.now(dt.UTC)
    try:
        if DATE_ONLY.fullmatch(text):
            return parse_time(dt.date.fromisoformat(text))
        moment = dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"as of {text[:60]!r}: not a time; give {TIME_HELP}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"as of {text[:60]!r}: which time zone? Give {TIME_HELP}")
    return _in_utc(moment, text)


def _in_utc(moment: dt.datetime, text: str) -> dt.datetime:
    """`moment` in UTC; one that UTC cannot hold (9999-12-31T23:00-02:00 is in year
    10000) is refused in one line, not with Python's OverflowError."""
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ConfigError(f"as of {text[:60]!r}: out of range (in UTC it falls outside "
                          "the years 1 to 9999)") from None


def shown(moment: dt.datetime) -> str:
    """A moment for people: ISO, UTC, to the millisecond when it has a fraction."""
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.astimezone(dt.UTC).isoformat(timespec=spec)


def check_kept(db: Database, sources: Sequence[str], jd: float) -> None:
    """Refuse `jd` if `[history] keep` pruned any of `sources` past it (what its prunes
    left is exact only from the cutoff on: HistoryReader.check_kept). Across several
    sources the refusal names the others, which can still be asked alone: one
    source's prune must not leave the user thinking the others' past is gone too."""
    for name in sources:
        try:
            HistoryReader(db, name).check_kept(jd)
        except ConfigError as exc:
            others = [s for s in sources if s != name]
            if not others:
                raise
            raise ConfigError(f"{exc}; the other sources ({', '.join(map(repr, others))}) "
                              "can be asked alone (--source ID, Tracker(db, source=ID))"
                              ) from None


@dataclass
class Scope:
    """Which moment and which sources' history an as-of answer covers, and what a
    reader should know about it (`notes`: sources it cannot show)."""

    moment: dt.datetime
    jd: float
    sources: list[str]
    starts: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": shown(self.moment), "sources": self.sources,
                "history_starts": {s: shown(when(jd)) for s, jd in self.starts.items()},
                "notes": self.notes}


def scope(db: Database, as_of: Moment, source: str | None = None) -> Scope:
    """The moment and the sources whose history reaches back to it (refused: a moment
    before every source's history starts, or before what `[history] keep` left of a
    source it would show, or a database without history)."""
    moment = parse_time(as_of)
    jd = julian_day(moment)
    where = f"database {db.name!r}" + (f", source {source!r}" if source else "")
    sources = history_sources(db, source)
    unmodelled: list[str] = []
    if source is None:  # a source named alone says why it cannot be answered
        unmodelled = [s for s in sources if not _modelled(db, s)]
        sources = [s for s in sources if s not in unmodelled]
    starts = history_start(db, sources)
    if not starts and unmodelled:
        raise ConfigError(f"the history in {where} is of sources no migrated model "
                          f"projects any more ({', '.join(map(repr, unmodelled))}: removed "
                          "from the fleet?): `syncd restore --source ID` rebuilds a file")
    if not starts:
        raise ConfigError(f"no history in {where}: syncd keeps every version of every row "
                         "from the first sync on, and none is recorded here, so nothing "
                         f"is known as of {shown(moment)}")
    first = min(starts.values())
    if jd < first:
        raise ConfigError(f"as of {shown(moment)} is before history starts "
                         f"({shown(when(first))}, the first sync of {where}): nothing is "
                         "recorded before it")
    found = Scope(moment, jd, [s for s in sources if starts[s] <= jd], starts)
    check_kept(db, found.sources, jd)
    for name in sources:
        if starts[name] > jd:
            found.notes.append(f"source {name}'s history starts at "
                               f"{shown(when(starts[name]))}: none of its runs are shown")
    for name in unmodelled:
        found.notes.append(f"source {name} keeps history but no migrated model (removed "
                           "from the fleet, or its first sync is not done): none of its "
                           f"runs are shown; `syncd restore --source {name}` rebuilds its file")
    if source is None:
        for name in sorted(StateStore(db, "").other_sources() - set(sources)
                           - set(unmodelled)):
            found.notes.append(f"source {name} keeps no history: none of its runs are shown")
    return found


def _modelled(db: Database, source: str) -> bool:
    """Whether `source` still has the migrated model its history is projected with
    (a source removed from the fleet keeps its history, not its state)."""
    meta = StateStore(db, source).meta() or {}
    return "version" in meta and "params" in meta


class AsOfView:
    """The collections of one moment, each rebuilt on first use."""

    COLLECTIONS = ("experiments", "epochs", "checkpoints")

    def __init__(self, db: Database, where: Scope,
                 migrations: Sequence[MigrationFile] | None) -> None:
        self.scope, self.db = where, db
        self.made = time.monotonic()
        self.runs: dict[tuple[str, ObjectId], MemoryCollection] = {}
        self._runs_lock = threading.Lock()
        self.collections = {name: MemoryCollection(name, self._loader(db, name, migrations))
                            for name in self.COLLECTIONS}

    def _loader(self, db: Database, name: str,
                migrations: Sequence[MigrationFile] | None) -> Any:
        def load() -> list[dict[str, Any]]:
            return self.checked(collection_as_of(db, name, self.scope.jd,
                                                 self.scope.sources, migrations))
        return load

    def checked(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`docs`, read from history, once `[history] keep`'s cutoff is seen to be still
        at or before the moment: read AFTER the rows, as a prune records its cutoff
        before it removes anything, so rows a prune changed mid-read (the scope was
        checked when the view was made, the rows are read on first use) are refused."""
        check_kept(self.db, self.scope.sources, self.scope.jd)
        return docs

    def collection(self, name: str) -> MemoryCollection:
        return self.collections[name]

    def of_run(self, name: str, run: ObjectId,
               migrations: Sequence[MigrationFile] | None) -> MemoryCollection:
        """`name`'s documents that can belong to one run (a superset its own filter
        narrows: syncd.client.rebuild.run_rows_as_of), rebuilt from that run's rows
        alone; the whole collection once it is loaded (then it costs nothing more)."""
        whole = self.collections[name]
        if whole.loaded:
            return whole
        with self._runs_lock:
            found = self.runs.get((name, run))
        if found is None:
            where = self.scope

            def load() -> list[dict[str, Any]]:
                key = run_key(self.db, run, where.sources, migrations)
                if key is None:
                    return []
                return self.checked(run_rows_as_of(self.db, name, where.jd, where.sources,
                                                   key, migrations))

            found = MemoryCollection(name, load)
            with self._runs_lock:
                while len(self.runs) >= RUNS_KEPT:
                    del self.runs[next(iter(self.runs))]
                found = self.runs.setdefault((name, run), found)
        return found


_views: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], AsOfView]] = (
    weakref.WeakKeyDictionary())
_views_lock = threading.Lock()


def view(db: Database, as_of: Moment, source: str | None = None,
         migrations: Sequence[MigrationFile] | None = None) -> AsOfView:
    """The as-of view of `db` at `as_of`: one made in the last VIEW_SECONDS, or a new one
    (whose scope is read then: a cached view costs no query at all)."""
    # Two clients of one server are equal to pymongo (it compares their settings), so
    # the weak key finds the views of an earlier client too, maybe closed since (each
    # CLI command closes its own): a view is reused by the client object that made it.
    key = (id(db.client), db.name, julian_day(parse_time(as_of)), source,
           None if migrations is None else tuple(m.checksum for m in migrations))
    now = time.monotonic()
    with _views_lock:
        kept = _views.setdefault(db.client, {})
        found = kept.get(key)
        if found is not None and found.db.client is db.client and \
                now - found.made < VIEW_SECONDS:
            return found
    found = AsOfView(db, scope(db, as_of, source), migrations)
    with _views_lock:
        for old in [k for k, v in kept.items() if now - v.made >= VIEW_SECONDS]:
            del kept[old]
        while len(kept) >= VIEWS_KEPT:
            del kept[next(iter(kept))]
        kept[key] = found
    return found
