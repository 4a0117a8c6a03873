"""`VersionRecorder`: every version of every row the daemon follows, into `_syncd_history`.

In triggers mode the change log holds each committed INSERT and UPDATE with the
row's values and the time its statement ran (capture format 3,
legacy_adapters/sqlite_values.py), and each DELETE with the key: one log entry is
one version, stamped with that time (`jd`) and ordered by the log's seq (and `n`
within the entry). Versions are recorded in the same step the documents are
applied (the documents first, so that history costs commit -> visible nothing but
a read), before the feed's position moves: a step repeated after a crash records
the same versions again, and their derived ids store them once.

An `INSERT OR REPLACE` of an existing row fires only the INSERT trigger (SQLite runs
no DELETE trigger for the row it replaces unless `recursive_triggers` is on): an
insert of a row whose last version is not a delete is recorded as a delete then
the insert, at the same moment.

Entries logged with keys only (before the upgrade to format 3) give a version
with the row as syncd reads it now. In scan mode no log exists: a new row is
recorded as an insert when the scan sees it, stamped with that moment; updates and
deletes only reach the documents through the periodic reconcile and are not
versions (history keeps only the versions it sees; docs/following.md).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from legacy_adapters.base import Source, TableInfo
from legacy_adapters.changelog import Change
from legacy_adapters.feed import FeedItem, FeedRound
from syncd.daemon.counters import CounterWatch
from syncd.engine.apply import Applier
from syncd.projection.ids import id_maker
from syncd.projection.model import TableMap
from syncd.sinks.history import HistoryOptions, HistoryStore, version
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import julian_day, julian_day_now

log = logging.getLogger(__name__)
OPS = {"i": "insert", "u": "update", "d": "delete"}
# A version larger than this keeps its largest values out (`dropped`): a MongoDB
# document holds at most 16 MiB, and the version's other fields need some room.
MAX_VALUES_BYTES = 15 * 1024 * 1024


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes)) else 8


def fit(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The row with its largest values left out until it fits in one document, and the
    names of those left out."""
    total = sum(_size(v) for v in row.values())
    dropped: list[str] = []
    if total <= MAX_VALUES_BYTES:
        return row, dropped
    row = dict(row)
    for name in sorted(row, key=lambda c: _size(row[c]), reverse=True):
        if total <= MAX_VALUES_BYTES:
            break
        total -= _size(row[name])
        row[name] = None
        dropped.append(name)
    return row, dropped


class VersionRecorder:
    """Turns a round's log entries (or a scan's new rows) into versions of one source."""

    def __init__(self, db: Database, source_id: str, options: HistoryOptions) -> None:
        self.store = HistoryStore(db, source_id)
        self.source_id, self.options = source_id, options
        self.reader = HistoryReader(db, source_id)
        self._ids: dict[str, Any] = {}
        self._indexed = False
        self.counters = CounterWatch()

    def _ready(self) -> None:
        if not self._indexed:
            self.store.ensure_indexes()
            self._indexed = True

    def _doc(self, table: str, identity: Sequence[Any]) -> Any:
        make = self._ids.get(table)
        if make is None:
            make = self._ids[table] = id_maker(self.source_id, table)
        return make(identity)

    def _version(self, table: str, identity: tuple[Any, ...], rowid: int | None, op: str,
                 jd: float, seq: int, n: int, row: Mapping[str, Any] | None,
                 found: bool = False) -> dict[str, Any]:
        dropped: list[str] = []
        if row is not None:
            row, dropped = fit(dict(row))
        doc = version(self.source_id, table, self._doc(table, identity), identity, rowid, op,
                      jd, seq, n, row, found)
        if dropped:
            doc["dropped"] = dropped
            log.warning("%s: a version of row %r is larger than a MongoDB document; kept "
                        "without the values of %s", table, identity, ", ".join(dropped))
        return doc

    # -- triggers mode -------------------------------------------------------------------

    def record_round(self, round_: FeedRound, pairs: Mapping[str, tuple[TableInfo, TableMap]],
                     applier: Applier) -> int:
        """Record the versions of a round at once (`prepare`, then `store`)."""
        return self.store_versions(self.prepare(round_, pairs, applier))

    def store_versions(self, versions: list[dict[str, Any]]) -> int:
        """Store prepared versions (those stored before are skipped); how many were new."""
        if not versions:
            return 0
        self._ready()
        return self.store.record(versions)

    def prepare(self, round_: FeedRound, pairs: Mapping[str, tuple[TableInfo, TableMap]],
                applier: Applier) -> list[dict[str, Any]]:
        """The versions of a round, its documents not written yet: its log entries
        (oldest first), or the new rows a scan found. Reads only (whether an inserted
        row existed before: its document, one query), so that the round's documents
        are written, and visible, before its versions are stored."""
        if not round_.changes:
            return [v for item in round_.items if item.inserted is True
                    for v in self.row_versions(item.table, item.chunk.rows,
                                               self._identities(item, pairs, applier))]
        tables = {name: info for name, (info, _) in pairs.items()}
        wanted = [c for c in round_.changes
                  if c.table in tables and self.options.wanted(c.table)]
        if not wanted:
            return []
        current = self._current_rows(round_, pairs, applier)
        now = julian_day(datetime.now(UTC))
        by_table: dict[str, list[Change]] = {}
        for change in wanted:
            by_table.setdefault(change.table, []).append(change)
        versions: list[dict[str, Any]] = []
        for table, table_changes in by_table.items():
            versions += self._table_versions(tables[table], pairs[table][1].collection,
                                             table_changes, current, now)
        return versions

    def _table_versions(self, info: TableInfo, collection: str, changes: list[Change],
                        current: Mapping[tuple[str, tuple[Any, ...]], dict[str, Any]],
                        now: float) -> list[dict[str, Any]]:
        place: dict[int, int] = {}
        stamped = []  # (change, identity, jd, k: the change's place in its log entry)
        for change in changes:
            k = place[change.seq] = place.get(change.seq, -1) + 1
            stamped.append((change, Applier.identity(info, change.rowid, change.key),
                            change.at if change.at is not None else now, k))
        alive = self._alive_before(info.name, collection, [
            (identity, self._doc(info.name, identity), jd, c.seq, k)
            for c, identity, jd, k in stamped if c.op == "i"], stamped[0][2], stamped[0][0].seq)
        out: list[dict[str, Any]] = []
        for change, identity, jd, k in stamped:
            row: Mapping[str, Any] | None = None
            if change.op != "d":
                if change.values is not None and change.columns is not None:
                    row = dict(zip(change.columns, change.values, strict=True))
                else:  # logged with keys only: the row as it is now, if still there
                    row = current.get((info.name, identity))
                    if row is None:
                        continue
            if change.op == "i" and alive.get(identity):
                out.append(self._version(info.name, identity, change.rowid, "delete", jd,
                                         change.seq, 2 * k, None))  # INSERT OR REPLACE
            out.append(self._version(info.name, identity, change.rowid, OPS[change.op], jd,
                                     change.seq, 2 * k + 1, row))
            alive[identity] = change.op != "d"
        return out

    def _alive_before(self, table: str, collection: str,
                      inserts: list[tuple[tuple[Any, ...], Any, float, int, int]],
                      jd: float, seq: int) -> dict[tuple[Any, ...], bool]:
        """Whether each inserted row existed before the round (`jd`, `seq`): an INSERT OR
        REPLACE. A row without a document did not (one query: the common case). One
        with a document existed, unless this round was recorded and applied before (a
        step repeated after a crash: what was recorded stays); its last version before
        the round says whether it was deleted meanwhile. (A step cut between its
        documents and its versions, repeated, finds the document of a new row and no
        version: it records a delete before the insert, at the same moment, which
        changes no state as of any time.)"""
        if not inserts:
            return {}
        docs = {doc: identity for identity, doc, *_ in inserts}
        present = {d["_id"] for d in self.store.db[collection].find(
            {"_id": {"$in": list(docs)}}, {"_id": 1})}
        if not present:
            return {}
        mine = {(doc, v_jd, v_seq, 2 * k + 1) for _, doc, v_jd, v_seq, k in inserts}
        last: dict[Any, tuple[tuple[float, int, int], str]] = {}
        done: set[Any] = set()
        for v in self.store.history.find({"source": self.source_id, "table": table,
                                          "doc": {"$in": list(present)}},
                                         {"doc": 1, "op": 1, "jd": 1, "seq": 1, "n": 1}):
            if v["op"] == "insert" and (v["doc"], v["jd"], v["seq"], v["n"]) in mine:
                done.add(v["doc"])
            at = (v["jd"], v["seq"], v["n"])
            if at[:2] < (jd, seq) and (v["doc"] not in last or last[v["doc"]][0] < at):
                last[v["doc"]] = (at, v["op"])
        return {docs[d]: last.get(d, ((0.0, 0, 0), "snapshot"))[1] != "delete"
                for d in present if d not in done}

    @staticmethod
    def _identities(item: FeedItem, pairs: Mapping[str, tuple[TableInfo, TableMap]],
                    applier: Applier) -> list[tuple[Any, ...]]:
        projector = applier.projector(item.table, pairs[item.table.name][1])
        return [projector.key(row) for row in item.chunk.rows]

    def _current_rows(self, round_: FeedRound, pairs: Mapping[str, tuple[TableInfo, TableMap]],
                      applier: Applier) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
        """The rows the round read (their state now), by table and identity: what a
        keys-only entry's version holds."""
        out: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        for item in round_.items:
            info = item.table
            names, skip = info.column_names, 1 if info.rowid else 0
            for row, identity in zip(item.chunk.rows, self._identities(item, pairs, applier),
                                     strict=True):
                out[(info.name, identity)] = dict(zip(names, row[skip:], strict=True))
        return out

    # -- scan mode -----------------------------------------------------------------------

    def row_versions(self, info: TableInfo, rows: Iterable[Sequence[Any]],
                     identities: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """New rows a scan saw, as inserts stamped with this moment (`found`)."""
        if not self.options.wanted(info.name):
            return []
        jd = julian_day(datetime.now(UTC))
        names, skip = info.column_names, 1 if info.rowid else 0
        versions = [self._version(info.name, identity, row[0] if skip else None, "insert", jd,
                                  0, 1, dict(zip(names, row[skip:], strict=True)), True)
                    for row, identity in zip(rows, identities, strict=True)]
        return versions

    # -- schema versions -----------------------------------------------------------------

    def record_schemas(self, source: Source, tables: Iterable[str], seq: int = 0,
                       counters: Collection[str] | None = None) -> int:
        """Record the SQL of `tables` and of every view where it changed (a table left out
        of history too: its schema is restored, its rows are not): `record_changed`,
        the rule a migrate's end shares. `counters`: tables recorded even if unchanged
        (default: every AUTOINCREMENT table among `tables`, whose counter may have been
        written by a script while syncd was not looking: syncd.daemon.counters).
        Returns how many were recorded."""
        tables = list(tables)
        jd = julian_day_now()  # before the read: later inserts move the counter read on
        definitions = source.definitions()
        auto = {t: definitions[t].sequence for t in tables
                if t in definitions and definitions[t].autoincrement}
        recorded = self.store.record_changed(definitions, tables, seq=seq,
                                             exclude=self.options.exclude, jd=jd,
                                             counters=auto if counters is None else counters)
        self.counters.recorded(jd, auto, [t for t in tables if t not in auto])
        return recorded

    def check_counters(self, source: Source, now: Mapping[str, int],
                       first: FeedRound | None) -> int | None:
        """Record the counters a script wrote itself (`now` read beside `first`):
        `CounterWatch.unexplained`. Returns how many tables were recorded, None when
        nothing could be compared yet (more rounds to read: read them, then look again)."""
        tables = self.counters.unexplained(now, first)
        if tables is None:
            return None
        if tables:
            log.info("the AUTOINCREMENT counter moved without an insert (%s: a script "
                     "wrote sqlite_sequence, or an INSERT OR IGNORE / UPSERT inserted "
                     "nothing): recording the counters as they are now", ", ".join(tables))
            self.record_schemas(source, tables, counters=tables)
        return len(tables)

    def record_left_out(self, source: Source, mirrored: Iterable[str]) -> int:
        """Mark the tables history kept until now and keeps no more (put in `[history]
        exclude` while syncd was stopped, or not mirrored any more):
        `HistoryStore.record_left_out`, the rule a migrate's end shares."""
        return self.store.record_left_out(source.definitions(), set(mirrored),
                                          self.options.exclude)

    # -- retention -----------------------------------------------------------------------

    def prune(self) -> int:
        """Drop versions past `[history] keep` (each row keeps its state at the cutoff)."""
        keep = self.options.keep_seconds
        if keep is None:
            return 0
        cutoff = julian_day(datetime.now(UTC)) - keep / 86400.0
        removed = self.store.prune(cutoff)
        if removed:
            log.info("history: removed %d versions older than the kept %.0f s", removed, keep)
        return removed
