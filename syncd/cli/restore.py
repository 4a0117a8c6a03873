"""`syncd restore --to PATH [--as-of TIME] [--source ID]`: parse, call syncd.api, render."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from syncd import api
from syncd.cli.output import print_json, say, table
from syncd.config import Settings
from syncd.progress import Progress

DESCRIPTION = """\
Write a NEW SQLite file from MongoDB alone: every mirrored table with its original
CREATE statement and indexes, every row with its values and storage classes (TEXT
byte for byte, BLOB, REAL, 64-bit INTEGER, NULL; rowids kept), the AUTOINCREMENT
counters, the views and the legacy triggers, as they were at TIME (default: now).
syncd's own capture triggers and change log are not restored. The file is written
beside PATH under a temporary name, checked with PRAGMA integrity_check and only
then put at PATH; an existing PATH is refused (exit 2), never replaced.

History starts at the first sync (`syncd migrate`, or the first `syncd run`): a TIME
before it is refused, saying when it starts. Versions after it are those `syncd run`
recorded while following the legacy scripts. A table left out of history
([history] exclude) is restored empty and named as not restorable exactly.
"""


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    progress = Progress(enabled=not args.json)
    report = api.restore(settings, args.to, args.as_of, args.source, progress)
    if args.json:
        print_json(report.to_dict())
        return 0
    shown = report.to_dict()
    say(f"restored {report.path} from source {report.source!r} as of "
        f"{shown['as_of'] or 'now'} (history starts {shown['history_starts']})")
    say(table([[t["table"], t["rows"], "" if t["sequence"] is None else t["sequence"]]
               for t in report.tables], ["table", "rows", "autoincrement"]))
    if report.views:
        say(f"views: {', '.join(report.views)}")
    say(f"{report.rows} rows, {len(report.tables)} tables, {len(report.views)} views, "
        f"{report.triggers} triggers in {report.seconds:.1f} s; integrity_check: "
        f"{report.integrity}")
    for item in report.not_restored:
        say(f"not restored exactly: {item['table']}: {item['why']}")
    return 0


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `restore` with the parser `cli.build_parser` is making."""
    p = command("restore", cmd_restore, "write a metadata.db from MongoDB, as of any moment",
                DESCRIPTION)
    p.add_argument("--to", type=Path, required=True, metavar="PATH",
                   help="the new SQLite file (refused if it exists)")
    p.add_argument("--as-of", metavar="TIME",
                   help="the moment to restore: an ISO 8601 time with its offset "
                   "(2025-10-20T14:03:38+02:00, ...Z for UTC) or a date (2025-10-20: its "
                   "00:00 UTC); default now")
    p.add_argument("--source", metavar="ID",
                   help="whose history (default: the configured --source-id)")
