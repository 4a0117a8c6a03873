"""The HDF5 follower's record in `_syncd_state` (`_id: "hdf5:<source id>"`): its budget, prefix,
directories and last pass, for `syncd status`. The only writer of that document."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.store import STATE, StateStore, utcnow

STATUS_ID = "hdf5"


def record_hdf5_status(db: Database, source_id: str, max_bytes: int, prefix: str,
                       dirs: Iterable[Path], used_bytes: int) -> None:
    """Note the end of a pass: the budget and what it used."""
    db[STATE].update_one({"_id": f"{STATUS_ID}:{source_id}"}, {"$set": {
        "kind": STATUS_ID, "source_id": source_id,
        "max_bytes": max_bytes, "prefix": prefix, "dirs": [str(d) for d in dirs],
        "last_scan_at": utcnow(), "used_bytes": used_bytes}}, upsert=True)


def read_hdf5_status(db: Database, source_id: str | None = None) -> dict[str, Any]:
    """The source's last pass's record ({} before the first); the latest of any source's
    if None (`syncd warm` and `syncd run` on one host's files each record theirs)."""
    if source_id is None:
        return db[STATE].find_one({"kind": STATUS_ID}, sort=[("last_scan_at", -1)]) or {}
    return db[STATE].find_one({"_id": f"{STATUS_ID}:{source_id}"}) or {}


def forget_hdf5_status(store: StateStore, dry_run: bool) -> dict[str, int]:
    """The source's HDF5 follower record, when the source is removed."""
    return store.forget_kinds((STATUS_ID,), dry_run)
