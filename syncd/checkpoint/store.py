"""syncd's own bookkeeping, kept in the target database beside the data.

- `_syncd_state`: `meta` (applied version, projection parameters, managed
  collections), `job` (the checkpoint of a migration in progress), `lease`.
- `_syncd_changelog`: one document per applied migration (checksum, timing).
- `_syncd_runs`: a summary of every migrate/verify run.
- `_syncd_quarantine`: rows that could not be projected or written, with the error.

Keeping it in the same database means a checkpoint can never describe data that
was not written: it is saved after the write it describes succeeds.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from syncd.errors import MigrationError

STATE = "_syncd_state"
CHANGELOG = "_syncd_changelog"
RUNS = "_syncd_runs"
QUARANTINE = "_syncd_quarantine"
STAGE_PREFIX = "_syncd_stage."
LEASE_SECONDS = 60.0


def utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime BSON stores."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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


def process_token(pid: int) -> str | None:
    """Boot id and start time of process `pid` (Linux): who it is, beyond its number."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


class Lease:
    """A time-limited lock document: only one syncd migrates a database at a time."""

    def __init__(self, store: StateStore, what: str = "migrate",
                 seconds: float = LEASE_SECONDS) -> None:
        self.collection = store.state
        self.seconds = seconds
        self.what = what
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._renewed: dt.datetime | None = None
        # Called at every renew (once per chunk of long work): the daemon uses it to
        # note that it is alive and to stop long work when asked to.
        self.on_renew: Callable[[], None] | None = None

    def _dead_local_holder(self, held: dict[str, Any]) -> bool:
        """The holder ran on this host and its process is gone (killed, crashed).

        A pid alone is not enough: a container restarted in place has the same host
        name and often the same pid. The process's start time (and the boot id) tell
        the old holder from a new process that happens to have its pid.
        """
        pid = held.get("pid")
        if held.get("host") != self.host or not isinstance(pid, int):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        token = held.get("process")
        return bool(token) and token != process_token(pid)

    def acquire(self) -> None:
        now = utcnow()
        claim = {"$set": {"owner": self.owner, "host": self.host, "pid": self.pid,
                          "process": process_token(self.pid), "what": self.what,
                          "acquired_at": now,
                          "expires_at": now + dt.timedelta(seconds=self.seconds)}}
        try:
            self.collection.find_one_and_update(
                {"_id": "lease", "$or": [{"expires_at": {"$lt": now}}, {"owner": self.owner}]},
                claim, upsert=True, return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            held = self.collection.find_one({"_id": "lease"}) or {}
            if self._dead_local_holder(held) and self.collection.update_one(
                    {"_id": "lease", "owner": held.get("owner")}, claim).matched_count:
                self._renewed = now
                return
            raise MigrationError(
                f"another syncd ({held.get('owner', '?')}) holds the {held.get('what', '?')} "
                f"lease on this database until {held.get('expires_at', '?')} UTC; "
                "wait for it to finish (a crashed holder's lease expires by itself)"
            ) from None
        self._renewed = now

    def renew(self) -> None:
        """Extend the lease; cheap to call often (writes at most every few seconds)."""
        if self.on_renew is not None:
            self.on_renew()
        self.renew_idle()

    def renew_idle(self) -> None:
        """Extend the lease without the `on_renew` hook (a heartbeat while idle)."""
        now = utcnow()
        if self._renewed and (now - self._renewed).total_seconds() < self.seconds / 6:
            return
        result = self.collection.update_one(
            {"_id": "lease", "owner": self.owner},
            {"$set": {"expires_at": now + dt.timedelta(seconds=self.seconds)}},
        )
        if result.matched_count == 0:
            raise MigrationError("lost the migration lease (it expired and another syncd took "
                                 "it); stopping without writing further")
        self._renewed = now

    def release(self) -> None:
        self.collection.delete_one({"_id": "lease", "owner": self.owner})
