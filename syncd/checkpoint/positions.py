"""Where `syncd run` stands in the legacy source: the typed positions it saves.

Owns the `_syncd_state` documents
- `capture`: the change-log position applied and saved (triggers mode), with the id
  of the log it counts in (a recreated log starts its seqs again). Saved journaled
  and only after the writes it covers: a crash of the target never leaves a position
  past what survived. While a start-up migration runs it holds where the log stood
  when the migration began (`migrating`): a run stopped, killed or cut off from
  MongoDB part way replays the log from there once the migration is done. It keeps
  the log entry AT that seq too (`entry`: its table, operation, rowid and time, as
  the feed read it): a file put back from a backup whose log grew past the seq
  again holds another entry there, and the next start reconciles instead.
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

from syncd.checkpoint.store import StateStore, durable, utcnow

CAPTURE_ID = "capture"
SCAN_ID = "scan"
CONSUMER_ID = "consumer"


@dataclass(frozen=True)
class CapturePosition:
    """The last change-log entry applied and saved, in the log `install_id` names;
    `migrating`: the entry the log stood at when a start-up migration began (every
    later one is applied once it is done)."""

    install_id: str | None
    seq: int
    migrating: bool = False
    entry: dict[str, Any] | None = None  # the entry at `seq` (None: not known)

    @classmethod
    def load(cls, store: StateStore) -> CapturePosition | None:
        doc = store.state.find_one({"_id": store.key(CAPTURE_ID)})
        if not doc:
            return None
        return cls(doc.get("install_id"), int(doc.get("seq") or 0),
                   bool(doc.get("migrating")), doc.get("entry"))

    def save(self, store: StateStore) -> None:
        """Save journaled: the position is what a crash of the target resumes from."""
        durable(store.state).replace_one(
            {"_id": store.key(CAPTURE_ID)},
            {"kind": CAPTURE_ID, "source_id": store.source_id, "mode": "triggers",
             "install_id": self.install_id, "seq": self.seq,
             **({"migrating": True} if self.migrating else {}),
             **({"entry": self.entry} if self.entry is not None else {}),
             "updated_at": utcnow()}, upsert=True)


def forget_capture(store: StateStore) -> None:
    """Drop the saved change-log position: the file it counted in was replaced (a
    backup put back, another host's copy), so the next `syncd run` reconciles every
    table instead of resuming at a seq that belongs to another file's log."""
    durable(store.state).delete_one({"_id": store.key(CAPTURE_ID)})


def save_scan_marks(store: StateStore, marks: dict[str, Any]) -> None:
    """Record each table's high-water mark (BSON-encoded positions) for `syncd status`."""
    store.state.replace_one(
        {"_id": store.key(SCAN_ID)},
        {"kind": SCAN_ID, "source_id": store.source_id, "mode": "scan",
         "hwm": [[table, mark] for table, mark in marks.items()],
         "updated_at": utcnow()}, upsert=True)


def position_document(store: StateStore) -> dict[str, Any] | None:
    """The saved capture position, else the scan marks, as stored (for `syncd status`)."""
    doc = store.state.find_one({"_id": store.key(CAPTURE_ID)}) or \
        store.state.find_one({"_id": store.key(SCAN_ID)})
    if doc:
        for name in ("_id", "kind", "source_id"):
            doc.pop(name, None)
    return doc


def consumer_id(store: StateStore) -> str:
    """This source's stable name in the change log's consumer registry (made once)."""
    doc = store.state.find_one_and_update(
        {"_id": store.key(CONSUMER_ID)}, {"$setOnInsert": {
            "kind": CONSUMER_ID, "source_id": store.source_id, "consumer": uuid.uuid4().hex,
                                                "created_at": utcnow()}},
        upsert=True, return_document=ReturnDocument.AFTER)
    return str(doc["consumer"])


def forget_positions(store: StateStore, dry_run: bool) -> dict[str, int]:
    """The source's positions and consumer id, when the source is removed."""
    return store.forget_kinds((CAPTURE_ID, SCAN_ID, CONSUMER_ID), dry_run)
