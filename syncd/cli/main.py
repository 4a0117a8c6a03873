"""The `syncd` command line: the parser, and the mapping of errors to exit codes.

Each command (syncd.cli.commands) parses -> calls syncd.api -> renders.

Exit codes: 0 success; 1 the work failed or verify found differences; 2 usage or
configuration error (one line naming the setting; no traceback); 3 `verify --lossless`
found no difference but a mapping that declares no inverse.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pymongo.errors import PyMongoError

from syncd import __version__
from syncd.api.options import endpoints, log_format
from syncd.cli.commands import (
    cmd_capture,
    cmd_dashboard,
    cmd_events,
    cmd_experiments,
    cmd_migrate,
    cmd_run,
    cmd_sample,
    cmd_status,
    cmd_verify,
)
from syncd.cli.hdf5 import add_commands as add_hdf5_commands
from syncd.cli.reconcile import add_commands as add_reconcile_commands
from syncd.cli.restore import add_commands as add_restore_commands
from syncd.cli.source import add_commands as add_source_commands
from syncd.config import add_arguments, load_settings
from syncd.embedded import statedir
from syncd.errors import FAILURES
from syncd.logs import LOG_FORMATS, setup_logging
from syncd.redact import scrub

log = logging.getLogger("syncd")

EPILOG = """\
Settings come from a TOML file (--config / SYNCD_CONFIG), then SYNCD_* environment
variables, then flags. With no --mongo-url, syncd starts an embedded MongoDB
(SecantusDB) under --state-dir and stops it on exit; the data stays there. With
no --redis-url, commands that need Redis start an embedded redis-server likewise.
A password in --mongo-url or --redis-url is visible to every local user in `ps`:
put such URLs in SYNCD_MONGO_URL / SYNCD_REDIS_URL or the TOML file instead.
Exit codes: 0 ok, 1 failed or differences found, 2 usage or configuration error
(`syncd status` also 3, 4, 5 and `syncd verify --lossless` 3: see their --help).
"""


ADOPT_HELP = ("the legacy file moved: make this --sqlite the file the database mirrors "
              "(a database mirrors one file; another file is refused, since syncing it would "
              "delete the first one's documents)")


# -- parser ---------------------------------------------------------------------------


VERBOSE_AFTER = "verbose_after_command"
VERBOSE_HELP = ("more log output: -v syncd's debug lines, -vv also pymongo's and the other "
                "libraries' (-v before and after the command add up: -v migrate -v is -vv)")


class _Parser(argparse.ArgumentParser):
    """The top-level parser: `verbose` is the count of -v before and after the command."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        parsed.verbose = getattr(parsed, "verbose", 0) + vars(parsed).pop(VERBOSE_AFTER, 0)
        return parsed, rest


def build_parser() -> argparse.ArgumentParser:
    settings_parent = argparse.ArgumentParser(add_help=False)
    add_arguments(settings_parent)
    settings_parent.add_argument("--log-format", choices=LOG_FORMATS,
                                 default=argparse.SUPPRESS,
                                 help="text (default) or json: one object per line")
    # -v / -q also after the command, as --log-format is (`syncd migrate -q`); the -v
    # there count apart (a subcommand's value would replace the count before it) and
    # _Parser adds them up
    settings_parent.add_argument("-v", "--verbose", action="count", dest=VERBOSE_AFTER,
                                 default=argparse.SUPPRESS, help=VERBOSE_HELP)
    settings_parent.add_argument("-q", "--quiet", action="store_true",
                                 default=argparse.SUPPRESS, help="only warnings and errors")
    json_parent = argparse.ArgumentParser(add_help=False)
    json_parent.add_argument("--json", action="store_true", help="print JSON for scripts")

    parser = _Parser(
        prog="syncd", description="Mirror a legacy SQLite metadata.db (and HDF5 caches) into "
        "MongoDB and Redis, exactly, without getting in the legacy writers' way.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help="log lines as text (default) or one JSON object per line "
                        "(env: SYNCD_LOG_FORMAT; [log] format)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=argparse.ArgumentParser)

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

    p = command("verify", cmd_verify,
                "prove MongoDB equals the projection of the legacy database",
                "Compare every legacy row's projection with its document (BSON bytes), "
                "find extra documents and documents of no source, and compare every row "
                "with its last version in history. With --hdf5-dir, also check the Redis "
                "cache: its metadata against the index, every cached value's checksum. "
                "Exit 1 on any difference.")
    p.add_argument("--lossless", action="store_true",
                   help="also prove every row comes back from its document exactly (each "
                        "value with its storage class: inverse(projection(row)) == row); a "
                        "difference names table, key and column (exit 1); exit 3 when "
                        "nothing differs but a mapping declares no inverse (lossy)")
    p = command("status", cmd_status, "show version, counts, last run and checkpoints",
                "Read the target's state: migration version and changelog, collection "
                "counts, the last run, unfinished checkpoints and quarantined rows. Exit "
                "0: a daemon runs, ready, no outage, within --max-lag, nothing quarantined; "
                "1: MongoDB unreachable; 3: the daemon that followed has stopped (no fresh "
                "heartbeat; a source that only `syncd migrate` filled and no daemon ever "
                "followed is 0, 'no daemon running'); 4: the daemon "
                "is not ready, waits out an outage or lags more than --max-lag; 5: rows "
                "are quarantined (the first that applies). With no --source-id or --sqlite "
                "on a database of several sources: each source's health, and the first "
                "code that applies to any of them.")
    p.add_argument("--max-lag", type=float, default=60.0, metavar="SECONDS",
                   help="the lag above which status exits 4 (default 60)")

    add_hdf5_commands(command, settings_parent, json_parent)  # warm, cache

    p = command("experiments", cmd_experiments, "query synced experiments (EEG2025 model)",
                "Read the experiment model (migration 0002, lossless since 0005) as the "
                "legacy tracker did.",
                json_flag=False, settings=False)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = acts.add_parser(name, help=help_text, description=help_text,
                              parents=[settings_parent, json_parent])
        sub.add_argument("--source", metavar="ID",
                         help="only this source's experiments (default: every source)")
        sub.add_argument("--as-of", metavar="TIME", default=None,
                         help="as they were at TIME, rebuilt from history: ISO 8601 with its "
                         "offset (2025-10-20T14:03:00+02:00, ...Z), a date (its 00:00 UTC) or "
                         "now; history starts at the first sync")
        return sub

    best = action("best", "best experiments of a challenge by best_val_loss")
    best.add_argument("--challenge", type=int, required=True,
                      help="the EEG2025 challenge (1 or 2) whose runs to rank")
    best.add_argument("-n", type=int, default=10, help="how many (default 10)")
    best.add_argument("--status", default="completed",
                      help="only this status (default completed; '' for any)")
    best.add_argument("--offset", type=int, default=0, metavar="N",
                      help="skip the N best first (the next page: --offset 10)")
    hist = action("history", "one experiment's epochs and checkpoints")
    hist.add_argument("ref", help="run_id or experiment _id")
    hist.add_argument("--versions", action="store_true",
                      help="list the run's versions instead: each change, when its statement "
                      "ran (up to --as-of, if given)")
    comp = action("compare", "several experiments side by side")
    comp.add_argument("refs", nargs="+", help="run_ids or experiment _ids")
    comp.add_argument("--all", action="store_true",
                      help="show the keys that are equal in every experiment too")
    search = action("search", "experiments matching a MongoDB filter (JSON)")
    search.add_argument("filter", nargs="?", default="{}",
                        help='over the experiment documents\' fields (run_id, challenge, '
                        'status, model.name, metrics.best_val_loss, metrics.best_epoch, '
                        'start_time, end_time, config.KEY, notes), e.g. '
                        '\'{"status": "running", "model.name": "eegnet"}\'')
    search.add_argument("--limit", type=int, default=0, metavar="N",
                        help="at most N experiments (default: all)")
    search.add_argument("--offset", type=int, default=0, metavar="N",
                        help="skip the first N (by run_id)")

    p = command("run", cmd_run, "follow the legacy database and keep MongoDB in sync",
                "Bring MongoDB up to date (backfill if needed), then apply every INSERT, "
                "UPDATE and DELETE the legacy scripts commit, until SIGTERM/SIGINT, keeping "
                "every version of every row in _syncd_history (triggers mode; [history] "
                "keep, exclude). Runs as a systemd service (Type=notify) or in the compose "
                "stack.", json_flag=False)
    p.add_argument("--capture", choices=("triggers", "scan"),
                   help="change capture: triggers (default; exact, every version kept; "
                   "installs triggers and a change log in metadata.db) or scan (writes "
                   "nothing to metadata.db; updates and deletes found by periodic "
                   "reconcile, history keeps only new rows) ([daemon] capture)")
    p.add_argument("--adopt-file", action="store_true", help=ADOPT_HELP)
    p.add_argument("--http", metavar="ADDR", default=None,
                   help="serve /metrics, /healthz, /readyz and the dashboard on HOST:PORT "
                   "(default 127.0.0.1:9187; '' turns it off) ([http] listen)")

    p = command("capture", cmd_capture, "install, remove or inspect the change-capture "
                "triggers", "Manage the triggers and the _syncd_changes log that `triggers` "
                "mode adds to metadata.db (they log each changed row's values, for history; "
                "tables in [history] exclude only the key). `uninstall` leaves the database "
                "as it was.",
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

    add_reconcile_commands(command)
    add_restore_commands(command)
    add_source_commands(command, settings_parent, json_parent)

    p = command("events", cmd_events, "tail the change events on Redis",
                "Print the events `syncd run` publishes on the Redis stream syncd:events: "
                "one per applied batch, collection and operation.")
    p.add_argument("--from", dest="start", default="$",
                   help="stream id to start after ('0': the oldest kept; default '$': new)")
    p.add_argument("--count", type=int, help="stop after this many events")

    p = command("dashboard", cmd_dashboard, "serve the read-only web dashboard",
                "Serve the dashboard (sync health, experiments, live training curves, cache "
                "coverage) on its own, reading the configured MongoDB and the Redis syncd run "
                "publishes to; it writes nothing. Loopback only unless a token is set "
                "(SYNCD_HTTP_TOKEN or [http] token).", json_flag=False)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:9108)")

    p = command("sample", cmd_sample, "write an EEG2025-shaped sample metadata.db (and HDF5 "
                "window caches)",
                "Write a legacy metadata.db in the EEG2025 shape (the quick start's sample is "
                "this command's output). With --hdf5-dir, also write small HDF5 window caches "
                "in the legacy layouts (challenge 1: eeg + labels, challenge 2: data + "
                "targets; 129 channels x 200 samples, float32, gzip), about 1 MB per 10 "
                "windows, named by the database's cache_files rows, to try syncd warm, "
                "syncd cache stats and CachedWindowDataset on. Deterministic for a --seed; "
                "existing files are refused unless --force.", json_flag=False, settings=False)
    p.add_argument("path", type=Path, help="the metadata.db to write")
    p.add_argument("--hdf5-dir", type=Path, metavar="DIR",
                   help="also write HDF5 window caches into DIR (created if missing)")
    p.add_argument("--files", type=int, default=4, metavar="N",
                   help="how many HDF5 files with --hdf5-dir, 1 to 10 (default 4: both "
                   "challenges of R1 and R2)")
    p.add_argument("--windows", type=int, default=10, metavar="N",
                   help="windows per HDF5 file (default 10, about 1 MB)")
    p.add_argument("--rows", type=int, metavar="N",
                   help="about N rows over all tables (default: 40 training runs with "
                   "their epochs and checkpoints)")
    p.add_argument("--seed", type=int, default=2025,
                   help="the same seed writes the same rows and HDF5 bytes (default 2025)")
    p.add_argument("--force", action="store_true",
                   help="replace PATH (and the HDF5 files) if they exist (by default an "
                   "existing file is refused)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = -1 if args.quiet else args.verbose
    env_format = os.environ.get("SYNCD_LOG_FORMAT") or None
    if env_format not in (None, *LOG_FORMATS):
        sys.stderr.write(f"syncd: error: SYNCD_LOG_FORMAT={env_format!r}: use one of "
                         f"{', '.join(LOG_FORMATS)}\n")
        return 2
    setup_logging(verbosity, args.log_format or env_format or "text")
    try:
        settings = load_settings(vars(args))
        if not args.log_format and not env_format:
            fmt = log_format(settings)
            if fmt != "text":
                setup_logging(verbosity, fmt)
        with statedir.for_command(args.command, endpoints(settings)):
            return int(args.func(args, settings))
    except FAILURES as exc:
        sys.stderr.write(f"syncd: error: {scrub(str(exc))}\n")
        return int(getattr(exc, "exit_code", 1))
    except PyMongoError as exc:
        first = (scrub(str(exc)).splitlines() or [type(exc).__name__])[0]
        first = first.split(", full error")[0]  # one line, not pymongo's dict of the reply
        sys.stderr.write(f"syncd: error: MongoDB: {first[:300]}\n")
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
