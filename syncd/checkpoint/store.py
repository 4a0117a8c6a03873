"""syncd's own bookkeeping, kept in the target database beside the data.

- `_syncd_state`: `meta` (applied version, projection parameters, managed
  collections), `job` (the checkpoint of a migration in progress), `source`
  (the file a source mirrors; syncd.checkpoint.sources). Every state document
  belongs to one source: its `_id` is `"<kind>:<source id>"` (`key`), and it
  carries a `source_id` field, so any number of sources share one database.
  The other kinds of state document each have one owner module beside this one:
  `lease` (lease.py), `capture`, `scan` and `consumer` (positions.py), `daemon`
  (daemon_doc.py), `resync` and the reconcile requests (resync.py).
- `_syncd_changelog`: one document per source and applied migration (checksum, timing).
- `_syncd_runs`: a summary of every migrate/verify run, with its `source_id`.
- `_syncd_quarantine`: rows that could not be projected or written, with the error
  and the `source_id`.

This module is the only one that reads or writes `_syncd_changelog`, `_syncd_runs`
and `_syncd_quarantine` (besides `upgrade.py`'s one-time conversion), and nothing
outside `syncd/checkpoint/` touches `_syncd_state`: tests/test_owners.py checks it.

Keeping it in the same database means a checkpoint can never describe data that
was not written: it is saved after the write it describes succeeds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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

    def __init__(self, db: Database, source_id: str = "") -> None:
        self.db = db
        self.source_id = source_id
        self.state = db[STATE]
        self.changelog = db[CHANGELOG]
        self.runs = db[RUNS]
        self.quarantine = db[QUARANTINE]

    def key(self, kind: str) -> str:
        """The `_id` of this source's state document of `kind`."""
        return f"{kind}:{self.source_id}"

    # -- meta --------------------------------------------------------------------

    def meta(self) -> dict[str, Any] | None:
        return self.state.find_one({"_id": self.key("meta")})

    def save_meta(self, **fields: Any) -> None:
        self.state.update_one({"_id": self.key("meta")},
                              {"$set": {**fields, "kind": "meta", "source_id": self.source_id,
                                        "updated_at": utcnow()}}, upsert=True)

    # -- the legacy file this source mirrors (see syncd.checkpoint.sources) ----------------

    def source_file(self) -> dict[str, Any] | None:
        return self.state.find_one({"_id": self.key("source")})

    def record_source_file(self, fields: dict[str, Any], replace: bool = False) -> bool:
        """Record the mirrored file; False if one was recorded first (and not `replace`)."""
        doc = {**fields, "kind": "source", "source_id": self.source_id,
               "recorded_at": utcnow()}
        if replace:
            self.state.replace_one({"_id": self.key("source")}, doc, upsert=True)
            return True
        try:
            self.state.insert_one({"_id": self.key("source"), **doc})
        except DuplicateKeyError:
            return False
        return True

    def sources(self) -> list[dict[str, Any]]:
        """Every source recorded in this database (for the fleet view)."""
        return list(self.state.find({"kind": "source"}).sort("source_id", 1))

    def other_sources(self) -> set[str]:
        """The other sources registered in this database (any may write its collections
        at any moment)."""
        return {doc["source_id"] for doc in self.state.find(
            {"kind": {"$in": ["source", "meta"]}, "source_id": {"$ne": self.source_id}},
            {"source_id": 1})}

    # -- changelog ---------------------------------------------------------------

    def applied(self) -> list[dict[str, Any]]:
        """This source's changelog, in version order (`version` is each entry's version)."""
        return list(self.changelog.find({"source_id": self.source_id}).sort("version", 1))

    def record_applied(self, entries: list[dict[str, Any]], version: int) -> None:
        """Make this source's changelog say exactly versions 1..version are applied.

        `entries` carry the version in `_id` (as migrations list them); stored, `_id`
        is `"<version>:<source id>"` and the version is in `version`.
        """
        self.changelog.delete_many({"source_id": self.source_id, "version": {"$gt": version}})
        for entry in entries:
            number = int(entry.get("version", entry["_id"]))
            stored = {**entry, "_id": f"{number}:{self.source_id}", "version": number,
                      "source_id": self.source_id}
            self.changelog.update_one({"_id": stored["_id"]}, {"$setOnInsert": stored},
                                      upsert=True)

    # -- job checkpoint ----------------------------------------------------------

    def job(self) -> dict[str, Any] | None:
        return self.state.find_one({"_id": self.key("job")})

    def save_job(self, job: dict[str, Any]) -> None:
        job = {**job, "_id": self.key("job"), "source_id": self.source_id}
        self.state.replace_one({"_id": self.key("job")}, job, upsert=True)

    def update_job(self, fields: dict[str, Any], unset: tuple[str, ...] = ()) -> None:
        update: dict[str, Any] = {"$set": fields}
        if unset:
            update["$unset"] = {k: "" for k in unset}
        self.state.update_one({"_id": self.key("job")}, update)

    def clear_job(self) -> None:
        self.state.delete_one({"_id": self.key("job")})

    # -- runs and quarantine -----------------------------------------------------

    def record_run(self, summary: dict[str, Any]) -> None:
        self.runs.insert_one({"at": utcnow(), **summary, "source_id": self.source_id})

    def last_run(self, *kinds: str) -> dict[str, Any] | None:
        """This source's latest run of one of `kinds` (any run when none is named)."""
        query: dict[str, Any] = {"source_id": self.source_id}
        if kinds:
            query["kind"] = {"$in": list(kinds)}
        return self.runs.find_one(query, sort=[("at", DESCENDING), ("_id", DESCENDING)])

    def quarantine_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.quarantine.replace_one(
                {"_id": row["_id"]}, {**row, "source_id": self.source_id, "at": utcnow()},
                upsert=True)

    def release_quarantine(self, table: str, ids: list[Any]) -> None:
        """Rows of `table` that now projected and wrote fine leave the quarantine."""
        if ids:
            for start in range(0, len(ids), 100):
                batch = ids[start:start + 100]
                self.quarantine.delete_many({"source_id": self.source_id, "table": table,
                                             "_id": {"$in": batch}})

    def clear_quarantine(self, tables: list[str]) -> None:
        """A rebuild of `tables` starts over: their rows in quarantine are tried again."""
        self.quarantine.delete_many({"source_id": self.source_id, "table": {"$in": tables}})

    def quarantined_ids(self, table: str) -> set[Any]:
        """The `_id`s of `table`'s rows in quarantine."""
        return {q["_id"] for q in self.quarantine.find(
            {"source_id": self.source_id, "table": table}, {"_id": 1})}

    def quarantined_tables(self) -> dict[str, int]:
        """Each table with rows in quarantine -> how many."""
        return {str(group["_id"]): int(group["n"]) for group in self.quarantine.aggregate(
            [{"$match": {"source_id": self.source_id}},
             {"$group": {"_id": "$table", "n": {"$sum": 1}}}])}

    def quarantine_samples(self, limit: int = 5) -> list[dict[str, Any]]:
        """The latest rows put in quarantine (table, key, error, at)."""
        return [{"table": q.get("table"), "key": q.get("key"), "error": q.get("error"),
                 "at": q.get("at")}
                for q in self.quarantine.find({"source_id": self.source_id})
                .sort("at", -1).limit(limit)]

    def quarantine_count(self) -> int:
        return self.quarantine.count_documents({"source_id": self.source_id})

    # -- forgetting this source (`syncd source remove`, syncd.engine.removal) ------

    def forget_kinds(self, kinds: Sequence[str], dry_run: bool) -> dict[str, int]:
        """This source's state documents of `kinds` counted (`dry_run`) or deleted, by
        their `_id` (`<kind>:<source id>`: never another source's). Each owner module
        names its own kinds; what was there, by `"_syncd_state <kind>"`."""
        found: dict[str, int] = {}
        for kind in kinds:
            query = {"_id": self.key(kind)}
            n = (self.state.count_documents(query) if dry_run
                 else self.state.delete_many(query).deleted_count)
            if n:
                found[f"{STATE} {kind}"] = n
        return found

    def forget(self, dry_run: bool) -> dict[str, int]:
        """This store's own part of the source: its changelog, runs and quarantine,
        then the `job`, `meta` and `source` documents (`source` last: a removal cut
        off part way still finds the source and is run again)."""
        found: dict[str, int] = {}
        for collection in (self.changelog, self.runs, self.quarantine):
            query = {"source_id": self.source_id}
            n = (collection.count_documents(query) if dry_run
                 else collection.delete_many(query).deleted_count)
            if n:
                found[collection.name] = n
        return {**found, **self.forget_kinds(("job", "meta", "source"), dry_run)}

    def state_left(self) -> int:
        """This source's state documents still in `_syncd_state` (0 once removed)."""
        return self.state.count_documents({"source_id": self.source_id})


def state_sources(db: Database) -> set[str]:
    """Every source id that has a state document in `db` (any kind)."""
    return {s for s in db[STATE].distinct("source_id") if isinstance(s, str)}
