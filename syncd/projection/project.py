"""Rows to documents: the hot path of every backfill, sync and verify.

`Projector` compiles one (table, mapping) pair once, then turns each chunk of
rows into documents with deterministic `_id`s. Builders get a `RowContext` with
the helpers that keep legacy values faithful: a value that does not parse is kept
as it was and flagged (`_flags` in the document, counted in the report), never
dropped and never fatal. A row whose builder raises is quarantined, not lost.
"""

from __future__ import annotations

import contextlib
import gc
import math
import operator
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from legacy_adapters.base import TableInfo
from legacy_adapters.values import RawText
from syncd.projection.compiled import doc_maker, row_dict_maker
from syncd.projection.context import INT64_MAX, INT64_MIN, Params, RowContext, raised_at
from syncd.projection.envelope import ROWID, envelope
from syncd.projection.ids import id_maker, int_ids_maker
from syncd.projection.model import TableMap
from syncd.projection.values import escape_field, to_bson

NULL_KEY_MARK = "\x00rowid"
NULL_KEY_FLAG = "_id: primary key is NULL (keyed by rowid)"


@contextlib.contextmanager
def gc_paused(promote: bool = False) -> Iterator[None]:
    """Pause the cycle collector while a chunk is read and projected.

    A chunk allocates tens of thousands of small acyclic tuples and dicts; the
    collections they trigger (each rescanning every live object) cost more than
    the projection itself. Nothing here makes cycles, so nothing is lost by waiting.

    Switched back on, the collector would at once scan the chunk's documents (still
    live: the caller is about to write them) and move them to an older generation:
    about 0.3 us of the 4 us a built row costs (measured on the bench database).
    `promote` (a backfill's chunks): `gc.freeze()` + `gc.unfreeze()` first, which move
    every tracked object to the oldest generation without scanning it (two list
    splices) and reset the young count; the acyclic documents are then freed by
    their reference counts as before, and a cycle made meanwhile (by any thread)
    waits for the next full collection. Not for the daemon's steady small batches,
    where that wait would have no end in sight and the scan costs little. Skipped
    when something else has frozen objects (unfreeze would release those too).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if promote and not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def host_timezone() -> str:
    """The host's IANA zone name (TZ, /etc/localtime, /etc/timezone), else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            ZoneInfo(name)
            return name
    except (OSError, ValueError, KeyError):
        pass
    return "UTC"


@dataclass
class Projected:
    """One chunk's documents, quarantined rows and flag counts."""

    docs: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    flags: Counter[str] = field(default_factory=Counter)


def row_for_quarantine(values: Sequence[Any]) -> list[Any]:
    """Row values in a form that always encodes as BSON."""
    out = []
    for v in values:
        v = to_bson(v)
        if isinstance(v, float) and not math.isfinite(v):
            out.append(v)
        elif isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
            out.append(str(v))
        else:
            out.append(v)
    return out


class Projector:
    """Compiled projection of one table: rows (as `Source.scan` returns them) to documents."""

    def __init__(self, table: TableInfo, mapping: TableMap, params: Params) -> None:
        self.table = table
        self.mapping = mapping
        self.params = params
        self.collection = mapping.collection
        self.make_id = id_maker(params.source_id, table.name)
        self.ctx = RowContext(params)
        self.ctx.keeping = mapping.inverse is not None  # `_orig` only where it is read
        names = table.column_names
        self.names = names
        self.offset = 1 if table.rowid else 0
        self.pk_index = [names.index(c) + self.offset for c in table.primary_key]
        if len(self.pk_index) == 1:
            i = self.pk_index[0]
            self._pk: Callable[[Sequence[Any]], tuple[Any, ...]] = lambda row: (row[i],)
        else:
            get = operator.itemgetter(*self.pk_index) if self.pk_index else None
            self._pk = lambda row: get(row)  # type: ignore[misc]
        self.fields = [escape_field(n) for n in names]
        self.with_rowid_field = bool(table.rowid) and not table.primary_key
        # The one value that is the whole key: the rowid or a one-column primary key
        # (None: a composite key).
        single = len(self.pk_index) <= 1
        self._key_at = (self.pk_index[0] if self.pk_index else 0) if single else None
        self._int_ids = int_ids_maker(params.source_id, table.name)
        self._row_dict = row_dict_maker(names, self.offset)
        self._doc = doc_maker(self.fields, self.offset, self.with_rowid_field)

    def key(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """The identity of a row: its primary key, else its rowid."""
        if not self.pk_index:
            return (row[0],)
        key = self._pk(row)
        if self.offset and None in key:
            return (NULL_KEY_MARK, row[0])
        return key

    def key_document(self, row: Sequence[Any]) -> dict[str, Any]:
        """The row's key as a small readable document (for reports and quarantine)."""
        return self.identity_document(self.key(row))

    def identity_document(self, key: tuple[Any, ...]) -> dict[str, Any]:
        """An identity (`key`) as a small readable document: {"run_id": 7}, or
        {"rowid": 12} for a table without a primary key (or a row whose key is NULL)."""
        if key[0] is NULL_KEY_MARK or not self.pk_index:
            return {"rowid": key[-1]}
        return {c: to_bson(v) for c, v in zip(self.table.primary_key, key)}

    def legacy_keys(self, rows: Sequence[Sequence[Any]],
                    projected: Sequence[dict[str, Any]] = ()) -> dict[Any, dict[str, Any]]:
        """Each row's document `_id` -> its key document (what events name rows by).

        `projected`: the rows' documents; when there is one per row (nothing was
        quarantined) they are in row order, and their ids are not computed again.
        """
        ids = ([d["_id"] for d in projected] if len(projected) == len(rows)
               else self.chunk_ids(rows))
        if ids is None:  # a NULL primary key: those rows are keyed by rowid
            ids = [self.make_id(self.key(row)) for row in rows]
        elif self._key_at is not None and not (self.offset and any(
                row[self._key_at] is None for row in rows)):  # one value is the whole key
            name = self.table.primary_key[0] if self.pk_index else "rowid"
            values = map(to_bson, map(operator.itemgetter(self._key_at), rows))
            return {oid: {name: v} for oid, v in zip(ids, values)}
        return {oid: self.key_document(row) for oid, row in zip(ids, rows)}

    def chunk_ids(self, rows: Sequence[Sequence[Any]]) -> list[ObjectId] | None:
        """The `_id`s of a whole chunk; None if a row's primary key is NULL (those rows
        are keyed by rowid and flagged: `_project_rows`)."""
        at = self._key_at
        if at is not None:
            values = list(map(operator.itemgetter(at), rows))
            if set(map(type, values)) == {int}:  # the common case: one integer key
                return self._int_ids(values)
        keys = list(map(self.key, rows))
        if self.offset and any(k[0] is NULL_KEY_MARK for k in keys):
            return None
        return list(map(self.make_id, keys))

    def project(self, rows: Sequence[Sequence[Any]], careful: bool = False) -> Projected:
        """Documents for `rows`. `careful`: the chunk holds raw (non-UTF-8) text values."""
        ids = None if careful else self.chunk_ids(rows)
        if ids is None:
            return self._project_rows(rows, careful)
        out = Projected()
        build, docs = self.mapping.build, out.docs
        source, version = self.params.source_id, self.params.version
        if build is None:
            make = self._doc
            docs.extend([make(oid, row, source, version) for row, oid in zip(rows, ids)])
            return out
        ctx, row_dict, name, off = self.ctx, self._row_dict, self.table.name, self.offset
        append = docs.append
        for row, oid in zip(rows, ids):
            ctx.flags = ctx.orig = None
            try:
                append(envelope(oid, build(row_dict(row), ctx), source, version, ctx.flags,
                                ctx.orig))
            except Exception as exc:  # a bad row must not stop the run: quarantine it
                out.quarantined.append(self._quarantined(row, row[off:], oid, exc))
                continue
            if ctx.flags:
                out.flags.update(f"{name}.{f}" for f in ctx.flags)
        return out

    def _quarantined(self, row: Sequence[Any], values: Sequence[Any], oid: ObjectId,
                     exc: Exception) -> dict[str, Any]:
        """The quarantine entry of a row whose builder raised."""
        return {"_id": oid, "table": self.table.name, "collection": self.collection,
                "key": self.key_document(row),
                "error": f"{type(exc).__name__}: {exc}{raised_at(exc)}",
                "row": dict(zip(self.fields, row_for_quarantine(values)))}

    def _project_rows(self, rows: Sequence[Sequence[Any]], careful: bool) -> Projected:
        """`project` row by row: any key (composite, NULL, not an integer), raw text."""
        out = Projected()
        build = self.mapping.build
        make_id, key, off, docs = self.make_id, self.key, self.offset, out.docs
        source, version = self.params.source_id, self.params.version
        if build is None and not careful:
            fields = self.fields
            with_rowid = self.with_rowid_field
            for row in rows:
                k = key(row)
                body = dict(zip(fields, row[off:]))
                if with_rowid:
                    body[ROWID] = row[0]
                flags = None
                if k[0] is NULL_KEY_MARK:
                    flags = [NULL_KEY_FLAG]
                    out.flags[f"{self.table.name}.{NULL_KEY_FLAG}"] += 1
                docs.append(envelope(make_id(k), body, source, version, flags))
            return out
        ctx, names = self.ctx, self.names
        for row in rows:
            values = row[off:]
            ctx.flags = ctx.orig = None
            if careful:
                for name, v in zip(names, values):
                    if v.__class__ is RawText:
                        ctx.flag(escape_field(name), "text is not UTF-8 (kept as binary)")
                values = [to_bson(v) for v in values]
            k = key(row)
            if k[0] is NULL_KEY_MARK:
                ctx.flags = [NULL_KEY_FLAG]
            try:
                if build is None:
                    body = dict(zip(self.fields, values))
                    if self.with_rowid_field:
                        body[ROWID] = row[0]
                else:
                    body = build(dict(zip(names, values)), ctx)
                doc = envelope(make_id(k), body, source, version, ctx.flags, ctx.orig)
            except Exception as exc:  # a bad row must not stop the run: quarantine it
                out.quarantined.append(self._quarantined(row, values, make_id(k), exc))
                continue
            if ctx.flags:
                out.flags.update(f"{self.table.name}.{f}" for f in ctx.flags)
            docs.append(doc)
        return out
