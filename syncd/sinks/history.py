"""Every version of every row: the `_syncd_history` and `_syncd_schemas` collections.

SQLite keeps only a row's last state; the mirror keeps every state it has seen, so
`syncd restore --as-of` and `Tracker(as_of=...)` can answer "what was there at T".
This module is the only writer of both collections and defines their format:

`_syncd_history`, one document per version of one row of one source:

- `source`, `table`: the legacy source id and table name;
- `doc`: the `_id` of the row's current document (`derive_id`), so "this row over
  time" is one index range; `key`: the row's key values (primary key, else rowid);
  `rowid`: the rowid (None for WITHOUT ROWID tables);
- `op`: `snapshot` (the row as the first sync found it: history starts there),
  `insert`, `update`, `delete` (an `INSERT OR REPLACE` is a `delete` then an `insert`);
- `jd`: the julian day the legacy statement ran (the source's clock, as the change
  log recorded it; the snapshot's read time for `snapshot`), `at` the same as a BSON
  date (millisecond precision, for people and queries by date); `seq`, `n`: the
  change log's seq and the version's place within that log entry, so versions of
  the same millisecond keep the order the writer committed them in;
- `cols`, `vals`: every column's name and value, in the table's column order (values
  by `to_bson`: the SQLite storage class survives, TEXT byte-exact; names as they
  are, whatever characters they hold); both None for a `delete`. `decode_row()`
  gives the row back as sqlite3 would read it;
- `dropped` (only when some are): the names of columns whose values were too large
  for one MongoDB document (16 MiB); their `vals` are None. The version is kept;
- `found` (only when true): no change log gave this version, a reconcile or a scan
  found it, and `jd` is when syncd read the row; the statement ran earlier, at a
  moment nothing recorded.

The order of versions is (`jd`, `seq`, `n`). `_syncd_schemas` holds the tables' SQL
over time: `source`, `table`, `jd`, `at`, `seq`, `sql` (the `CREATE TABLE` as SQLite
stores it; None once the table is dropped), `indexes` (their `CREATE INDEX`
statements) and `sequence` (the table's `sqlite_sequence` counter then, or None);
also `kind` ("table", or "view": a view's `CREATE VIEW` under its name), `triggers`
(the legacy `CREATE TRIGGER` statements on it; never syncd's capture triggers),
`baseline`, `rows` (the rows the baseline recorded), `columns` (the `cols` every
snapshot of that baseline holds: a restore reads them once, not per row) and
`rows_kept` (below). Absent fields read as "table", [], None, None, None, true.

`_syncd_history_kept`, one document per source that `[history] keep` has pruned:
`_id` and `source` the source id, `before` the latest cutoff (a julian day on a whole
second; versions older than it that a later one, also older, replaced are gone),
`at` the same as a date. It is written before the versions are removed, so a reader
that checks it again after its reads (as every as-of reader does) sees the cutoff of
any prune that changed what it read: the state as of a moment before it is no longer
exact, and every as-of reader refuses it (`HistoryReader.check_kept`).

The baseline: history starts at the first sync, which records every row as a
`snapshot` (read in chunks, each stamped with the moment before its read) and then,
AFTER the rows, the table's schema with `baseline` = the jd the pass began: that
document is the mark that the baseline is complete. The table's rows as of T are
then the snapshots of that pass and the versions after its start (earlier ones, of
an abandoned pass, are superseded); a table whose schema records name no baseline
(created while syncd followed it) has all its versions. A pass resumed after a
crash keeps its start, and a snapshot's `_id` is derived from the pass's start, not
its chunk's stamp, so a chunk read again is stored once; the chunk a crash left
unfinished has its snapshots dropped and recorded again (`drop_snapshots`: a row
deleted or changed meanwhile keeps no snapshot of before). `rows_kept` false: the
table is left out of history (`[history] exclude`), its SQL kept, its rows not;
`left_out` says why, when history stopped keeping rows it had kept ("history exclude",
or "not mirrored": the model left the table out, `record_left_out`).

Document ids are derived from the version's identity, so recording the same
version twice (a daemon restarted before its checkpoint) stores it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.binary import Binary
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from legacy_adapters.base import Definition
from legacy_adapters.values import RawText
from syncd.projection.ids import encode_value
from syncd.projection.values import TEXT_SUBTYPE, to_bson
from syncd.retry import raise_if_passing
from syncd.sinks.julian import from_julian_day, julian_day, julian_day_now

HISTORY = "_syncd_history"
SCHEMAS = "_syncd_schemas"
KEPT = "_syncd_history_kept"
OPS = ("snapshot", "insert", "update", "delete")
DUPLICATE_KEY = 11000
# The `[history]` settings (syncd.api resolves them into `HistoryOptions`): how long
# versions are kept ("forever", or a duration such as "90d", "12h", "3600s"), and
# tables left out of history (their triggers log keys only: format 2).
HISTORY_DEFAULTS: dict[str, Any] = {"keep": "forever", "exclude": []}


@dataclass(frozen=True)
class HistoryOptions:
    """The resolved `[history]` settings: `keep_seconds` None keeps every version."""

    keep_seconds: float | None = None
    exclude: frozenset[str] = frozenset()

    def wanted(self, table: str) -> bool:
        return table not in self.exclude


def decode_value(value: Any) -> Any:
    """A stored value as sqlite3 reads it (TEXT that is not UTF-8 as `RawText`)."""
    if isinstance(value, Binary) and value.subtype == TEXT_SUBTYPE:
        return RawText(bytes(value))
    if isinstance(value, Binary):
        return bytes(value)
    return value


def decode_row(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row a version holds (None for a `delete`), storage classes as stored."""
    if doc.get("cols") is None:
        return None
    return {name: decode_value(v) for name, v in zip(doc["cols"], doc["vals"], strict=True)}


def version_id(source: str, table: str, doc: Any, jd: float, seq: int, n: int,
               op: str) -> ObjectId:
    """The deterministic `_id` of one version (recording it again changes nothing)."""
    h = hashlib.blake2b(digest_size=12)
    for part in (source.encode(), table.encode(), str(doc).encode(), jd.hex().encode(),
                 encode_value(seq), encode_value(n), op.encode()):
        h.update(str(len(part)).encode() + b":" + part)
    return ObjectId(h.digest())


def version(source: str, table: str, doc: Any, key: Sequence[Any], rowid: int | None,
            op: str, jd: float, seq: int, n: int,
            row: Mapping[str, Any] | None, found: bool = False) -> dict[str, Any]:
    """One `_syncd_history` document (see the module docstring)."""
    if op not in OPS:
        raise ValueError(f"unknown history op {op!r}")
    out = {"_id": version_id(source, table, doc, jd, seq, n, op), "source": source,
           "table": table, "doc": doc, "key": [to_bson(v) for v in key], "rowid": rowid,
           "op": op, "jd": jd, "at": from_julian_day(jd), "seq": seq, "n": n,
           "cols": None if row is None else list(row),
           "vals": None if row is None else [to_bson(v) for v in row.values()]}
    if found:
        out["found"] = True
    return out


class HistoryStore:
    """One source's history: recording versions and schema versions, and indexes."""

    def __init__(self, db: Database, source_id: str) -> None:
        self.db, self.source_id = db, source_id
        self.history, self.schemas = db[HISTORY], db[SCHEMAS]

    def ensure_indexes(self) -> None:
        """"This row over time" and "everything as of T", per source."""
        self.history.create_index([("source", 1), ("table", 1), ("doc", 1), ("jd", 1),
                                   ("seq", 1), ("n", 1)], name="row_over_time")
        self.history.create_index([("source", 1), ("table", 1), ("jd", 1)], name="as_of")
        self.schemas.create_index([("source", 1), ("table", 1), ("jd", 1)], name="as_of")

    def record(self, versions: Iterable[dict[str, Any]]) -> int:
        """Store versions (built by `version()`); ones already stored are skipped.
        Returns how many were new."""
        return _insert_new(self.history, list(versions))

    def record_schema(self, table: str, jd: float, seq: int, sql: str | None,
                      indexes: Sequence[str] = (), sequence: int | None = None, *,
                      triggers: Sequence[str] = (), kind: str = "table",
                      baseline: float | None = None, rows_kept: bool = True,
                      rows: int | None = None, columns: Sequence[str] | None = None,
                      left_out: str | None = None) -> int:
        """Store one version of a table's (or view's) SQL (None: it was dropped)."""
        doc = {"_id": version_id(self.source_id, table, "schema", jd, seq, 0, "snapshot"),
               "source": self.source_id, "table": table, "jd": jd,
               "at": from_julian_day(jd), "seq": seq, "sql": sql,
               "indexes": list(indexes), "sequence": sequence, "kind": kind,
               "triggers": list(triggers), "baseline": baseline, "rows_kept": rows_kept,
               "rows": rows, "columns": None if columns is None else list(columns)}
        if left_out is not None:
            doc["left_out"] = left_out
        return _insert_new(self.schemas, [doc])

    def record_changed(self, definitions: Mapping[str, Definition],
                       tables: Iterable[str] = (), *, seq: int = 0,
                       exclude: Collection[str] = (), jd: float | None = None,
                       counters: Collection[str] = ()) -> int:
        """Record the SQL of `tables` and of every view (now in `definitions`, or ever
        recorded), with indexes, legacy triggers and AUTOINCREMENT counter, for each
        whose last record differs from `definitions` (a name gone from it, whoever
        names it: its drop):
        what a restore as of a later moment rebuilds. One rule for every caller (a
        migrate's end, the daemon's start and its schema changes), so their records
        cannot drift apart. `exclude`: tables whose rows history leaves out (their
        SQL is kept, `rows_kept` false). `jd`: the moment taken before `definitions`
        were read (default now), the record's time: a restore moves its AUTOINCREMENT
        counter on only by the rows inserted from then on. `counters`: tables recorded
        even if unchanged, because their counter read now is the one a restore must
        start from (a script wrote `sqlite_sequence`, or syncd could not follow it).
        Returns how many were recorded."""
        ever_views = set(self.schemas.distinct("table", {"source": self.source_id,
                                                         "kind": "view"}))
        views = {n for n, d in definitions.items() if d.kind == "view"} | ever_views
        # Every name recorded once and gone now (a table dropped or renamed while syncd
        # was stopped is named by no caller): its drop, or a restore keeps it.
        gone = {n for n in self.schemas.distinct("table", {"source": self.source_id})
                if n not in definitions}
        jd = julian_day_now() if jd is None else jd
        recorded = 0
        for name in sorted({*tables, *views, *gone}):
            now = definitions.get(name)
            last = self.schemas.find_one({"source": self.source_id, "table": name},
                                         sort=[("jd", -1), ("seq", -1)])
            if now is None:
                if last is not None and last["sql"] is not None:
                    recorded += self.record_schema(name, jd, seq, None,
                                                   kind=last.get("kind", "table"))
                continue
            shape = (now.sql, list(now.indexes), now.sequence, list(now.triggers))
            if name not in counters and last is not None and (
                    last["sql"], last.get("indexes", []), last.get("sequence"),
                    last.get("triggers", [])) == shape:
                continue
            recorded += self.record_schema(name, jd, seq, now.sql, list(now.indexes),
                                           now.sequence, triggers=list(now.triggers),
                                           kind=now.kind, rows_kept=name not in exclude)
        return recorded

    def record_left_out(self, definitions: Mapping[str, Definition], mirrored: Collection[str],
                        exclude: Collection[str] = ()) -> int:
        """Mark the tables whose rows history kept until now but keeps no more: put in
        `[history] exclude`, or no longer mirrored (a migration's `exclude_table`). Each
        gets a baseline mark with `rows_kept` false, so a restore of a later moment
        creates it empty and names it, instead of giving back the rows it had when
        history stopped following it (a moment before stays exact), and a table taken
        back gets a new baseline. Tables history never kept are left alone. Returns how
        many were marked."""
        jd = julian_day_now()
        marked = 0
        for name, now in sorted(definitions.items()):
            if now.kind != "table" or (name in mirrored and name not in exclude):
                continue
            last = self.schemas.find_one({"source": self.source_id, "table": name},
                                         sort=[("jd", -1), ("seq", -1)])
            if last is None or last["sql"] is None or not last.get("rows_kept", True):
                continue
            marked += self.record_schema(name, jd, 0, now.sql, list(now.indexes),
                                         now.sequence, triggers=list(now.triggers),
                                         baseline=jd, rows_kept=False,
                                         left_out="history exclude" if name in exclude
                                         else "not mirrored")
        return marked

    def prune(self, before_jd: float, batch: int = 1000) -> int:
        """Remove versions older than `before_jd` that a later one, also older, replaced:
        each row keeps its last version before the cutoff (none if that was a delete),
        so everything as of the cutoff and after stays answerable. The cutoff (moved
        back to a whole second: a moment people can type) is recorded first, in
        `_syncd_history_kept`, so that no reader answers a moment before it as if
        exact. Returns how many versions were removed."""
        before_jd = julian_day(from_julian_day(before_jd).replace(microsecond=0))
        self.db[KEPT].update_one({"_id": self.source_id},
                                 {"$max": {"before": before_jd,
                                           "at": from_julian_day(before_jd)},
                                  "$set": {"source": self.source_id}}, upsert=True)
        removed = 0
        for table in self.history.distinct("table", {"source": self.source_id}):
            doomed: list[Any] = []
            last: dict[str, Any] | None = None
            query = {"source": self.source_id, "table": table, "jd": {"$lt": before_jd}}
            for doc in self.history.find(query, {"doc": 1, "op": 1}, sort=[
                    ("doc", 1), ("jd", 1), ("seq", 1), ("n", 1)], batch_size=5000):
                if last is not None and (doc["doc"] == last["doc"] or last["op"] == "delete"):
                    doomed.append(last["_id"])
                last = doc
                if len(doomed) >= batch:
                    removed += self.history.delete_many({"_id": {"$in": doomed}}).deleted_count
                    doomed = []
            if last is not None and last["op"] == "delete":
                doomed.append(last["_id"])
            if doomed:
                removed += self.history.delete_many({"_id": {"$in": doomed}}).deleted_count
        return removed

    def forget(self, dry_run: bool) -> dict[str, int]:
        """This source's versions, schemas and kept cutoff, counted (`dry_run`) or
        deleted (`syncd source remove --drop-history`: restore then has nothing)."""
        found: dict[str, int] = {}
        for collection in (self.history, self.schemas, self.db[KEPT]):
            query = {"source": self.source_id}
            n = (collection.count_documents(query) if dry_run
                 else collection.delete_many(query).deleted_count)
            if n:
                found[collection.name] = n
        return found

    def last_versions(self, table: str, docs: list[Any]) -> dict[Any, dict[str, Any]]:
        """The last recorded version of each of `docs` (rows of `table`) that has one."""
        last: dict[Any, dict[str, Any]] = {}
        for at in range(0, len(docs), 500):
            for v in self.history.find({"source": self.source_id, "table": table,
                                        "doc": {"$in": docs[at:at + 500]}},
                                       {"doc": 1, "key": 1, "rowid": 1, "op": 1, "jd": 1,
                                        "seq": 1, "n": 1}):
                if v["doc"] not in last or order(v) > order(last[v["doc"]]):
                    last[v["doc"]] = v
        return last

    def last_baseline(self, table: str) -> dict[str, Any] | None:
        """`table`'s last completed baseline record (its `columns`, `rows_kept`), or None
        (schema records the daemon writes when a table changes name no baseline)."""
        return self.schemas.find_one({"source": self.source_id, "table": table,
                                      "baseline": {"$ne": None}},
                                     {"columns": 1, "rows_kept": 1},
                                     sort=[("jd", -1), ("seq", -1)])

    def record_snapshots(self, table: str, start: float, jd: float,
                         docs: Sequence[Any], keys: Sequence[Sequence[Any]],
                         rowids: Sequence[int | None], cols: Sequence[str],
                         rows: Iterable[Sequence[Any]], raw: bool) -> int:
        """One chunk of a baseline pass begun at `start`, read at `jd`: a `snapshot` per
        row (the same documents `version()` makes, built per chunk, not per row).
        `raw`: some value is `RawText` (only then is each value converted)."""
        make_id = _snapshot_ids(self.source_id, table, start)
        at, names, source = from_julian_day(jd), list(cols), self.source_id
        out = []
        for doc, key, rowid, row in zip(docs, keys, rowids, rows, strict=True):
            out.append({"_id": make_id(doc), "source": source, "table": table, "doc": doc,
                        "key": [to_bson(v) for v in key], "rowid": rowid,
                        "op": "snapshot", "jd": jd, "at": at, "seq": 0, "n": 0,
                        "base": start,
                        "cols": names,
                        "vals": [to_bson(v) for v in row] if raw else list(row)})
        return _insert_new(self.history, out)

    def drop_snapshots(self, table: str, start: float, docs: Sequence[Any]) -> None:
        """Remove the snapshots of these rows that the baseline pass begun at `start`
        recorded: a pass resumed after a crash reads them again (a row deleted or changed
        meanwhile must not keep the snapshot of before)."""
        make_id = _snapshot_ids(self.source_id, table, start)
        for a in range(0, len(docs), 1000):
            self.history.delete_many({"_id": {"$in": [make_id(d) for d in docs[a:a + 1000]]}})


def _snapshot_ids(source: str, table: str, start: float) -> Any:
    """`doc -> version_id(source, table, doc, start, 0, 0, "snapshot")`, the fixed parts
    hashed once (the same digests: BLAKE2b of the same bytes)."""
    def part(data: bytes) -> bytes:
        return str(len(data)).encode() + b":" + data

    base = hashlib.blake2b(digest_size=12)
    base.update(part(source.encode()) + part(table.encode()))
    tail = (part(start.hex().encode()) + part(encode_value(0)) + part(encode_value(0))
            + part(b"snapshot"))

    def make(doc: Any) -> ObjectId:
        h = base.copy()
        h.update(part(str(doc).encode()) + tail)
        return ObjectId(h.digest())

    return make


def _insert_new(collection: Any, docs: list[dict[str, Any]]) -> int:
    if not docs:
        return 0
    try:
        return len(collection.insert_many(docs, ordered=False).inserted_ids)
    except BulkWriteError as exc:
        raise_if_passing(exc)  # a step-down or a write concern not met: not done
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return exc.details.get("nInserted", 0)


def counts(version_doc: Mapping[str, Any], since: float) -> bool:
    """Whether a version read from [`since`, ...] belongs to a row's history then: every
    change does, a snapshot only if it is of the baseline pass begun at `since` (a pass
    still running, or abandoned by a kill -9, has snapshots stamped later that no
    completed baseline vouches for)."""
    return version_doc["op"] != "snapshot" or version_doc.get("base", since) == since


def order(version_doc: Mapping[str, Any]) -> tuple[float, int, int]:
    """A version's place in its row's history: (`jd`, `seq`, `n`)."""
    return version_doc["jd"], version_doc["seq"], version_doc["n"]


def sources_with_history(db: Database) -> list[str]:
    """The sources whose history (at least one table's baseline) this database holds."""
    return sorted(db[SCHEMAS].distinct("source"))
