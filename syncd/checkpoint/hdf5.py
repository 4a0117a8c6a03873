"""The HDF5 follower's record in `_syncd_state` (`_id: "hdf5"`): its budget, prefix,
directories and last pass, for `syncd status`. The only writer of that document."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.store import STATE, utcnow

STATUS_ID = "hdf5"


def record_hdf5_status(db: Database, max_bytes: int, prefix: str, dirs: Iterable[Path],
                       used_bytes: int) -> None:
    """Note the end of a pass: the budget and what it used."""
    db[STATE].update_one({"_id": STATUS_ID}, {"$set": {
        "max_bytes": max_bytes, "prefix": prefix, "dirs": [str(d) for d in dirs],
        "last_scan_at": utcnow(), "used_bytes": used_bytes}}, upsert=True)


def read_hdf5_status(db: Database) -> dict[str, Any]:
    """The last pass's record ({} before the first)."""
    return db[STATE].find_one({"_id": STATUS_ID}) or {}
