"""What the dashboard shows, read from MongoDB and Redis: plain JSON-ready dicts.

Read-only: every function here only finds, counts and reads. Errors and free text
pass through `scrub` (no password is ever shown); experiment config values whose
key names a secret are masked.
"""

from __future__ import annotations

import time
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from syncd.checkpoint.daemon_doc import daemon_status
from syncd.checkpoint.sources import resolve
from syncd.checkpoint.store import StateStore
from syncd.client.compare import compare
from syncd.client.ranking import fetch
from syncd.client.ranking_feed import LiveRanking
from syncd.client.tracker import SUMMARY, Tracker
from syncd.errors import SyncdError
from syncd.http.context import HttpContext
from syncd.http.dashboard import asof
from syncd.http.dashboard.answers import BadQuery, jsonable
from syncd.projection.unmirrored import newest

PAGE_SIZE = 100  # experiments per page of the list
MAX_COMPARED = 20  # experiments on one compare page
CHOICES_SECONDS = 30.0  # how long the filters' choices are reused
_choices: dict[str, tuple[float, dict[str, list[Any]]]] = {}  # per database: (read at, choices)


def source_store(ctx: HttpContext) -> StateStore:
    """The configured source's state (read only: the id it already has for this host and
    file, or the database's only source)."""
    return StateStore(ctx.db, resolve(StateStore(ctx.db, ctx.source.source_id), ctx.source))


# -- sync health ---------------------------------------------------------------------------


def health(ctx: HttpContext) -> dict[str, Any]:
    """Per source and table: lag, last apply, errors, quarantined rows, outage state."""
    db = ctx.db
    store = source_store(ctx)
    daemon = ctx.status() if ctx.status is not None else None
    if daemon is None:
        daemon = daemon_status(store)
    quarantined = store.quarantined_tables()
    tables = []
    for row in (daemon or {}).get("tables") or []:
        name = row.get("table")
        tables.append({
            "table": name, "collection": row.get("collection"), "mode": row.get("mode"),
            "lag_seconds": row.get("lag_seconds"), "lag_rows": row.get("lag_rows"),
            "applied": row.get("applied", 0), "deleted": row.get("deleted", 0),
            "last_applied_at": row.get("last_applied_at"),
            "last_error": row.get("last_error"), "reconciled_at": row.get("reconciled_at"),
            "dropped_at": row.get("dropped_at"),
            "quarantined": quarantined.get(str(name), 0),
        })
    meta = store.meta() or {}
    events = (daemon or {}).get("events") or {}
    return jsonable({
        "source": store.source_id, "database": db.name, "version": meta.get("version"),
        "daemon": None if daemon is None else {
            k: daemon.get(k) for k in ("running", "ready", "pid", "host", "mode", "sqlite",
                                       "started_at", "heartbeat_at", "heartbeat_age_seconds",
                                       "uptime_seconds", "note", "seq")},
        "outage": (daemon or {}).get("outage"),
        "events": {k: events.get(k) for k in ("enabled", "sent", "buffered", "dropped",
                                              "redis_down_since")} if events else None,
        "tables": tables,
        "not_mirrored": [{"table": t.get("shown") or t.get("table"), "reason": t.get("reason")}
                         for t in newest(daemon, meta)],
        "quarantined": sum(quarantined.values()),
    })


# -- experiments ---------------------------------------------------------------------------


def _part(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """`doc[key]` where it is a document, else {} (a legacy value of any shape shows, as
    nothing, rather than break the page)."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _best(doc: dict[str, Any]) -> float | None:
    value = _part(doc, "metrics").get("best_val_loss")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


MAX_OFFSET = 2**31  # no list is longer: a larger ?offset= or ?page= shows an empty page


def _number_or_text(name: str, text: str) -> int | str:
    """A query value as the integer it spells, else as text; a number no BSON integer
    can hold is a BadQuery (pymongo would raise OverflowError: a 500)."""
    try:
        number = int(text)
    except ValueError:
        digits = text.strip().lstrip("+-").replace("_", "")
        if not digits.isdigit():  # not a number: text (past 4300 digits int() refuses one)
            return text
        number = None
    if number is None or not -2**63 <= number < 2**63:
        raise BadQuery(f"{name}={text.strip()[:40]}{'...' if len(text.strip()) > 40 else ''}: "
                       "not a number any experiment can have (beyond a 64-bit integer)")
    return number


def first_shown(page: str = "", offset: str = "") -> int:
    """Where a page of the experiments list starts: `?offset=` if given, else `?page=`
    (from 1); anything else (or less) is the first page, anything huge past the end."""
    at = _whole(offset.strip()) if offset.strip() else None
    if at is not None:
        return min(max(0, at), MAX_OFFSET)
    number = _whole(page.strip()) if page.strip() else None
    if number is None:
        return 0
    return min((max(1, number) - 1) * PAGE_SIZE, MAX_OFFSET)


def experiments(ctx: HttpContext, challenge: str = "", status: str = "", source: str = "",
                page: str = "", offset: str = "", as_of: str = "",
                order: LiveRanking | None = None) -> dict[str, Any]:
    """One page of the experiments filtered by challenge, status and source, best
    validation loss first (those without one last); how many match in all; and the
    choices each filter offers. Live: from `order` (kept in this process) when it can
    answer, else sorted and skipped by the server. `as_of`: as they were then
    (syncd.http.dashboard.asof)."""
    db = ctx.db
    tracker = asof.tracker(ctx, as_of)
    query: dict[str, Any] = {}
    if challenge:
        query["challenge"] = _number_or_text("challenge", challenge)
    if status:
        query["status"] = status
    if source:
        query["_source"] = source
    start = first_shown(page, offset)
    past = bool(as_of.strip())
    live = order.page(query, start, PAGE_SIZE) if order is not None and not past else None
    if live is not None:
        ids, total, found = live
        docs, choices = fetch(db["experiments"], ids, SUMMARY), sorted_choices(found)
    else:
        docs, total = tracker.best_first(query, start, PAGE_SIZE)
        choices = asof.choices(tracker) if past else filter_choices(db)
    return jsonable({
        "experiments": [{
            "id": d["_id"], "run_id": d.get("run_id"), "challenge": d.get("challenge"),
            "status": d.get("status"), "model": _part(d, "model").get("name"),
            "best_val_loss": _best(d), "best_epoch": _part(d, "metrics").get("best_epoch"),
            "total_epochs": _part(d, "metrics").get("total_epochs"),
            "start_time": d.get("start_time"), "source": d.get("_source")}
            for d in docs],
        "total": total, "offset": start, "limit": PAGE_SIZE,
        "ordered_by": "dashboard" if live is not None else "server",
        "page": start // PAGE_SIZE + 1, "pages": max(1, -(-total // PAGE_SIZE)),
        "filters": {"challenge": challenge, "status": status, "source": source,
                    **({"as_of": as_of.strip()} if past else {})},
        "choices": choices,
        "as_of": asof.scope(tracker),
    })


def filter_choices(db: Database) -> dict[str, list[Any]]:
    """The values each filter offers: the distinct challenges, statuses and sources.

    Three passes over the collection where the server has no index to answer them
    from (SecantusDB: about 0.1 s each at 10,000 runs), so read at most every
    CHOICES_SECONDS per database rather than on every page of the list.
    """
    key = f"{id(db.client)}:{db.name}"
    now = time.monotonic()
    kept = _choices.get(key)
    if kept is not None and now - kept[0] < CHOICES_SECONDS:
        return kept[1]
    coll = db["experiments"]
    found = sorted_choices({f: coll.distinct(f) for f in ("challenge", "status", "_source")})
    _choices[key] = (now, found)
    return found


def sorted_choices(found: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The filters' choices as the page lists them, from each field's distinct values."""
    return {
        "challenge": sorted((c for c in found["challenge"] if c is not None), key=str),
        "status": sorted(str(s) for s in found["status"] if s is not None),
        "source": sorted(str(x) for x in found["_source"] if x is not None),
    }


def comparison(ctx: HttpContext, refs: list[str]) -> dict[str, Any]:
    """Experiments side by side for /compare: every key with its values (`same`: equal in
    all of them; values under secret-looking keys masked), and each one's epochs."""
    refs = list(dict.fromkeys(r.strip() for r in refs if r.strip()))
    if not refs:
        raise SyncdError("no runs to compare: tick some on the experiments page "
                         "(or /compare?runs=RUN_ID,RUN_ID)")
    if len(refs) > MAX_COMPARED:
        raise SyncdError(f"{len(refs)} runs: at most {MAX_COMPARED} compare on one page")
    found = compare(Tracker(ctx.db).compare(refs))
    ids = [r["id"] for r in found.runs]
    curves: dict[Any, list[dict[str, Any]]] = {i: [] for i in ids}
    for doc in ctx.db["epochs"].find({"experiment_id": {"$in": ids}},
                                     {"experiment_id": 1, "epoch": 1, "metrics": 1,
                                      "timestamp": 1}).sort(
            [("experiment_id", 1), ("epoch", 1), ("_id", 1)]):
        curves[doc["experiment_id"]].append(epoch_point(doc))
    rows = [{"section": r.section, "key": r.key, "same": r.same, **r.as_json()}
            for r in found.rows]
    return jsonable({"runs": found.runs, "rows": rows, "equal": found.folded(),
                     "curves": [{"id": r["id"], "label": r["label"], "epochs": curves[r["id"]]}
                                for r in found.runs]})


def experiment(ctx: HttpContext, ref: str, as_of: str = "") -> dict[str, Any]:
    """One experiment: its document (config, metrics), epochs and checkpoints, and its
    versions (`as_of`: all as they were then)."""
    tracker = asof.tracker(ctx, as_of)
    found = tracker.history(ref)
    return jsonable({"experiment": found["experiment"],
                     "epochs": [epoch_point(e) for e in found["epochs"]],
                     "checkpoints": found["checkpoints"], "as_of": asof.scope(tracker),
                     "versions": asof.versions(ctx, str(found["experiment"]["_id"]), as_of)})


def experiment_id(ctx: HttpContext, ref: str) -> ObjectId:
    """The `_id` of the experiment named by `ref` (its `_id` hex or legacy run_id)."""
    return Tracker(ctx.db).experiment_id(ref)


def epoch_point(doc: dict[str, Any]) -> dict[str, Any]:
    metrics = doc.get("metrics") or {}
    return {"epoch": doc.get("epoch"), "train_loss": metrics.get("train_loss"),
            "val_loss": metrics.get("val_loss"), "learning_rate": metrics.get("learning_rate"),
            "timestamp": doc.get("timestamp")}


def epochs(ctx: HttpContext, ref: str) -> dict[str, Any]:
    """The chart's points: one per epoch row, in epoch order."""
    found = Tracker(ctx.db).history(ref)
    return jsonable({"id": found["experiment"]["_id"],
                     "epochs": [epoch_point(e) for e in found["epochs"]]})


def owners(db: Database, events: list[dict[str, Any]]) -> list[frozenset[str] | None]:
    """For each change event, the experiments it is about (their `_id` hex): None where
    that cannot be known (a deleted epoch or checkpoint cannot be looked up; every page
    then re-reads).

    One query per collection for the whole batch, whoever asks: every open page
    shares the answer (syncd.http.dashboard.live), so 500 pages cost one query per
    batch, not 500.
    """
    wanted: dict[str, set[ObjectId]] = {"epochs": set(), "checkpoints": set()}
    oids: list[list[ObjectId]] = []
    for event in events:
        ids = [ObjectId(i) for i in event.get("ids") or [] if ObjectId.is_valid(i)]
        oids.append(ids)
        if event.get("collection") in wanted and event.get("operation") != "delete":
            wanted[event["collection"]].update(ids)
    found = {name: {doc["_id"]: str(doc.get("experiment_id")) for doc in db[name].find(
        {"_id": {"$in": list(ids)}}, {"experiment_id": 1})} if ids else {}
        for name, ids in wanted.items()}
    out: list[frozenset[str] | None] = []
    for event, ids in zip(events, oids):
        collection = event.get("collection")
        if collection == "experiments":
            out.append(frozenset(event.get("ids") or []))
        elif collection not in wanted:
            out.append(frozenset())
        elif event.get("operation") == "delete":
            out.append(None if ids else frozenset())
        else:
            out.append(frozenset(found[collection][i] for i in ids if i in found[collection]))
    return out


# -- cache ---------------------------------------------------------------------------------


def cache(ctx: HttpContext) -> dict[str, Any]:
    """Coverage per HDF5 file, bytes against the budget, quarantined files."""
    from syncd.hdf5.files import HDF5_FILES
    from syncd.hdf5.status import hdf5_status

    local = local_tier_stats(ctx)
    if HDF5_FILES not in ctx.db.list_collection_names():
        return {"indexed": False, "files": [], "quarantined": [], "local": local}
    found = hdf5_status(ctx.db, ctx.redis, limit=500)
    return jsonable({"indexed": True, **found, "local": local})


def local_tier_stats(ctx: HttpContext) -> dict[str, Any] | None:
    """The local tier of the host the dashboard runs on (bytes, hits, misses, fills)."""
    from syncd.client.local_tier import LocalTier

    if ctx.local_tier is None:
        return None
    try:
        return LocalTier(ctx.local_tier).stats()
    except OSError as exc:
        return {"error": str(exc)}
