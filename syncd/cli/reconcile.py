"""`syncd reconcile [TABLE ...]`: a reconcile on demand, done by the running daemon.

`syncd migrate` is refused while `syncd run` holds the lease, yet some legacy
changes fire no trigger (INSERT OR REPLACE removing rows through another UNIQUE
constraint) and would otherwise wait for the hourly reconcile. (A VACUUM, which
renumbers rowids, moves the schema version, and the daemon reconciles on its own.)
The request goes through MongoDB (syncd.api.reconcile, syncd.checkpoint.resync), so
it works wherever the daemon runs; the daemon answers with what it wrote.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from syncd import api
from syncd.cli.output import print_json, say, table
from syncd.config import Settings


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    what = ", ".join(args.tables) if args.tables else "every table"

    def asked(daemon: dict[str, Any]) -> None:
        say(f"asked syncd run (pid {daemon.get('pid')} on {daemon.get('host')}) to reconcile "
            f"{what}; waiting up to {args.timeout:g} s")

    result = api.reconcile(settings, args.tables, args.timeout, asked=asked)
    if args.json:
        print_json(result)
    else:
        say(table([[name, r.get("rows", ""), r.get("written", ""), r.get("deleted", ""),
                    r.get("unchanged", ""), r.get("error", "")]
                   for name, r in sorted(result.items())],
                  ["table", "rows", "written", "deleted", "unchanged", "error"]))
    return 1 if any("error" in r for r in result.values()) else 0


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `reconcile` with the parser `cli.build_parser` is making."""
    p = command("reconcile", cmd_reconcile, "have the running syncd run reconcile now",
                "Ask the `syncd run` that follows this database to compare the named tables "
                "(default: all) with their documents now and fix every difference, and wait "
                "for its answer. For changes no trigger sees (INSERT OR REPLACE removing rows "
                "through another UNIQUE constraint; a VACUUM renumbering rowids is "
                "reconciled by the daemon on its own). SIGUSR1 to the daemon does the same "
                "for every table without waiting.")
    p.add_argument("tables", nargs="*", metavar="TABLE", help="legacy tables (default: all)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds to wait for the answer (default 3600)")
