"""Where `syncd run` stands in the legacy source: the typed positions it saves.

Owns the `_syncd_state` documents
- `capture`: the change-log position applied and saved (triggers mode), with the id
  of the log it counts in (a recreated log starts its seqs again). Saved journaled
  and only after the writes it covers: a crash of the target never leaves a position
  past what survived.
- `scan`: the per-table high-water marks (scan mode). Informational only: a scan
  start-up reconciles every table before it takes fresh marks, so nothing resumes
  from them; `syncd status` shows them (as it shows `capture`).
- `consumer`: this target's stable name in the change log's consumer registry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection

from syncd.checkpoint.store import durable, utcnow

CAPTURE_ID = "capture"
SCAN_ID = "scan"
CONSUMER_ID = "consumer"


@dataclass(frozen=True)
class CapturePosition:
    """The last change-log entry applied and saved, in the log `install_id` names."""

    install_id: str | None
    seq: int

    @classmethod
    def load(cls, state: Collection) -> CapturePosition | None:
        doc = state.find_one({"_id": CAPTURE_ID})
        if not doc:
            return None
        return cls(doc.get("install_id"), int(doc.get("seq") or 0))

    def save(self, state: Collection) -> None:
        """Save journaled: the position is what a crash of the target resumes from."""
        durable(state).replace_one(
            {"_id": CAPTURE_ID},
            {"mode": "triggers", "install_id": self.install_id, "seq": self.seq,
             "updated_at": utcnow()}, upsert=True)


def save_scan_marks(state: Collection, marks: dict[str, Any]) -> None:
    """Record each table's high-water mark (BSON-encoded positions) for `syncd status`."""
    state.replace_one(
        {"_id": SCAN_ID},
        {"mode": "scan", "hwm": [[table, mark] for table, mark in marks.items()],
         "updated_at": utcnow()}, upsert=True)


def position_document(state: Collection) -> dict[str, Any] | None:
    """The saved capture position, else the scan marks, as stored (for `syncd status`)."""
    doc = state.find_one({"_id": CAPTURE_ID}) or state.find_one({"_id": SCAN_ID})
    if doc:
        doc.pop("_id", None)
    return doc


def consumer_id(state: Collection) -> str:
    """This target's stable name in the change log's consumer registry (made once)."""
    doc = state.find_one_and_update(
        {"_id": CONSUMER_ID}, {"$setOnInsert": {"consumer": uuid.uuid4().hex,
                                                "created_at": utcnow()}},
        upsert=True, return_document=ReturnDocument.AFTER)
    return str(doc["consumer"])
