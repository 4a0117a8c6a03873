"""Rendering for people: the text `syncd` prints for migrate, verify, status, experiments,
capture and events (the --json shapes are the API's data as they are)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from syncd.cli.output import say, table
from syncd.config import Settings


def print_plan(migration: Any, settings: Settings) -> None:
    """A dry run's plan: versions, tables -> collections, row counts."""
    plan = migration.plan
    say(f"plan: {settings.sqlite} -> {migration.target}")
    say(f"version {plan.current} -> {plan.target} ({plan.kind}); source id "
        f"{plan.params.source_id!r}, naive times in {plan.params.timezone}")
    for m in plan.migrations[:plan.target]:
        say(f"  {m.version:04d} {m.description}")
    say(table([[i.name, m.collection, i.key_kind, plan.counts.get(i.name)]
               for i, m in plan.pairs], ["table", "collection", "key", "rows"]))
    if plan.views:
        say("views (reported, not synced): " + ", ".join(plan.views))
    if plan.drop:
        say("collections to drop: " + ", ".join(plan.drop))
    for note in plan.notes:
        say("note: " + note)
    say("dry run: nothing was written")


def print_report(migration: Any, settings: Settings) -> None:
    """What a migrate did, per table, and what to look at next."""
    report = migration.report
    say(f"migrated {settings.sqlite} (source {settings.source_id!r}) into "
        f"{migration.target}")
    say(f"version {report.from_version} -> {report.to_version} ({report.kind}"
        f"{', resumed' if report.resumed else ''})")
    rows = [[t.table, t.collection, t.rows, t.written, t.unchanged, t.deleted,
             sum(t.flags.values()), t.quarantined] for t in report.tables]
    say(table(rows, ["table", "collection", "rows", "written", "unchanged", "deleted",
                     "flagged", "quarantined"]))
    say(f"{report.total('rows'):,} rows in {report.seconds:.1f} s "
        f"({report.rows_per_second:,.0f} rows/s); {report.total('written'):,} documents "
        f"written, {report.total('flagged')} values flagged, {report.total('raw_text')} "
        f"kept as binary, {report.total('quarantined')} rows quarantined")
    for table_report in report.tables:
        for flag, count in sorted(table_report.flags.items()):
            say(f"  flagged {count}x {flag}")
    for name in report.dropped:
        say(f"dropped collection {name} (not in version {report.to_version})")
    for note in report.notes:
        say("note: " + note)
    say(f"look at it (same settings):  syncd status   |   syncd verify --sqlite "
        f"{settings.sqlite}   |   syncd experiments best --challenge 2")
    if migration.embedded:
        say("(the embedded MongoDB stops when syncd exits; those commands start it again on "
            "the same data)")


def print_verify(report: Any) -> None:
    """Per collection: counts, differences, sample keys; then the verdict."""
    say(table([[c.collection, c.table or "-", c.source_rows, c.target_docs, c.missing,
                c.different, c.extra, c.quarantined, "ok" if c.ok else "DIFFERENT"]
               for c in report.collections],
              ["collection", "table", "rows", "docs", "missing", "different", "extra",
               "unprojectable", ""]))
    for c in report.collections:
        for kind, keys in c.samples.items():
            if keys:
                say(f"  {c.collection}: {kind}, e.g. " + ", ".join(
                    json.dumps(k, default=str) for k in keys))
    for problem in report.problems:
        say("problem: " + problem)
    say("verify: source == target" if report.ok else "verify: DIFFERENCES FOUND")


def print_daemon(daemon: dict[str, Any]) -> None:
    """The daemon's status document: state, outage, events, per-table progress."""
    state = "running" if daemon.get("running") else "not running"
    say(f"daemon: {state} ({daemon.get('mode')} mode, pid {daemon.get('pid')} on "
        f"{daemon.get('host')}), up {daemon.get('uptime_seconds')} s, last heartbeat "
        f"{daemon.get('heartbeat_at')}" + (f"; {daemon['note']}" if daemon.get("note") else ""))
    outage = daemon.get("outage")
    if outage:
        say(f"  OUTAGE: {outage['what']} unavailable since {outage['since']} "
            f"({outage['retries']} retries): {outage['error']}")
    if daemon.get("local_status_error"):
        say(f"  WARNING: {daemon['local_status_error']}")
    events = daemon.get("events") or {}
    if events.get("enabled"):
        say(f"  events: {events.get('sent')} sent, {events.get('buffered')} buffered"
            + (f", Redis down since {events['redis_down_since']}"
               if events.get("redis_down_since") else ""))
    rows = [[t.get("table"), t.get("collection"), t.get("mode"),
             (t.get("checkpoint") or {}).get("seq", (t.get("checkpoint") or {}).get("hwm")),
             t.get("lag_rows"), t.get("lag_seconds"), t.get("last_applied_at"),
             t.get("applied"), t.get("quarantined"),
             ("DROPPED " if t.get("dropped_at") else "") + (t.get("last_error") or "")]
            for t in daemon.get("tables", [])]
    if rows:
        say(table(rows, ["table", "collection", "mode", "checkpoint", "lag rows", "lag s",
                         "last applied", "applied", "quarantined", "errors"]))


def print_status(status: dict[str, Any], settings: Settings) -> None:
    """`syncd status` for people (the HDF5 part is syncd.cli.hdf5's)."""
    from syncd.cli.hdf5 import print_status_section

    say(f"target: {status['target']}")
    if status.get("sources"):
        say(table([[s["source_id"], s["host"], s["path"], s["version"], s["heartbeat_at"],
                    s["lag_rows"], s["lag_seconds"], s["quarantined"], "; ".join(s["errors"]),
                    s["state"].upper() if s["state"] == "stale" else s["state"]]
                   for s in status["sources"]],
                  ["source", "host", "file", "version", "last heartbeat", "lag rows", "lag s",
                   "quarantined", "errors", "state"]))
        say(f"this source: {status['source_id']!r}")
    if status["version"] is None:
        say(f"not migrated yet: database {settings.database!r} holds no syncd state (run "
            "syncd migrate, or name the database it went into with --database NAME)")
    else:
        params = status["params"] or {}
        say(f"version {status['version']}; source id {params.get('source_id')!r}; naive times "
            f"in {params.get('timezone')}; updated {status['updated_at']}")
    for e in status["changelog"]:
        say(f"  {e['version']:04d} {e['file']}  sha256 {e['checksum']}  applied "
            f"{e['applied_at']} ({e['seconds']} s)")
    if status["collections"]:
        say(table([[c["collection"], c["documents"]] for c in status["collections"]],
                  ["collection", "documents"]))
    run = status["last_run"]
    if run:
        say(f"last migrate: {run['at']} {run['kind']} {run['from_version']}->{run['to_version']}"
            f", {run['rows']} rows, {run['written']} written, {run['seconds']} s")
    cp = status["checkpoint"]
    if cp:
        say(f"unfinished migration to version {cp['target_version']} (phase {cp['phase']}); "
            "checkpoints:")
        for t in cp["tables"]:
            say(f"  {t['table']}: position {t['position']}, {t['rows']} rows"
                f"{', done' if t['done'] else ''}")
    if status["lease"]:
        say(f"lease held by {status['lease']['owner']} until {status['lease']['expires_at']}")
    if status["daemon"]:
        print_daemon(status["daemon"])
    say(f"quarantined rows: {status['quarantined']}")
    for q in status["quarantine_samples"]:
        say(f"  {q['table']} {q['key']}: {q['error']}")
    if status["hdf5"] and (status["hdf5"]["files_total"] or settings.hdf5_dirs):
        print_status_section(status["hdf5"])


def print_docs(docs: Sequence[dict[str, Any]], why_none: str | None = None) -> None:
    """Experiments as a table; an empty answer says why when it can."""
    if not docs and why_none is not None:  # an empty table says nothing: say why
        say(why_none)
        return
    rows = []
    for d in docs:
        metrics = d.get("metrics") or {}
        rows.append([d.get("run_id"), d.get("challenge"), (d.get("model") or {}).get("name"),
                     d.get("status"), metrics.get("best_val_loss"), metrics.get("best_epoch"),
                     d.get("start_time"), d.get("_source"), str(d.get("_id"))])
    say(table(rows, ["run_id", "challenge", "model", "status", "best_val_loss", "best_epoch",
                     "start_time", "source", "_id"]))


def print_history(history: dict[str, Any]) -> None:
    """One experiment, then its epochs and its checkpoints."""
    print_docs([history["experiment"]])
    say(table([[e.get("epoch"), (e.get("metrics") or {}).get("train_loss"),
                (e.get("metrics") or {}).get("val_loss"), e.get("timestamp")]
               for e in history["epochs"]],
              ["epoch", "train_loss", "val_loss", "timestamp"]))
    say(table([[c.get("epoch"), (c.get("metrics") or {}).get("val_loss"),
                c.get("is_best"), (c.get("file") or {}).get("path")]
               for c in history["checkpoints"]],
              ["epoch", "val_loss", "is_best", "checkpoint"]))


def print_capture_status(data: dict[str, Any]) -> None:
    """The change log, which tables have triggers, and the log's consumers."""
    say(f"{data['database']}: change log {'present' if data['log'] else 'absent'}"
        + (f", last seq {data['last_seq']}, {data['logged']} entries kept"
           if data["log"] else ""))
    say(table([[name, triggers] for name, triggers in data["tables"].items()],
              ["table", "triggers"]))
    if data["consumers"]:
        say(table([[c["label"], c["seq"], f"{c['seen_seconds_ago']:.0f} s ago",
                    "running" if c["running"] else "stopped"]
                   for c in data["consumers"]],
                  ["consumer", "applied up to", "last seen", "state"]))


def print_event(entry_id: str, event: dict[str, Any]) -> None:
    """One stream entry on one line: a change event, else its type and fields."""
    if "collection" in event:
        ids = event.get("ids", [])
        say(f"{event.get('time')} {event.get('collection')} "
            f"{event.get('operation')} {len(ids)} doc(s) "
            f"{' '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}")
    else:  # HDF5 cache events (and events new code publishes)
        rest = {k: v for k, v in event.items() if k not in ("type", "at")}
        say(f"{entry_id} {event.get('type', 'event')} "
            f"{json.dumps(rest, default=str)[:200]}")
