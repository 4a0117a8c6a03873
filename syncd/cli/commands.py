"""The `syncd` commands: each parses its arguments, calls syncd.api and renders."""

from __future__ import annotations

import argparse
import json
import sys

from syncd import api
from syncd.cli.output import dumps, print_json, say
from syncd.cli.render import (
    print_capture_status,
    print_comparison,
    print_daemon,
    print_docs,
    print_event,
    print_history,
    print_plan,
    print_report,
    print_status,
    print_verify,
)
from syncd.cli.render_history import print_as_of, print_versions
from syncd.config import Settings
from syncd.errors import ConfigError
from syncd.progress import Progress


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    progress = Progress(enabled=not args.json and not args.dry_run)
    done = api.migrate(settings, args.to, dry_run=args.dry_run, adopt_file=args.adopt_file,
                       progress=progress)
    if done.report is None:
        if args.json:
            print_json(done.plan.to_dict())
        else:
            print_plan(done, settings)
    elif args.json:
        print_json({"target": done.target, **done.report.to_dict(),
                    "not_mirrored": [n.document() for n in done.plan.not_mirrored]})
    else:
        print_report(done, settings)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    report = api.verify(settings, Progress(enabled=not args.json), lossless=args.lossless)
    if args.json:
        print_json(report.to_dict())
    else:
        print_verify(report)
    return report.exit_code


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    status = api.status(settings)
    code, why = api.status_health(status, args.max_lag)
    if "error" in status:  # MongoDB is down: what the daemon last wrote beside its state
        if args.json:
            print_json(status)
        else:
            say(f"MongoDB: {status['error']}")
            elsewhere = status.get("daemon_elsewhere")
            if status["daemon"] is not None:
                print_daemon(status["daemon"])
            elif elsewhere is not None:
                other = {"embedded": "the embedded MongoDB"}.get(elsewhere["target"],
                                                                   elsewhere["target"])
                say(f"{settings.state_dir / 'daemon.json'} is the status of a syncd run on "
                    + (f"another target ({other}, database {elsewhere['database']!r})"
                       if other else "a target it does not record")
                    + ", not this one's: not shown")
            else:
                say(f"no daemon status in {settings.state_dir / 'daemon.json'} (no syncd run "
                    "with this state directory on this host)")
    elif args.json:
        print_json(status)
    else:
        print_status(status, settings, api.sources_health(status, args.max_lag))
    if not args.json:
        say(f"health: {why} (exit {code})")
    return code


def cmd_experiments(args: argparse.Namespace, settings: Settings) -> int:
    if args.action in ("best", "search") and args.offset < 0:
        raise ConfigError(f"--offset {args.offset}: must be 0 or more")
    query = None
    if args.action == "search":
        try:
            query = json.loads(args.filter)
        except ValueError as exc:
            raise ConfigError(f"filter {args.filter!r}: not JSON ({exc})") from None
        if not isinstance(query, dict):
            raise ConfigError(f"filter {args.filter!r}: must be a JSON object")
    # One reader, so one connection (one embedded MongoDB start) for the whole command.
    with api.experiments_reader(settings, args.source, args.as_of) as reader:
        if args.as_of is not None and not args.json:
            print_as_of(reader.scope())
        return _experiments_action(args, reader, query)


def _experiments_action(args: argparse.Namespace, reader: api.ExperimentsReader,
                        query: dict[str, object] | None) -> int:
    """Run and render the one query of `syncd experiments ACTION`."""
    if args.action == "history" and args.versions:
        versions = reader.versions(args.ref)
        if args.json:
            print_json(versions.to_dict())
        else:
            print_versions(versions)
        return 0
    if args.action == "history":
        history = reader.history(args.ref)
        if args.json:
            print_json(history)
        else:
            print_history(history)
        return 0
    if args.action == "compare":
        comparison = reader.compare(args.refs)
        if args.json:
            print_json(comparison.to_dict(args.all))
        else:
            print_comparison(comparison, args.all)
        return 0
    if args.action == "best":
        found = reader.best(args.challenge, args.n, args.status or None, offset=args.offset)
    else:
        found = reader.search(query or {}, limit=args.limit, offset=args.offset)
    if args.json:
        print_json(found.docs)
    else:
        print_docs(found.docs, found.why_none, found.total, found.offset)
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    return api.run(settings, args.capture, adopt_file=args.adopt_file, http=args.http)


def cmd_capture(args: argparse.Namespace, settings: Settings) -> int:
    from legacy_adapters.sqlite_capture import LOG_TABLE

    if args.action == "install":
        path, done = api.capture_install(settings)
        say(f"triggers installed on {len(done)} table(s) of {path}: {', '.join(done)}"
            if done else f"triggers already installed on every synced table of {path}")
        say(f"changes are logged in {LOG_TABLE}; `syncd capture uninstall` removes it all")
    elif args.action == "uninstall":
        path, count = api.capture_uninstall(settings, force=args.force)
        say(f"removed {count} trigger(s) and the change log from {path}")
    else:
        data = api.capture_status(settings)
        if args.json:
            print_json(data)
        else:
            print_capture_status(data)
    return 0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    with api.events(settings, start=args.start, count=args.count) as events:
        try:
            for entry_id, event in events:
                if args.json:
                    # One object per line (JSON lines), for `jq` and log shippers.
                    sys.stdout.write(dumps({"id": entry_id, **event}, indent=None) + "\n")
                else:
                    print_event(entry_id, event)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        finally:
            if events.skipped:  # entries other programs put on the stream
                sys.stderr.write(f"skipped {events.skipped} stream entries that are not "
                                 "syncd events\n")
    return 0


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    def started(url: str) -> None:
        say(f"dashboard on {url} (read-only; Ctrl-C stops it)")
        sys.stdout.flush()

    api.dashboard(settings, args.listen, started)
    return 0


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    counts, files = api.sample(args.path, rows=args.rows, seed=args.seed, force=args.force,
                               hdf5_dir=args.hdf5_dir, files=args.files, windows=args.windows)
    say(f"wrote {args.path}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if files:
        size = sum(f.size_bytes for f in files) / 2**20  # MiB, as warm and cache stats say
        say(f"wrote {len(files)} HDF5 window cache(s) in {args.hdf5_dir} ({size:.1f} MiB, "
            f"{sum(f.n_windows for f in files)} windows): " + ", ".join(f.path.name for f in files))
        say(f"next: syncd warm --hdf5-dir {args.hdf5_dir}, then syncd cache stats")
    return 0
