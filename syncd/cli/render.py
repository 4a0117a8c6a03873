"""Rendering for people: the text `syncd` prints for migrate, verify, status, experiments,
capture and events (the --json shapes are the API's data as they are)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syncd.cli.output import say, shown, table, visible
from syncd.client.compare import MISSING, folded_line
from syncd.config import Settings
from syncd.projection.unmirrored import lines as not_mirrored_lines


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
    for skipped in plan.not_mirrored:
        say(skipped.line)
    say("dry run: nothing was written")


def print_report(migration: Any, settings: Settings) -> None:
    """What a migrate did, per table, and what to look at next."""
    report = migration.report
    say(f"migrated {settings.sqlite} (source {migration.plan.params.source_id!r}) into "
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
    for skipped in migration.plan.not_mirrored:
        say(skipped.line)
    same = same_settings(settings)
    say(f"look at it (same settings):  syncd status{same}   |   syncd verify --sqlite "
        f"{settings.sqlite}{same}   |   syncd experiments best --challenge 2{same}")
    if migration.embedded:
        say("(the embedded MongoDB stops when syncd exits; those commands start it again on "
            "the same data)")


def same_settings(settings: Settings) -> str:
    """The flags that name where this command's data lives (its TOML file, migrations
    folder, database, state directory), for the next commands it suggests: without the
    migrations folder, say, they would refuse the database it migrated. A URL is left
    out (a password in a flag is visible in `ps`)."""
    parts = []
    if settings.config_file is not None:
        parts.append(f"--config {shlex.quote(str(settings.config_file))}")
    if settings.migrations is not None:
        parts.append(f"--migrations {shlex.quote(str(settings.migrations))}")
    if settings.database != "syncd":
        parts.append(f"--database {shlex.quote(settings.database)}")
    if settings.state_dir != Path(".syncd"):
        parts.append(f"--state-dir {shlex.quote(str(settings.state_dir))}")
    return "".join(" " + p for p in parts)


def _loss(loss: dict[str, Any]) -> str:
    """`, column C: A, given back B`; or, where the inverse gave no value to compare
    (it failed, left a column out, gave one the table lacks), what it did."""
    column = "" if loss["column"] in ("", "-") else f", column {loss['column']}"
    if loss["row"] == "-":
        return f"{column}: {loss['given_back']}"
    return f"{column}: {loss['row']}, given back {loss['given_back']}"


HISTORY_SAID = {  # what each history count of `verify` means, for its sample line
    "history_missing": "history holds no version of the row",
    "history_different": "the row's last version in history differs from the row",
    "history_extra": "history holds a row the table no longer has (no delete recorded)",
}


def print_verify(report: Any) -> None:
    """Per collection: counts, differences, sample keys; then the verdict."""
    lossless = report.lossless
    if report.collections or not report.problems:
        say(table([[c.collection, c.table or "-", c.source_rows, c.target_docs, c.missing,
                    c.different, c.extra, c.quarantined]
                   + ([c.not_given_back] if lossless else []) + [c.history]
                   + ["ok" if c.ok else "DIFFERENT"] for c in report.collections],
                  ["collection", "table", "rows", "docs", "missing", "different", "extra",
                   "unprojectable"] + (["not given back"] if lossless else [])
                  + ["history", ""]))
    for c in report.collections:
        for kind, keys in c.samples.items():
            if keys and kind == "not_given_back":
                for loss in keys:
                    say(f"  {c.collection} (table {c.table}): row "
                        f"{json.dumps(loss['key'], default=str)}" + _loss(loss))
            elif keys:
                say(f"  {c.collection}: {HISTORY_SAID.get(kind, kind)}, e.g. " + ", ".join(
                    json.dumps(k, default=str) for k in keys))
    for problem in report.problems:
        say("problem: " + problem)
    for line in report.lossy:
        say("lossy: " + line)
    for note in report.notes:
        say("note: " + note)
    for skipped in report.not_mirrored:
        say(skipped.line)
    for line in report.cache.shown() if report.cache is not None else ():
        say(line)
    verdict = ("source == target" + (", every row given back exactly" if lossless else "")
               if report.ok else "DIFFERENCES FOUND" if report.collections
               else "NOT VERIFIED (the problem above stopped it before any comparison)")
    if report.exit_code == 3:
        verdict = ("source == target, but LOSSY: " + str(len(report.lossy))
                   + " mapping(s) declare no inverse (above)")
    if report.ok and report.not_mirrored:
        verdict += (f" for every mirrored table; {len(report.not_mirrored)} table(s) not "
                    "mirrored (above)")
    say("verify: " + verdict)


def print_daemon(daemon: dict[str, Any]) -> None:
    """The daemon's status document: state, outage, events, per-table progress."""
    state = "running" if daemon.get("running") else "not running"
    say(f"daemon: {state} ({daemon.get('mode')} mode, pid {daemon.get('pid')} on "
        f"{daemon.get('host')}), up {daemon.get('uptime_seconds')} s, last heartbeat "
        f"{shown(daemon.get('heartbeat_at'))}"
        + (f"; {daemon['note']}" if daemon.get("note") else ""))
    outage = daemon.get("outage")
    if outage:
        say(f"  OUTAGE: {outage['what']} unavailable since {shown(outage['since'])} "
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
             t.get("applied"), t.get("deleted"), t.get("quarantined"),
             ("DROPPED " if t.get("dropped_at") else "") + (t.get("last_error") or "")]
            for t in daemon.get("tables", [])]
    if rows:
        say(table(rows, ["table", "collection", "mode", "checkpoint", "lag rows", "lag s",
                         "last applied", "applied", "deleted", "quarantined", "errors"]))


def print_status(status: dict[str, Any], settings: Settings,
                 health: Sequence[tuple[str, int, str]] = ()) -> None:
    """`syncd status` for people (the HDF5 part is syncd.cli.hdf5's); `health`: each
    source's (id, exit code, why) when the status covers several sources."""
    from syncd.cli.hdf5 import print_status_section

    say(f"target: {status['target']}")
    if status.get("sources"):
        say(table([[s["source_id"], s["host"], s["path"], s["version"], s["heartbeat_at"],
                    *("-" if s[k] is None else s[k] for k in ("lag_rows", "lag_seconds")),
                    s["quarantined"], "; ".join(s["errors"]),
                    s["state"].upper() if s["state"] == "stale" else s["state"]]
                   for s in status["sources"]],
                  ["source", "host", "file", "version", "last heartbeat", "lag rows", "lag s",
                   "quarantined", "errors", "state"]))
    if status.get("source_details") is not None:
        for source_id, code, why in health:
            say(f"{source_id}: {why} (exit {code})")
        say(f"{len(status['sources'])} sources and none named: --source-id ID (or --sqlite "
            "FILE) shows one source's version, counts, runs and checkpoints")
    else:
        if status.get("sources"):
            say(f"this source: {status['source_id']!r}")
        _print_source(status, settings)
    if status["hdf5"] and (status["hdf5"]["files_total"] or settings.hdf5_dirs):
        print_status_section(status["hdf5"])


def _print_source(status: dict[str, Any], settings: Settings) -> None:
    """One source's part of `syncd status`: version, changelog, counts, runs, daemon."""
    others = [s["source_id"] for s in status.get("sources") or []]
    if status["version"] is None and others and status["source_id"] not in others:
        say(f"not migrated yet: source {status['source_id']!r} has no syncd state in "
            f"database {settings.database!r}, whose sources are {', '.join(map(repr, others))}"
            " (name one with --source-id ID or --sqlite FILE, or run syncd migrate)")
    elif status["version"] is None:
        say(f"not migrated yet: database {settings.database!r} holds no syncd state (run "
            "syncd migrate, or name the database it went into with --database NAME)")
    else:
        params = status["params"] or {}
        say(f"version {status['version']}; source id {params.get('source_id')!r}; naive times "
            f"in {params.get('timezone')}; updated {shown(status['updated_at'])}")
    for e in status["changelog"]:
        say(f"  {e['version']:04d} {e['file']}  sha256 {e['checksum']}  applied "
            f"{shown(e['applied_at'])} ({e['seconds']} s)"
            + (f"  {e['on_disk']}" if e.get("on_disk") else ""))
    if status.get("migrations_error"):
        say(f"  migrations folder: {status['migrations_error']}")
    if status["collections"]:
        say(table([[c["collection"], c["documents"]] for c in status["collections"]],
                  ["collection", "documents"]))
    run = status["last_run"]
    if run:
        say(f"last migrate: {shown(run['at'])} {run['kind']} {run['from_version']}->"
            f"{run['to_version']}, {run['rows']} rows, {run['written']} written, "
            f"{run['seconds']} s")
    cp = status["checkpoint"]
    if cp:
        say(f"unfinished migration to version {cp['target_version']} (phase {cp['phase']}); "
            "checkpoints:")
        for t in cp["tables"]:
            say(f"  {t['table']}: position {t['position']}, {t['rows']} rows"
                f"{', done' if t['done'] else ''}")
    if status["lease"]:
        lease = status["lease"]
        say(f"lease held by {lease['owner']} until {shown(lease['expires_at'])}")
    if status["daemon"]:
        print_daemon(status["daemon"])
    for line in not_mirrored_lines(status.get("not_mirrored")):
        say(line)
    say(f"quarantined rows: {status['quarantined']}")
    for q in status["quarantine_samples"]:
        say(f"  {q['table']} {q['key']}: {q['error']}")


def print_docs(docs: Sequence[dict[str, Any]], why_none: str | None = None,
               total: int | None = None, offset: int = 0) -> None:
    """Experiments as a table, and how many of how many; an empty answer says why when
    it can."""
    if not docs and why_none is not None:  # an empty table says nothing: say why
        say(why_none)
        return
    if not docs and total:  # --offset at or beyond the last match: no empty table
        say(f"--offset {offset:,} is past the end: {total:,} experiment(s) match")
        return
    rows = []
    for d in docs:
        metrics = d.get("metrics") or {}
        rows.append([d.get("run_id"), d.get("challenge"), (d.get("model") or {}).get("name"),
                     d.get("status"), metrics.get("best_val_loss"), metrics.get("best_epoch"),
                     d.get("start_time"), d.get("_source"), str(d.get("_id"))])
    say(table(rows, ["run_id", "challenge", "model", "status", "best_val_loss", "best_epoch",
                     "start_time", "source", "_id"]))
    if total is not None and docs:
        more = offset + len(docs) < total
        say(f"showing {offset + 1:,}-{offset + len(docs):,} of {total:,} experiment(s)"
            + (f" (--offset {offset + len(docs)} shows the next)" if more else ""))


def _cell(value: Any, width: int = 60) -> str:
    """A compared value as short text: numbers as numbers, objects as JSON; null is "–",
    a key the run does not have "missing"."""
    if value is None:
        return "–"
    if value is MISSING:
        return "missing"
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def print_comparison(comparison: Any, show_all: bool = False) -> None:
    """Experiments side by side: the keys that differ, and how many equal ones are not
    shown (`show_all`: every key)."""
    if not comparison.runs:
        say("no experiments to compare")
        return
    rows = [[row.key if row.section == "run" else f"{row.section}.{row.key}",
             *(_cell(v) for v in row.shown),
             *(["=" if row.same else "differs"] if show_all else [])]
            for row in comparison.shown(show_all)]
    headers = ["", *(r["label"] for r in comparison.runs), *([""] if show_all else [])]
    if rows:
        say(table(rows, headers))
    else:
        say(f"{', '.join(r['label'] for r in comparison.runs)}: no differences")
    if not show_all:
        for section, count in comparison.folded().items():
            say(folded_line(section, count))


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


PLAIN = re.compile(r"[^\s\"'=,\\]+")
MAX_FIELD = 120  # characters of one value on an event's line


def event_field(value: Any) -> str:
    """One value of an event's line: plain text as it is, anything else quoted as JSON
    (control characters, quotes, spaces and non-printable text escaped), cut to
    MAX_FIELD characters. Every value of the line passes through here."""
    if isinstance(value, str):
        if value.isprintable() and PLAIN.fullmatch(value):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=not value.isprintable())
    else:
        text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD - 1] + "…"


def _event_time(event: dict[str, Any]) -> str:
    """When: a change event's `time`, else the `at` publish_event stamps (epoch seconds)."""
    at = event.get("at")
    if event.get("time") is None and isinstance(at, (int, float)) and not isinstance(at, bool):
        try:
            return dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(
                timespec="milliseconds")
        except (OverflowError, OSError, ValueError):
            pass
    return event_field(event.get("time", "-"))


def _legacy_key(key: Any) -> str | None:
    """`run_id=7` (`run_id=7,epoch=3` for a composite key), or None without one."""
    if not isinstance(key, dict) or not key:
        return None
    return ",".join(f"{event_field(str(c))}={event_field(v)}" for c, v in key.items())


CHANGE_FIELDS = ("type", "at", "time", "collection", "operation", "ids", "keys")


def event_line(entry_id: str, event: dict[str, Any]) -> str:
    """One stream entry on one line, the same shape for every event: time, stream id,
    what happened, then its other fields as name=value. A change event names its
    documents by their rows' legacy keys (`run_id=7`), or by `_id` where the event
    carries no key (events of older versions)."""
    if "collection" in event:
        ids = event.get("ids") or []
        keys = event.get("keys")
        if not isinstance(keys, list) or len(keys) != len(ids):
            keys = [None] * len(ids)
        names = [_legacy_key(k) or event_field(i) for i, k in zip(ids[:3], keys)]
        what = [event_field(event.get("collection")), event_field(event.get("operation")),
                f"{len(ids)} doc(s)", *names, *(["..."] if len(ids) > 3 else [])]
        rest = {k: v for k, v in event.items() if k not in CHANGE_FIELDS}
    else:  # HDF5 cache events, `migrated`, and events new code publishes
        what = [event_field(event.get("type", "event"))]
        rest = {k: v for k, v in event.items() if k not in ("type", "at", "time")}
    fields = [f"{event_field(str(k))}={event_field(v)}" for k, v in rest.items()]
    return " ".join([_event_time(event), event_field(entry_id), *what, *fields])


def print_event(entry_id: str, event: dict[str, Any]) -> None:
    """The event's line, with anything event_field left unescaped escaped too."""
    say(visible(event_line(entry_id, event)))
