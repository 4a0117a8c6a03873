"""Documents as they were at a moment, rebuilt from the history of legacy rows.

History (syncd.sinks.history) keeps legacy ROWS, one version per statement; the
Tracker reads DOCUMENTS of the migration model. So "the experiments as of T" are
the rows' last versions at T, projected exactly as the daemon projects rows today:
with the model of the source's current migration version and its recorded
parameters (time zone), through the same `Projector`. A document of T is then the
document the mirror would hold now had the legacy tables not changed since T
(tests/test_experiments_asof.py compares it with a mirror of a copy taken at T).

The tables' shape comes from their SQL as recorded at T (`_syncd_schemas`), else the
first recorded after T, else it is read off the versions themselves (their columns;
a key column is the one holding the key's value). Documents come back as the
server would return them (a BSON round trip: dates to the millisecond, naive UTC).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
from pymongo.database import Database

from legacy_adapters.base import Column, Schema, TableInfo
from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.values import RawText
from syncd.checkpoint.store import StateStore
from syncd.engine.migration_files import MigrationFile, build_model, load_migrations
from syncd.errors import SyncdError
from syncd.projection.model import Model
from syncd.projection.project import Params, Projector
from syncd.sinks.history import (
    HISTORY,
    SCHEMAS,
    counts,
    decode_row,
    order,
)
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import from_julian_day

CODEC = bson.CodecOptions(tz_aware=False)


def history_sources(db: Database, source: str | None = None) -> list[str]:
    """The sources whose history this database holds (or just `source`, if it has one).
    Read from the small `_syncd_schemas` (every first sync records the tables' SQL);
    from the versions themselves only where no SQL is recorded."""
    found = set(db[SCHEMAS].distinct("source")) or set(db[HISTORY].distinct("source"))
    return sorted(str(s) for s in found if source is None or s == source)


def history_start(db: Database, sources: Iterable[str]) -> dict[str, float]:
    """Each source's first recorded moment (julian day): its history starts there."""
    wanted = list(sources)
    out = {str(g["_id"]): float(g["first"]) for g in db[SCHEMAS].aggregate([
        {"$match": {"source": {"$in": wanted}}},
        {"$group": {"_id": "$source", "first": {"$min": "$jd"}}}])}
    for source in wanted:
        if source not in out:
            first = HistoryReader(db, source).first_jd()
            if first is not None:
                out[source] = first
    return out


@dataclass
class SourceModel:
    """One source's projection: its model, parameters and history reader."""

    source: str
    params: Params
    reader: HistoryReader

    @property
    def version(self) -> int:
        return self.params.version


def source_model(db: Database, source: str,
                 migrations: Sequence[MigrationFile] | None) -> tuple[SourceModel, Model]:
    """The model and parameters the daemon projects `source`'s rows with today."""
    store = StateStore(db, source)
    meta = store.meta() or {}
    if "version" not in meta or "params" not in meta:
        raise SyncdError(f"source {source!r} has history but no migrated model in database "
                         f"{db.name!r} (run syncd migrate)")
    version = int(meta["version"])
    files = list(migrations) if migrations is not None else _bundled()
    by_version = {m.version: m for m in files}
    for entry in store.applied():
        number = int(entry.get("version", 0))
        if number <= version and (number not in by_version
                                  or by_version[number].checksum != entry.get("checksum")):
            raise SyncdError(
                f"source {source!r} was migrated with a migration {number:04d} "
                f"({entry.get('file')}) other than these files: pass the folder it was "
                "migrated with (--migrations)")
    params = Params(**{k: meta["params"][k] for k in ("source_id", "timezone")},
                    version=version)
    return SourceModel(source, params, HistoryReader(db, source)), build_model(files, version)


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[MigrationFile, ...]:
    return tuple(load_migrations())


# -- the tables' shape ---------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def table_from_sql(name: str, sql: str) -> TableInfo | None:
    """A table's columns, key and rowid as SQLite reflects its CREATE statement (the
    legacy source's own reflection, on a scratch file)."""
    with tempfile.TemporaryDirectory(prefix="syncd-asof-") as folder:
        path = Path(folder) / "shape.db"
        conn = sqlite3.connect(path)
        try:
            conn.execute(sql)
            conn.commit()
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        source = SQLiteSource(path)
        try:
            return source.schema().tables.get(name)
        finally:
            source.close()


def table_from_versions(name: str, versions: Sequence[Mapping[str, Any]]) -> TableInfo:
    """A table's shape read off some of its versions: their columns in order; as key,
    the columns that hold the key's values in every one (none: the rowid is the key)."""
    columns = list(dict.fromkeys(c for v in versions for c in v.get("cols") or ()))
    rows = [(dict(zip(v["cols"], v["vals"])), list(v.get("key") or ()))
            for v in versions if v.get("cols") is not None]
    key_cols: list[str] = []
    for i in range(len(rows[0][1]) if rows else 0):
        col = next((c for c in columns if c not in key_cols and all(
            c in row and type(row[c]) is type(key[i]) and row[c] == key[i]
            for row, key in rows)), None)
        if col is None:
            key_cols = []
            break
        key_cols.append(col)
    return TableInfo(name, tuple(Column(c, "") for c in columns), tuple(key_cols))


def schema_as_of(model: SourceModel, jd: float, tables: Iterable[str] | None = None) -> Schema:
    """The tables of the source's history (or just `tables`), shaped as they were at `jd`
    (see the module)."""
    schemas = model.reader.schemas
    schema = Schema()
    for table in model.reader.tables() if tables is None else tables:
        base = {"source": model.source, "table": table, "sql": {"$ne": None}}
        found = schemas.find_one({**base, "jd": {"$lte": jd}}, sort=[("jd", -1), ("seq", -1)])
        found = found or schemas.find_one(base, sort=[("jd", 1), ("seq", 1)])
        info = table_from_sql(table, found["sql"]) if found else None
        if info is None:
            sample = list(model.reader.history.find(
                {"source": model.source, "table": table, "cols": {"$ne": None}},
                {"cols": 1, "vals": 1, "key": 1, "rowid": 1}).limit(20))
            if not sample:
                continue
            info = table_from_versions(table, sample)
        schema.tables[table] = info
    return schema


def tables_for(projection: Model, collection: str) -> list[str] | None:
    """The tables that can map to `collection` (None: any table might, generically)."""
    explicit = [t for t, m in projection.tables.items() if m.collection == collection]
    return explicit if explicit or not projection.all_tables else None


def latest(model: SourceModel, table: str, jd: float) -> Iterator[dict[str, Any]]:
    """`HistoryReader.latest` (each row's last version at `jd`), read in one unsorted
    pass of the as-of index and ordered here: the server's sort by row costs several
    times the pass itself."""
    since, _ = model.reader.baseline_as_of(table, jd)  # as restore reads them
    last = last_versions(model.reader.history.find(
        {"source": model.source, "table": table, "jd": {"$gte": since, "$lte": jd}},
        {"_id": 0, "doc": 1, "op": 1, "base": 1, "jd": 1, "seq": 1, "n": 1, "cols": 1,
         "vals": 1, "rowid": 1}, batch_size=10000), since)
    for doc in sorted(last, key=str):
        yield last[doc]


def last_versions(versions: Iterable[dict[str, Any]], since: float
                  ) -> dict[Any, dict[str, Any]]:
    """Each row's (document's) last version among `versions`, in any order, counting
    only those of the baseline begun at `since` (`counts`), by the history's `order`."""
    last: dict[Any, dict[str, Any]] = {}
    for v in versions:
        if not counts(v, since):
            continue
        kept = last.get(v["doc"])
        if kept is None or order(v) > order(kept):
            last[v["doc"]] = v
    return last


# -- documents -----------------------------------------------------------------------------


def _row_tuple(info: TableInfo, row: Mapping[str, Any], rowid: Any) -> tuple[Any, ...]:
    values = tuple(row.get(c) for c in info.column_names)
    return (rowid, *values) if info.rowid else values


def project_versions(projector: Projector, info: TableInfo,
                     versions: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The documents of row versions (deletes skipped), each with its history `_id`,
    as the server would return them."""
    batch: list[tuple[Any, tuple[Any, ...]]] = []
    for v in versions:
        row = decode_row(v)
        if row is not None:
            batch.append((v["doc"], _row_tuple(info, row, v.get("rowid"))))
        if len(batch) >= 2000:
            yield from _project(projector, batch)
            batch = []
    yield from _project(projector, batch)


def _project(projector: Projector, batch: list[tuple[Any, tuple[Any, ...]]]
             ) -> Iterator[dict[str, Any]]:
    if not batch:
        return
    careful = any(x.__class__ is RawText for _, row in batch for x in row)
    rows = [row for _, row in batch]
    projected = projector.project(rows, careful)
    if projected.quarantined:  # a row its builder refuses: no document then either
        pairs = [(oid, projector.project([row], careful).docs) for oid, row in batch]
        docs = [(oid, found[0]) for oid, found in pairs if found]
    else:
        docs = list(zip((oid for oid, _ in batch), projected.docs))
    for oid, doc in docs:
        doc["_id"] = oid
        yield bson.decode(bson.encode(doc), CODEC)


def collection_as_of(db: Database, collection: str, jd: float, sources: Sequence[str],
                     migrations: Sequence[MigrationFile] | None = None
                     ) -> list[dict[str, Any]]:
    """The documents `collection` held at `jd` (julian day), rebuilt from the history
    of every source in `sources`, in `_id` order per table."""
    return _projected(db, collection, jd, sources, migrations,
                      lambda model, table: latest(model, table, jd))


def _projected(db: Database, collection: str, jd: float, sources: Sequence[str],
               migrations: Sequence[MigrationFile] | None,
               rows: Callable[[SourceModel, str], Iterator[dict[str, Any]]]
               ) -> list[dict[str, Any]]:
    """`collection`'s documents projected from the versions `rows(model, table)` gives
    for each table that feeds it, through each source's model of `jd`."""
    docs: list[dict[str, Any]] = []
    for source in sources:
        model, projection = source_model(db, source, migrations)
        schema = schema_as_of(model, jd, tables_for(projection, collection))
        for info, mapping in projection.resolve(schema, db.name):
            if mapping.collection != collection:
                continue
            projector = Projector(info, mapping, model.params)
            docs.extend(project_versions(projector, info, rows(model, info.name)))
    return docs


# -- one run's rows -------------------------------------------------------------------------


def run_key(db: Database, run: Any, sources: Sequence[str],
            migrations: Sequence[MigrationFile] | None, collection: str = "experiments"
            ) -> list[Any] | None:
    """The key values (as stored: `to_bson`) of the row whose document `_id` is `run` in
    `collection` (None: no source's history holds it). One indexed read per table (the
    server plans `table: {$in: ...}` as a scan)."""
    for source in sources:
        model, projection = source_model(db, source, migrations)
        for table in tables_for(projection, collection) or model.reader.tables():
            found = model.reader.history.find_one(
                {"source": source, "table": table, "doc": run}, {"key": 1})
            if found is not None:
                return list(found["key"])
    return None


def run_rows_as_of(db: Database, collection: str, jd: float, sources: Sequence[str],
                   key: Sequence[Any], migrations: Sequence[MigrationFile] | None = None
                   ) -> list[dict[str, Any]]:
    """The documents of `collection` at `jd` that can belong to the run whose row's key
    is `key`: those of the rows whose state then holds every value of that key in some
    column, which is how a row names its run (the models' `ctx.ref("training_runs",
    row["run_id"])`). A superset: the caller's own filter (`experiment_id`) picks the
    run's rows from it, so the answer is the one the whole collection gives, and only
    these rows are decoded and projected (the projection is most of a rebuild's cost).
    A builder that computes the referenced key from other values (not a column as it
    is) would have its rows left out: README, "Experiments as of a moment"."""
    if not key:
        return []
    return _projected(db, collection, jd, sources, migrations,
                      lambda model, table: latest_holding(model, table, jd, key))


def latest_holding(model: SourceModel, table: str, jd: float,
                   key: Sequence[Any]) -> Iterator[dict[str, Any]]:
    """`latest`, narrowed to the rows whose last version at `jd` holds every value of
    `key`: one pass over the as-of index with the values alone, decoded in C (no
    column names), then those versions read whole by `_id`. (The values are matched
    here: a server-side match on `vals` is a scan no index serves.)"""
    since, _ = model.reader.baseline_as_of(table, jd)
    last = last_versions(itertools.chain.from_iterable(model.reader.version_batches(
        table, since, jd, with_cols=False, fields=("_id", "jd", "seq", "n"))), since)
    wanted = [v["_id"] for v in last.values()
              if v["op"] != "delete" and v.get("vals") is not None
              and all(part in v["vals"] for part in key)]
    found: list[dict[str, Any]] = []
    for start in range(0, len(wanted), 1000):
        found += model.reader.history.find({"_id": {"$in": wanted[start:start + 1000]}})
    yield from sorted(found, key=lambda v: str(v["doc"]))


def when(jd: float) -> dt.datetime:
    """A julian day as an aware UTC datetime (to the second, for messages)."""
    return from_julian_day(jd).replace(microsecond=0)

