"""Reading one source's history (`_syncd_history`, `_syncd_schemas`, whose format and
only writer are in syncd.sinks.history): rows and SQL as of a moment, a row's
versions, where history starts, and restore's one unordered pass."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions
from pymongo.database import Database

from syncd.errors import ConfigError
from syncd.sinks.history import HISTORY, KEPT, SCHEMAS, counts, decode_row
from syncd.sinks.julian import shown_jd


class HistoryReader:
    """One source's history, read back: rows as of a moment, a row's versions, the
    tables' SQL as of a moment. (Read beside the writer, so that one module knows
    the format.)"""

    def __init__(self, db: Database, source_id: str) -> None:
        self.db, self.source_id = db, source_id
        self.history, self.schemas = db[HISTORY], db[SCHEMAS]

    def tables(self) -> list[str]:
        """Every table this source's history (rows or SQL) mentions (views are not)."""
        found = set(self.schemas.distinct("table", {"source": self.source_id,
                                                    "kind": {"$ne": "view"}}))
        return sorted(found | set(self.history.distinct("table", {"source": self.source_id})))

    def first_jd(self) -> float | None:
        """When history starts for this source (its first snapshot or version)."""
        first = self.history.find_one({"source": self.source_id}, {"jd": 1},
                                      sort=[("jd", 1)])
        return None if first is None else first["jd"]

    def kept_from(self) -> float | None:
        """The cutoff of `[history] keep`'s last prune (None: never pruned): the state
        as of a moment before it is no longer exact."""
        found = self.db[KEPT].find_one({"_id": self.source_id}, {"before": 1})
        return None if found is None else float(found["before"])

    def check_kept(self, jd: float) -> None:
        """Refuse a moment before what `[history] keep` left exact: the one rule of every
        as-of reader (restore, `Tracker(as_of=...)`, the dashboard), in one line."""
        cutoff = self.kept_from()
        if cutoff is not None and jd < cutoff:
            raise ConfigError(
                f"as of {shown_jd(jd)} is before the history kept for source "
                f"{self.source_id!r}: [history] keep pruned the versions older than "
                f"{shown_jd(cutoff)}, the earliest moment that can be answered exactly")

    def latest(self, table: str, jd: float | None = None) -> Iterator[dict[str, Any]]:
        """The last version of each row of `table` at or before `jd` (None: now), in
        document-id order, deletes included (their `cols` is None); from the last
        baseline completed then, as restore reads them (`counts`)."""
        since, _ = self.baseline_as_of(table, jd)
        when: dict[str, Any] = {"$gte": since}
        if jd is not None:
            when["$lte"] = jd
        last = None
        for doc in self.history.find({"source": self.source_id, "table": table, "jd": when},
                                     sort=[("doc", 1), ("jd", 1), ("seq", 1), ("n", 1)],
                                     batch_size=5000):
            if not counts(doc, since):
                continue
            if last is not None and doc["doc"] != last["doc"]:
                yield last
            last = doc
        if last is not None:
            yield last

    def rows_as_of(self, table: str, jd: float | None = None) -> Iterator[dict[str, Any]]:
        """The rows of `table` as they were at `jd` (None: now), decoded."""
        for doc in self.latest(table, jd):
            row = decode_row(doc)
            if row is not None:
                yield row

    def versions(self, table: str, doc: Any) -> list[dict[str, Any]]:
        """Every version of one row (by its document `_id`), oldest first."""
        return list(self.history.find({"source": self.source_id, "table": table,
                                       "doc": doc}, sort=[("jd", 1), ("seq", 1), ("n", 1)]))

    def schema_as_of(self, table: str, jd: float | None = None) -> dict[str, Any] | None:
        """The table's last recorded SQL at or before `jd` (None if none, or dropped)."""
        query: dict[str, Any] = {"source": self.source_id, "table": table}
        if jd is not None:
            query["jd"] = {"$lte": jd}
        found = self.schemas.find_one(query, sort=[("jd", -1), ("seq", -1)])
        return found if found is not None and found.get("sql") is not None else None

    # -- what a restore reads ------------------------------------------------------

    def objects_as_of(self, jd: float | None = None) -> dict[str, dict[str, Any]]:
        """Every table and view (by name) whose last SQL record at or before `jd` (None:
        now) is not a drop: the schema documents a restore rebuilds from."""
        query: dict[str, Any] = {"source": self.source_id}
        if jd is not None:
            query["jd"] = {"$lte": jd}
        last: dict[str, dict[str, Any]] = {}
        for doc in self.schemas.find(query, sort=[("jd", 1), ("seq", 1)]):
            last[doc["table"]] = doc
        return {name: doc for name, doc in last.items() if doc.get("sql") is not None}

    def first_schema_jd(self) -> float | None:
        """When the first table's baseline was complete: the earliest restorable moment."""
        first = self.schemas.find_one({"source": self.source_id}, {"jd": 1},
                                      sort=[("jd", 1)])
        return None if first is None else first["jd"]

    def baseline_as_of(self, table: str,
                       jd: float | None = None) -> tuple[float, list[str] | None]:
        """Where `table`'s rows as of `jd` start: the start of its last completed baseline
        pass then (versions before it are superseded), or -inf if none names one; and
        the columns that baseline's snapshots hold (None: read each one's `cols`)."""
        query: dict[str, Any] = {"source": self.source_id, "table": table,
                                 "baseline": {"$ne": None}}
        if jd is not None:
            query["jd"] = {"$lte": jd}
        found = self.schemas.find_one(query, {"baseline": 1, "columns": 1},
                                      sort=[("jd", -1), ("seq", -1)])
        if found is None:
            return -math.inf, None
        return found["baseline"], found.get("columns")

    def keeps_rows(self, table: str) -> bool:
        """Whether history keeps `table`'s rows now: false when its last baseline mark says
        `rows_kept` false (`[history] exclude`, or a table the model leaves out)."""
        found = self.schemas.find_one({"source": self.source_id, "table": table,
                                       "baseline": {"$ne": None}}, {"rows_kept": 1},
                                      sort=[("jd", -1), ("seq", -1)])
        return found is None or bool(found.get("rows_kept", True))

    def version_batches(self, table: str, since: float, jd: float | None,
                        with_cols: bool = True, batch_size: int = 20000,
                        fields: Sequence[str] = ()) -> Iterator[list[dict[str, Any]]]:
        """Every version of `table` stamped in [`since`, `jd`], in no order, in the
        server's batches, decoded in C (fields doc, op, rowid, vals, base, `fields`, and
        `cols` unless the snapshots' columns are known): a restore's one pass over the
        history, the cheapest read there is (`cols`, a string per column, is most of
        the decoding)."""
        when: dict[str, Any] = {"$gte": since}
        if jd is not None:
            when["$lte"] = jd
        wanted = {"_id": 0, "doc": 1, "op": 1, "rowid": 1, "vals": 1, "base": 1,
                  **{name: 1 for name in fields}}
        if with_cols:
            wanted["cols"] = 1
        cursor = self.history.find_raw_batches(
            {"source": self.source_id, "table": table, "jd": when}, wanted,
            batch_size=batch_size)
        for raw in cursor:
            yield bson.decode_all(raw, _PLAIN)

    def versions_of(self, table: str, docs: Sequence[Any], since: float,
                    jd: float | None) -> Iterator[dict[str, Any]]:
        """Every version (in [`since`, `jd`]) of these rows, whole, in no order.

        Asked by row alone, the range kept here: with a `jd` range beside the rows (or
        the row index named) the embedded SecantusDB tests every version of the
        table against the whole `$in` list (about 50 s per 1,000 rows of a 50,000-version
        history), and a planner may take the as-of index and walk the table's span;
        by row alone every server reads the row index at those rows. In batches of
        100: SecantusDB also tests each version found against the whole list."""
        for start in range(0, len(docs), 100):
            for v in self.history.find({"source": self.source_id, "table": table,
                                        "doc": {"$in": list(docs[start:start + 100])}}):
                if v["jd"] >= since and (jd is None or v["jd"] <= jd):
                    yield v


_PLAIN = CodecOptions()
