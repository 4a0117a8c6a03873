"""What a backfill did, per table and in total, for the summary, `--json` and `_syncd_runs`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TableReport:
    table: str
    collection: str
    rows: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    raw_text: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "collection": self.collection, "rows": self.rows,
            "written": self.written, "unchanged": self.unchanged, "deleted": self.deleted,
            "quarantined": self.quarantined, "raw_text": self.raw_text,
            "flagged": sum(self.flags.values()),
            "flags": [[k, v] for k, v in sorted(self.flags.items())],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Report:
    kind: str
    from_version: int
    to_version: int
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0
    resumed: bool = False
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def total(self, name: str) -> int:
        if name == "flagged":
            return sum(sum(t.flags.values()) for t in self.tables)
        return sum(getattr(t, name) for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.total("rows") / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "from_version": self.from_version, "to_version": self.to_version,
            "resumed": self.resumed, "seconds": round(self.seconds, 3),
            "rows": self.total("rows"), "written": self.total("written"),
            "unchanged": self.total("unchanged"), "deleted": self.total("deleted"),
            "quarantined": self.total("quarantined"), "flagged": self.total("flagged"),
            "raw_text": self.total("raw_text"),
            "rows_per_second": round(self.rows_per_second, 1),
            "dropped": self.dropped, "notes": self.notes,
            "tables": [t.to_dict() for t in self.tables],
        }
