"""`syncd source remove ID [--yes] [--drop-history]`: parse, call syncd.api, render."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from syncd import api
from syncd.cli.output import print_json, say, table
from syncd.config import Settings

DESCRIPTION = """\
Take one source (one legacy file of one host) out of the shared database: its
mirrored documents (`_source` ID in every collection), its staging collections and
its state (positions, the `source` and `meta` documents, heartbeat, pending
reconciles, changelog, runs, quarantined rows). Its history (_syncd_history,
_syncd_schemas, _syncd_history_kept) is kept, so `syncd restore --source ID` still
rebuilds its file as of any moment; --drop-history deletes it too. No other source's
documents are touched. The hosts' hdf5_files documents and the Redis cache (keyed by
file, shared) are left alone.

Without --yes nothing is deleted: it prints what would be, with counts (a dry run).
Refused while a `syncd run` (or `syncd migrate`) holds the source's lease, naming
it: stop it first (and `syncd capture uninstall` the file if it stays in use).
An ID the database does not know exits 2, listing the sources it knows
(`syncd status` lists every source).
"""


def cmd_source(args: argparse.Namespace, settings: Settings) -> int:
    report = api.remove_source(settings, args.id, args.yes, args.drop_history)
    if args.json:
        print_json(report.to_dict())
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    history = {(True, True): "would delete", (True, False): "would keep",
               (False, True): "deleted", (False, False): "kept"}[
        (report.dry_run, report.drop_history)]
    rows = [[name, n, verb] for name, n in sorted(report.documents.items())]
    rows += [[f"{name} (staging)", n, "would drop" if report.dry_run else "dropped"]
             for name, n in sorted(report.staging.items())]
    rows += [[name, n, verb] for name, n in report.state.items()]
    rows += [[name, n, history] for name, n in sorted(report.history.items())]
    say(f"source {report.source_id!r}: " + ("dry run, nothing deleted (add --yes to "
        "delete)" if report.dry_run else "removed"))
    if rows:
        say(table(rows, ["collection", "documents", "action"]))
    deleted = sum(report.documents.values()) + sum(report.state.values())
    say(f"{sum(report.documents.values())} documents in {len(report.documents)} "
        f"collections and {sum(report.state.values())} state documents "
        f"{'would be deleted' if report.dry_run else 'deleted'}; "
        + (f"history {history} too ({sum(report.history.values())} documents)"
           if report.drop_history else
           f"history kept ({sum(report.history.values())} documents): `syncd restore "
           f"--source {report.source_id}` still rebuilds its file")
        + ("" if deleted or report.history else " (nothing stored for it)"))
    return 0


def add_commands(command: Callable[..., argparse.ArgumentParser],
                 settings_parent: argparse.ArgumentParser,
                 json_parent: argparse.ArgumentParser) -> None:
    """Register `source` with the parser `cli.build_parser` is making."""
    p = command("source", cmd_source, "take a source out of the shared database",
                "Manage the database's sources (`syncd status` lists them).",
                json_flag=False, settings=False)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    remove = acts.add_parser("remove", help="delete a source's documents and state (its "
                             "history kept); a dry run without --yes",
                             description=DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             parents=[settings_parent, json_parent])
    remove.add_argument("id", metavar="ID", help="the source id (as `syncd status` shows it)")
    remove.add_argument("--yes", action="store_true",
                        help="delete (without it: print what would be deleted, with counts)")
    remove.add_argument("--drop-history", action="store_true",
                        help="delete its history too (_syncd_history, _syncd_schemas, "
                        "_syncd_history_kept): `syncd restore --source ID` then has nothing")
