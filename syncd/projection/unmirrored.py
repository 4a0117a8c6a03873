"""Legacy tables syncd cannot mirror, and why: reported and skipped, never fatal.

A table name is untrusted input (any training script may create one): one MongoDB
cannot hold, or one syncd reserves, must cost that table its mirror, never every
table theirs. `Model.not_mirrored` finds them; migrate, verify, status, the
metrics and the dashboard show them from the plain dicts `NotMirrored.document()`
makes (docs/operations.md, "Tables syncd does not mirror").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

SHOWN_CHARS = 60

# What kind of reason (the `reason` label of the syncd_tables_not_mirrored metric).
RESERVED = "reserved_name"
TOO_LONG = "name_too_long"
TAKEN = "collection_taken"
NO_KEY = "no_row_key"
REASONS = (RESERVED, TOO_LONG, TAKEN, NO_KEY)


def shown(name: str) -> str:
    """A table name fit for a one-line message: control characters escaped, a long
    name cut to its first 60 characters and its length."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                   for c in name[:SHOWN_CHARS])
    if len(name) > SHOWN_CHARS:
        text += f"… ({len(name)} characters)"
    return text or '""'


@dataclass(frozen=True)
class NotMirrored:
    """One legacy table syncd leaves out: its name, the kind of reason, and the reason."""

    table: str
    kind: str
    why: str

    @property
    def line(self) -> str:
        """The one-line report: "table NAME is not mirrored: WHY"."""
        return f"table {shown(self.table)} is not mirrored: {self.why}"

    def document(self) -> dict[str, Any]:
        """The stored and shown form (state document, status, verify --json)."""
        return {"table": self.table, "shown": shown(self.table), "kind": self.kind,
                "reason": self.why}


def lines(documents: list[dict[str, Any]] | None) -> list[str]:
    """The one-line reports of stored `document()`s (missing keys tolerated)."""
    return [f"table {d.get('shown') or shown(str(d.get('table', '')))} is not mirrored: "
            f"{d.get('reason')}" for d in documents or []]


def newest(daemon: dict[str, Any] | None, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The latest list of tables not mirrored: the daemon's status document's (a running
    daemon follows the schema) unless a `migrate` recorded one since it last wrote."""
    daemon = daemon or {}
    if "not_mirrored" not in daemon:
        return list(meta.get("not_mirrored") or [])
    beat, migrated = daemon.get("heartbeat_at"), meta.get("updated_at")
    if not daemon.get("running") and isinstance(beat, dt.datetime) \
            and isinstance(migrated, dt.datetime) and migrated > beat:
        return list(meta.get("not_mirrored") or [])
    return list(daemon.get("not_mirrored") or [])
