"""syncd's own bookkeeping, kept in the target database beside the data.

- `_syncd_state`: `meta` (applied version, projection parameters, managed
  collections), `job` (the checkpoint of a migration in progress), `source_file`.
  The other kinds of state document each have one owner module beside this one:
  `lease` (lease.py), `capture`, `scan` and `consumer` (positions.py), `daemon`
  (daemon_doc.py), `resync` and the reconcile requests (resync.py).
- `_syncd_changelog`: one document per applied migration (checksum, timing).
- `_syncd_runs`: a summary of every migrate/verify run.
- `_syncd_quarantine`: rows that could not be projected or written, with the error.

Keeping it in the same database means a checkpoint can never describe data that
was not written: it is saved after the write it describes succeeds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

STATE = "_syncd_state"
CHANGELOG = "_syncd_changelog"
RUNS = "_syncd_runs"
QUARANTINE = "_syncd_quarantine"
STAGE_PREFIX = "_syncd_stage."


def utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime BSON stores."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def durable(state: Collection) -> Collection:
    """The state collection with journaled writes: a checkpoint that survives a crash
    of the target names only writes that survived it too."""
    return state.with_options(write_concern=WriteConcern(j=True))


class StateStore:
    """Read and write syncd's bookkeeping documents."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.state = db[STATE]
        self.changelog = db[CHANGELOG]
        self.runs = db[RUNS]
        self.quarantine = db[QUARANTINE]

    # -- meta --------------------------------------------------------------------

    def meta(self) -> dict[str, Any] | None:
        return self.state.find_one({"_id": "meta"})

    def save_meta(self, **fields: Any) -> None:
        self.state.update_one({"_id": "meta"}, {"$set": {**fields, "updated_at": utcnow()}},
                              upsert=True)

    # -- the legacy file this database mirrors (see syncd.checkpoint.source_file) ------------

    def source_file(self) -> dict[str, Any] | None:
        return self.state.find_one({"_id": "source_file"})

    def record_source_file(self, path: str, source_id: str, replace: bool = False) -> bool:
        """Record the mirrored file; False if one was recorded first (and not `replace`)."""
        doc = {"path": path, "source_id": source_id, "recorded_at": utcnow()}
        if replace:
            self.state.replace_one({"_id": "source_file"}, doc, upsert=True)
            return True
        try:
            self.state.insert_one({"_id": "source_file", **doc})
        except DuplicateKeyError:
            return False
        return True

    # -- changelog ---------------------------------------------------------------

    def applied(self) -> list[dict[str, Any]]:
        return list(self.changelog.find().sort("_id", 1))

    def record_applied(self, entries: list[dict[str, Any]], version: int) -> None:
        """Make the changelog say exactly versions 1..version are applied."""
        self.changelog.delete_many({"_id": {"$gt": version}})
        for entry in entries:
            self.changelog.update_one({"_id": entry["_id"]}, {"$setOnInsert": entry}, upsert=True)

    # -- job checkpoint ----------------------------------------------------------

    def job(self) -> dict[str, Any] | None:
        return self.state.find_one({"_id": "job"})

    def save_job(self, job: dict[str, Any]) -> None:
        self.state.replace_one({"_id": "job"}, job, upsert=True)

    def update_job(self, fields: dict[str, Any], unset: tuple[str, ...] = ()) -> None:
        update: dict[str, Any] = {"$set": fields}
        if unset:
            update["$unset"] = {k: "" for k in unset}
        self.state.update_one({"_id": "job"}, update)

    def clear_job(self) -> None:
        self.state.delete_one({"_id": "job"})

    # -- runs and quarantine -----------------------------------------------------

    def record_run(self, summary: dict[str, Any]) -> None:
        self.runs.insert_one({"at": utcnow(), **summary})

    def last_run(self, *kinds: str) -> dict[str, Any] | None:
        """The latest run of one of `kinds` (any run when none is named)."""
        query = {"kind": {"$in": list(kinds)}} if kinds else {}
        return self.runs.find_one(query, sort=[("at", DESCENDING), ("_id", DESCENDING)])

    def quarantine_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.quarantine.replace_one({"_id": row["_id"]}, {**row, "at": utcnow()}, upsert=True)

    def release_quarantine(self, table: str, ids: list[Any]) -> None:
        """Rows of `table` that now projected and wrote fine leave the quarantine."""
        if ids:
            for start in range(0, len(ids), 100):
                batch = ids[start:start + 100]
                self.quarantine.delete_many({"table": table, "_id": {"$in": batch}})

    def quarantine_count(self) -> int:
        return self.quarantine.count_documents({})
