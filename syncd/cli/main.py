"""The `syncd` command line: a thin layer over the library.

Exit codes: 0 success; 1 the work failed or verify found differences; 2 usage or
configuration error (one line naming the setting; no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from syncd import __version__
from syncd.cli.output import print_json, say, table
from syncd.config import Settings, add_arguments, load_settings, require_sqlite
from syncd.embedded import statedir
from syncd.errors import FAILURES, ConfigError, SyncdError
from syncd.logs import setup_logging
from syncd.progress import Progress
from syncd.redact import scrub

log = logging.getLogger("syncd")

EPILOG = """\
Settings come from a TOML file (--config / SYNCD_CONFIG), then SYNCD_* environment
variables, then flags. With no --mongo-url, syncd starts an embedded MongoDB
(SecantusDB) under --state-dir and stops it on exit; the data stays there. With
no --redis-url, commands that need Redis start an embedded redis-server likewise.
A password in --mongo-url or --redis-url is visible to every local user in `ps`:
put such URLs in SYNCD_MONGO_URL / SYNCD_REDIS_URL or the TOML file instead.
Exit codes: 0 ok, 1 failed or differences found, 2 usage or configuration error.
"""


ADOPT_HELP = ("the legacy file moved: make this --sqlite the file the database mirrors "
              "(a database mirrors one file; another file is refused, since syncing it would "
              "delete the first one's documents)")


# -- helpers --------------------------------------------------------------------------


@contextlib.contextmanager
def _source(settings: Settings) -> Iterator[Any]:
    from legacy_adapters.sqlite import SQLiteSource

    source = SQLiteSource(require_sqlite(settings))
    try:
        source.schema()  # fail early, as a configuration error, on an unreadable database
        yield source
    finally:
        source.close()


def _migrations(settings: Settings) -> list[Any]:
    from syncd.engine.migration_files import load_migrations

    return load_migrations(settings.migrations)


def _target(settings: Settings) -> contextlib.AbstractContextManager[Any]:
    from syncd.connect.mongo import open_target

    return open_target(settings)


def _where(settings: Settings, target: Any) -> str:
    where = f"{target.shown_url} database {settings.database!r}"
    if target.embedded:
        where += f" (embedded; data in {settings.state_dir / 'mongo' / 'data'})"
    return where


# -- commands -------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.checkpoint.source_file import check as check_file
    from syncd.engine.migrator import Migrator
    from syncd.sinks.mongo import MongoSink

    migrations = _migrations(settings)
    with _source(settings) as source, _target(settings) as target:
        progress = Progress(enabled=not args.json and not args.dry_run)
        migrator = Migrator(settings, source, target.db, migrations, progress)
        check_file(migrator.store, settings, adopt=args.adopt_file)
        plan = migrator.plan(args.to)
        if args.dry_run:
            if args.json:
                print_json(plan.to_dict())
            else:
                _print_plan(plan, settings, target)
            return 0
        log.info("migrating %s to %s: version %d -> %d (%s)", settings.sqlite,
                 _where(settings, target), plan.current, plan.target, plan.kind)
        check_file(migrator.store, settings, record=True, adopt=args.adopt_file)
        with progress:
            report = migrator.run(plan, MongoSink(target.db))
        if args.json:
            print_json({"target": _where(settings, target), **report.to_dict()})
        else:
            _print_report(report, settings, target)
    return 0


def _print_plan(plan: Any, settings: Settings, target: Any) -> None:
    say(f"plan: {settings.sqlite} -> {_where(settings, target)}")
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


def _print_report(report: Any, settings: Settings, target: Any) -> None:
    say(f"migrated {settings.sqlite} (source {settings.source_id!r}) into "
        f"{_where(settings, target)}")
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
    if target.embedded:
        say("(the embedded MongoDB stops when syncd exits; those commands start it again on "
            "the same data)")


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.checkpoint.source_file import check as check_file
    from syncd.checkpoint.store import StateStore
    from syncd.engine.verify import verify

    migrations = _migrations(settings)
    with _source(settings) as source, _target(settings) as target, \
            Progress(enabled=not args.json) as progress:
        check_file(StateStore(target.db), settings, verb="verify")
        report = verify(target.db, source, migrations, settings.chunk_size, progress)
    if args.json:
        print_json(report.to_dict())
    else:
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
    return 0 if report.ok else 1


def _print_daemon(daemon: dict[str, Any]) -> None:
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


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.cli import hdf5 as hdf5_cli
    from syncd.daemon.health import read_local_status
    from syncd.engine.status import collect_status

    try:
        with _target(settings) as target:
            status = collect_status(target.db)
            status["target"] = _where(settings, target)
            status["hdf5"] = hdf5_cli.status_section(target.db, settings)
    except ConfigError as exc:
        local = read_local_status(settings.state_dir / "daemon.json")
        if local is None or "not reachable" not in str(exc):
            raise
        # MongoDB is down: show what the daemon last wrote beside its state.
        if args.json:
            print_json({"error": str(exc), "daemon": local})
        else:
            say(f"MongoDB: {exc}")
            _print_daemon(local)
        return 1
    if args.json:
        print_json(status)
        return 0
    say(f"target: {status['target']}")
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
        _print_daemon(status["daemon"])
    say(f"quarantined rows: {status['quarantined']}")
    for q in status["quarantine_samples"]:
        say(f"  {q['table']} {q['key']}: {q['error']}")
    if status["hdf5"] and (status["hdf5"]["files_total"] or settings.hdf5_dirs):
        hdf5_cli.print_status_section(status["hdf5"])
    return 0


def _print_docs(docs: Sequence[dict[str, Any]], args: argparse.Namespace,
                why_none: Callable[[], str] | None = None) -> None:
    if args.json:
        print_json(list(docs))
        return
    if not docs and why_none is not None:  # an empty table says nothing: say why
        say(why_none())
        return
    rows = []
    for d in docs:
        metrics = d.get("metrics") or {}
        rows.append([d.get("run_id"), d.get("challenge"), (d.get("model") or {}).get("name"),
                     d.get("status"), metrics.get("best_val_loss"), metrics.get("best_epoch"),
                     d.get("start_time"), str(d.get("_id"))])
    say(table(rows, ["run_id", "challenge", "model", "status", "best_val_loss", "best_epoch",
                     "start_time", "_id"]))


def cmd_experiments(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.client.tracker import Tracker

    with _target(settings) as target:
        tracker = Tracker(target.db)
        if args.action == "best":
            docs = tracker.best_experiments(args.challenge, args.n, args.status or None)
            _print_docs(docs, args, lambda: tracker.why_no_best(args.challenge,
                                                                args.status or None))
        elif args.action == "compare":
            _print_docs(tracker.compare(args.refs), args)
        elif args.action == "search":
            try:
                query = json.loads(args.filter)
            except ValueError as exc:
                raise ConfigError(f"filter {args.filter!r}: not JSON ({exc})") from None
            if not isinstance(query, dict):
                raise ConfigError(f"filter {args.filter!r}: must be a JSON object")
            _print_docs(tracker.search(query, limit=args.limit), args,
                        lambda: tracker.why_no_match(query))
        else:
            history = tracker.history(args.ref)
            if args.json:
                print_json(history)
            else:
                _print_docs([history["experiment"]], args)
                say(table([[e.get("epoch"), (e.get("metrics") or {}).get("train_loss"),
                            (e.get("metrics") or {}).get("val_loss"), e.get("timestamp")]
                           for e in history["epochs"]],
                          ["epoch", "train_loss", "val_loss", "timestamp"]))
                say(table([[c.get("epoch"), (c.get("metrics") or {}).get("val_loss"),
                            c.get("is_best"), (c.get("file") or {}).get("path")]
                           for c in history["checkpoints"]],
                          ["epoch", "val_loss", "is_best", "checkpoint"]))
    return 0


@contextlib.contextmanager
def _daemon_redis(settings: Settings, needed: bool) -> Iterator[tuple[Any, Any]]:
    """Redis for `syncd run`: (cache client, events client), or (None, None).

    Unlike other commands, an unreachable Redis is not fatal here: the MongoDB sync
    goes on, events wait in a buffer and the cache is warmed once Redis is back. A
    refused password is a configuration error. The events client has short timeouts
    and no retries: a Redis that hangs must not hold anything up.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from syncd.connect.redis import connect_redis
    from syncd.embedded import EmbeddedRedis
    from syncd.redact import redact_url, scrub

    embedded = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        embedded = EmbeddedRedis(settings.state_dir)
        try:
            url = embedded.start()
        except ConfigError as exc:
            if needed:
                raise
            log.warning("no --redis-url and no embedded Redis (%s): events are not published",
                        exc)
            yield None, None
            return
    client = connect_redis(url, settings.mongo_timeout)
    events = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                  retry=Retry(NoBackoff(), 0))
    try:
        try:
            events.ping()
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            raise ConfigError(f"--redis-url {redact_url(url)}: the server refused syncd "
                              f"({scrub(str(exc))})") from None
        except redis.RedisError as exc:
            log.warning("Redis %s is unreachable (%s): the MongoDB sync goes on; events wait "
                        "and the cache is warmed when it is back", redact_url(url), exc)
        yield client, events
    finally:
        client.close()
        events.close()
        if embedded is not None:
            embedded.stop()


@contextlib.contextmanager
def _daemon_target(settings: Settings) -> Iterator[Any]:
    """The MongoDB target for `syncd run`, waited for (with backoff) while unreachable.

    SIGTERM or SIGINT before the daemon takes its signals over (while waiting, while an
    embedded server starts) is a requested stop: everything started is stopped, exit 0.
    """
    from syncd.connect.mongo import TargetUnreachable
    from syncd.daemon.sdnotify import notify
    from syncd.embedded.interrupts import Interrupted, raising, stop_requested
    from syncd.retry import Backoff

    backoff = Backoff(base=1.0, cap=30.0)
    with raising():
        try:
            while True:
                stack = contextlib.ExitStack()
                try:
                    target = stack.enter_context(_target(settings))
                    break
                except TargetUnreachable as exc:
                    stack.close()
                    delay = backoff.next()
                    log.warning("%s; trying again in %.0f s", exc, delay)
                    notify(f"STATUS=waiting for MongoDB: {exc}")
                    time.sleep(delay)
            with stack:
                yield target
        except (Interrupted, KeyboardInterrupt) as exc:
            if not stop_requested(exc):
                raise
            log.info("stop requested before syncd run started following; stopped cleanly")
            raise SystemExit(0) from None


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.checkpoint.source_file import check as check_file
    from syncd.checkpoint.store import StateStore
    from syncd.daemon.options import daemon_options, lower_priority
    from syncd.daemon.runner import Daemon
    from syncd.sinks.events import EventPublisher

    options = daemon_options(settings, args.capture)
    lower_priority(options["nice"])  # before the embedded servers start: they inherit it
    migrations = _migrations(settings)
    with _source(settings) as source, _daemon_target(settings) as target, \
            _daemon_redis(settings, needed=bool(settings.hdf5_dirs)) as (client, events):
        check_file(StateStore(target.db), settings, record=True, adopt=args.adopt_file)
        log.info("syncd run: %s -> %s (%s mode)", settings.sqlite, _where(settings, target),
                 options["capture"])
        publisher = EventPublisher(events, settings.source_id, None,
                                   maxlen=options["events_maxlen"])
        follower = None
        if settings.hdf5_dirs:
            from syncd.hdf5.follower import Hdf5Follower

            follower = Hdf5Follower(settings, target.db, client)
        daemon = Daemon(settings, source, target.db, migrations, options, publisher, follower)
        return daemon.run()


def _capture_tables(settings: Settings) -> tuple[Any, list[Any]]:
    from legacy_adapters.sqlite import SQLiteSource
    from syncd.engine.migration_files import build_model

    source = SQLiteSource(require_sqlite(settings))
    migrations = _migrations(settings)
    model = build_model(migrations, len(migrations))
    infos = [info for info, _ in model.resolve(source.schema())]
    source.close()
    return source.path, infos


def cmd_capture(args: argparse.Namespace, settings: Settings) -> int:
    from legacy_adapters.sqlite_capture import LOG_TABLE, Capture, capturable, trigger_names

    path, infos = _capture_tables(settings)
    capture = Capture(path)
    try:
        if args.action == "install":
            done = capture.install(infos)
            say(f"triggers installed on {len(done)} table(s) of {path}: {', '.join(done)}"
                if done else f"triggers already installed on every synced table of {path}")
            say(f"changes are logged in {LOG_TABLE}; `syncd capture uninstall` removes it all")
        elif args.action == "uninstall":
            live = capture.live_consumers()
            if live and not args.force:
                raise SyncdError(
                    f"syncd run is following this change log ({live[0].label}, "
                    f"{live[0].seen_seconds_ago:.0f} s ago); stop it first, or it reinstalls "
                    "the triggers and reconciles (--force removes them anyway)")
            count = capture.uninstall()
            say(f"removed {count} trigger(s) and the change log from {path}")
        else:
            have = capture.triggers()
            rows = [[i.name, "yes" if all(n in have for n in trigger_names(i).values())
                     else ("no (too many key columns)" if not capturable(i) else "no")]
                    for i in infos]
            data = {"database": str(path), "log": capture.log_exists(),
                    "install_id": capture.install_id(),
                    "last_seq": capture.last_seq() if capture.log_exists() else None,
                    "logged": (sum(n for n, _ in capture.pending(0).values())
                               if capture.log_exists() else 0),
                    "tables": {r[0]: r[1] for r in rows},
                    "consumers": [vars(c) for c in capture.consumers()]}
            if args.json:
                print_json(data)
            else:
                say(f"{path}: change log {'present' if data['log'] else 'absent'}"
                    + (f", last seq {data['last_seq']}, {data['logged']} entries kept"
                       if data["log"] else ""))
                say(table(rows, ["table", "triggers"]))
                if data["consumers"]:
                    say(table([[c["label"], c["seq"], f"{c['seen_seconds_ago']:.0f} s ago",
                                "running" if c["running"] else "stopped"]
                               for c in data["consumers"]],
                              ["consumer", "applied up to", "last seen", "state"]))
    finally:
        capture.close()
    return 0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.connect.redis import connect_redis, embedded_redis_url
    from syncd.sinks.events import tail

    url = settings.redis_url or embedded_redis_url(settings.state_dir)
    if url is None:
        raise ConfigError("--redis-url is not set and no embedded Redis is running for "
                          f"--state-dir {settings.state_dir}: start syncd run, or name the "
                          "Redis it publishes to")
    client = connect_redis(url, settings.mongo_timeout)
    events = tail(client, start=args.start, count=args.count)
    with contextlib.closing(client):
        _ping_redis(client, url, settings)
        try:
            for entry_id, event in events:
                if args.json:
                    print_json({"id": entry_id, **event})
                elif "collection" in event:
                    ids = event.get("ids", [])
                    say(f"{event.get('time')} {event.get('collection')} "
                        f"{event.get('operation')} {len(ids)} doc(s) "
                        f"{' '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}")
                else:  # HDF5 cache events (and events new code publishes)
                    rest = {k: v for k, v in event.items() if k not in ("type", "at")}
                    say(f"{entry_id} {event.get('type', 'event')} "
                        f"{json.dumps(rest, default=str)[:200]}")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        finally:
            if events.skipped:  # entries other programs put on the stream
                sys.stderr.write(f"skipped {events.skipped} stream entries that are not "
                                 "syncd events\n")
    return 0


def _ping_redis(client: Any, url: str, settings: Settings) -> None:
    """An unreachable or refusing Redis is a configuration error naming --redis-url."""
    import redis

    from syncd.redact import redact_url

    try:
        client.ping()
    except redis.RedisError as exc:
        what = "refused syncd" if isinstance(exc, (redis.AuthenticationError,
                                                   redis.ResponseError)) \
            else f"not reachable within {settings.mongo_timeout:g} s"
        raise ConfigError(f"--redis-url {redact_url(url)}: {what} ({scrub(str(exc))[:200]})") \
            from None


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.sample import SampleExists, make_eeg2025

    try:
        counts = make_eeg2025(args.path, rows=args.rows, seed=args.seed, force=args.force)
    except SampleExists:
        raise ConfigError(f"sample {args.path}: the file exists (it may be a real metadata.db); "
                          "choose a new path, or pass --force to replace it") from None
    say(f"wrote {args.path}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


# -- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    settings_parent = argparse.ArgumentParser(add_help=False)
    add_arguments(settings_parent)
    json_parent = argparse.ArgumentParser(add_help=False)
    json_parent.add_argument("--json", action="store_true", help="print JSON for scripts")

    parser = argparse.ArgumentParser(
        prog="syncd", description="Mirror a legacy SQLite metadata.db (and HDF5 caches) into "
        "MongoDB and Redis, exactly, without getting in the legacy writers' way.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[..., int], help_text: str, description: str,
                json_flag: bool = True, settings: bool = True) -> argparse.ArgumentParser:
        parents = ([settings_parent] if settings else []) + ([json_parent] if json_flag else [])
        p = sub.add_parser(name, help=help_text, description=description, parents=parents,
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("migrate", cmd_migrate, "backfill the legacy database into MongoDB",
                "Bring MongoDB to a migration version (default: the latest) by projecting "
                "every legacy row. A new version is built in staging collections and swapped "
                "in; the same version is reconciled in place. Resumable after any crash.")
    p.add_argument("--to", type=int, metavar="N", help="move to version N (up or down)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (versions, collections, row counts); write nothing")
    p.add_argument("--adopt-file", action="store_true", help=ADOPT_HELP)

    command("verify", cmd_verify, "prove MongoDB equals the projection of the legacy database",
            "Compare every legacy row's projection with its document (BSON bytes) and find "
            "extra documents. Exit 1 on any difference.")
    command("status", cmd_status, "show version, counts, last run and checkpoints",
            "Read the target's state: migration version and changelog, collection counts, the "
            "last run, unfinished checkpoints and quarantined rows.")

    from syncd.cli import hdf5 as hdf5_cli

    hdf5_cli.add_commands(command, settings_parent, json_parent)  # warm, cache

    p = command("experiments", cmd_experiments, "query synced experiments (EEG2025 model)",
                "Read the experiment model (migration 0002) as the legacy tracker did.",
                json_flag=False, settings=False)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return acts.add_parser(name, help=help_text, description=help_text,
                               parents=[settings_parent, json_parent])

    best = action("best", "best experiments of a challenge by best_val_loss")
    best.add_argument("--challenge", type=int, required=True)
    best.add_argument("-n", type=int, default=10, help="how many (default 10)")
    best.add_argument("--status", default="completed",
                      help="only this status (default completed; '' for any)")
    hist = action("history", "one experiment's epochs and checkpoints")
    hist.add_argument("ref", help="run_id or experiment _id")
    comp = action("compare", "several experiments side by side")
    comp.add_argument("refs", nargs="+", help="run_ids or experiment _ids")
    search = action("search", "experiments matching a MongoDB filter (JSON)")
    search.add_argument("filter", nargs="?", default="{}",
                        help='e.g. \'{"status": "running"}\'')
    search.add_argument("--limit", type=int, default=0)

    p = command("run", cmd_run, "follow the legacy database and keep MongoDB in sync",
                "Bring MongoDB up to date (backfill if needed), then apply every INSERT, "
                "UPDATE and DELETE the legacy scripts commit, until SIGTERM/SIGINT. Runs as "
                "a systemd service (Type=notify) or in the compose stack.", json_flag=False)
    p.add_argument("--capture", choices=("triggers", "scan"),
                   help="change capture: triggers (default; exact, installs triggers and a "
                   "change log in metadata.db) or scan (writes nothing to metadata.db; "
                   "updates and deletes found by periodic reconcile) ([daemon] capture)")
    p.add_argument("--adopt-file", action="store_true", help=ADOPT_HELP)

    p = command("capture", cmd_capture, "install, remove or inspect the change-capture "
                "triggers", "Manage the triggers and the _syncd_changes log that `triggers` "
                "mode adds to metadata.db. `uninstall` leaves the database as it was.",
                json_flag=False, settings=False)
    cap = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("install", "add the triggers and the change log"),
                       ("uninstall", "drop the triggers and the change log (refused while "
                        "a syncd run follows it)"),
                       ("status", "which tables have triggers; log size; its consumers")):
        c = cap.add_parser(name, help=text, description=text,
                           parents=[settings_parent, json_parent])
        if name == "uninstall":
            c.add_argument("--force", action="store_true",
                           help="remove them even while a syncd run follows the log (it "
                           "reinstalls them and reconciles every table)")

    from syncd.cli import reconcile as reconcile_cli

    reconcile_cli.add_commands(command)

    p = command("events", cmd_events, "tail the change events on Redis",
                "Print the events `syncd run` publishes on the Redis stream syncd:events: "
                "one per applied batch, collection and operation.")
    p.add_argument("--from", dest="start", default="$",
                   help="stream id to start after ('0': the oldest kept; default '$': new)")
    p.add_argument("--count", type=int, help="stop after this many events")

    p = command("sample", cmd_sample, "write an EEG2025-shaped sample metadata.db",
                "Write a legacy metadata.db in the EEG2025 shape (the quick start's sample is "
                "this command's output).", json_flag=False, settings=False)
    p.add_argument("path", type=Path)
    p.add_argument("--rows", type=int, help="about this many rows in all (default: 40 runs)")
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--force", action="store_true",
                   help="replace PATH if it exists (by default an existing file is refused)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        settings = load_settings(vars(args))
        with statedir.for_command(args.command, settings):
            return int(args.func(args, settings))
    except FAILURES as exc:
        sys.stderr.write(f"syncd: error: {scrub(str(exc))}\n")
        return int(getattr(exc, "exit_code", 1))
    except PyMongoError as exc:
        sys.stderr.write(f"syncd: error: MongoDB: {scrub(str(exc)).splitlines()[0][:300]}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("syncd: interrupted\n")
        return 130
    except Exception as exc:
        if args.verbose:
            log.exception("unexpected error")
        sys.stderr.write(f"syncd: error: {type(exc).__name__}: {scrub(str(exc))} "
                         "(run with -v for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
