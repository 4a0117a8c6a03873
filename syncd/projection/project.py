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
import json
import math
import operator
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from legacy_adapters.base import TableInfo
from legacy_adapters.values import RawText
from syncd.projection.compiled import doc_maker, row_dict_maker
from syncd.projection.ids import id_maker, int_ids_maker
from syncd.projection.model import TableMap
from syncd.projection.values import escape_field, to_bson

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NULL_KEY_MARK = "\x00rowid"
NULL_KEY_FLAG = "_id: primary key is NULL (keyed by rowid)"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cycle collector while a chunk is read and projected.

    A chunk allocates tens of thousands of small acyclic tuples and dicts; the
    collections they trigger (each rescanning every live object) cost more than
    the projection itself. Nothing here makes cycles, so nothing is lost by waiting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
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


@dataclass(frozen=True)
class Params:
    """Everything besides rows and model that the documents depend on.

    `version` (the migration version the model comes from) is stamped on every
    document as `_v`, beside `_source`; it is not a parameter of the rebuild decision
    (the version is compared on its own).
    """

    source_id: str
    timezone: str
    version: int = 0

    def document(self) -> dict[str, str]:
        return {"source_id": self.source_id, "timezone": self.timezone}


def _json_int(text: str) -> int | str:
    value = int(text)
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise OverflowError(text)


class RowContext:
    """Helpers for builders; `flags` collects this row's parse problems."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.zone = ZoneInfo(params.timezone)
        self.flags: list[str] | None = None
        self._makers: dict[str, Callable[[Sequence[Any]], ObjectId]] = {}
        self._refs: dict[tuple[str, tuple[Any, ...]], ObjectId] = {}
        self._utc = params.timezone in ("UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu")

    def flag(self, name: str, problem: str) -> None:
        """Record that field `name` of this row kept its legacy value because of `problem`."""
        if self.flags is None:
            self.flags = []
        self.flags.append(f"{name}: {problem}")

    def ref(self, table: str, *key: Any) -> ObjectId | None:
        """The `_id` of the row of `table` with primary key `key` (None if a part is NULL)."""
        oid = self._refs.get((table, key))  # a hit is never a key with a NULL part
        if oid is None:
            if None in key:
                return None
            maker = self._makers.get(table)
            if maker is None:
                maker = self._makers[table] = id_maker(self.params.source_id, table)
            if len(self._refs) > 65536:
                self._refs.clear()
            oid = self._refs[(table, key)] = maker(key)
        return oid

    def datetime(self, value: Any, name: str) -> Any:
        """ISO-8601 text as a BSON datetime; naive times are in the configured zone."""
        if value is None:
            return None
        if value.__class__ is str:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                self.flag(name, "not an ISO-8601 time")
                return value
            if parsed.tzinfo is None:
                if self._utc:
                    return parsed
                return parsed - self.zone.utcoffset(parsed)
            return parsed.astimezone(timezone.utc).replace(tzinfo=None)
        self.flag(name, f"not text ({type(value).__name__})")
        return to_bson(value)

    def json_object(self, value: Any, name: str) -> Any:
        """JSON text as an embedded document; anything else kept as it is and flagged."""
        if value is None:
            return None
        if value.__class__ is not str:
            self.flag(name, f"not JSON text ({type(value).__name__})")
            return to_bson(value)
        try:
            parsed = json.loads(value, parse_int=_json_int)
        except (ValueError, OverflowError):
            self.flag(name, "not JSON")
            return value
        if not isinstance(parsed, dict):
            self.flag(name, "JSON but not an object")
            return value
        return parsed

    def boolean(self, value: Any, name: str) -> Any:
        """A 0/1 (or true/false text) flag as a real boolean; NULL stays NULL.

        A one-byte BLOB 0x00/0x01 is what sqlite3 stores for a numpy.bool_ (it is
        bound through the buffer protocol), as the EEG2025 scripts do.
        """
        if value is None:
            return None
        if value.__class__ is bytes and value in (b"\x00", b"\x01"):
            return value == b"\x01"
        if value == 1 and value.__class__ is not str:
            return True
        if value == 0 and value.__class__ is not str:
            return False
        if value.__class__ is str and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        self.flag(name, "not a boolean")
        return to_bson(value)

    def number(self, value: Any, name: str) -> Any:
        """A numeric value as stored; text or bytes in a numeric column are kept and flagged."""
        if value is None or value.__class__ in (int, float):
            return value
        self.flag(name, f"not a number ({type(value).__name__})")
        return to_bson(value)


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
        key = self.key(row)
        if key[0] is NULL_KEY_MARK or not self.pk_index:
            return {"rowid": key[-1]}
        return {c: to_bson(v) for c, v in zip(self.table.primary_key, key)}

    def _chunk_ids(self, rows: Sequence[Sequence[Any]]) -> list[ObjectId] | None:
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
        ids = None if careful else self._chunk_ids(rows)
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
        for row, oid in zip(rows, ids):
            ctx.flags = None
            try:
                doc = {"_id": oid}
                doc.update(build(row_dict(row), ctx))
            except Exception as exc:  # a bad row must not stop the run: quarantine it
                out.quarantined.append(self._quarantined(row, row[off:], oid, exc))
                continue
            flags = ctx.flags
            if flags:
                doc["_flags"] = flags
                out.flags.update(f"{name}.{f}" for f in flags)
            doc["_source"] = source
            doc["_v"] = version
            docs.append(doc)
        return out

    def _quarantined(self, row: Sequence[Any], values: Sequence[Any], oid: ObjectId,
                     exc: Exception) -> dict[str, Any]:
        """The quarantine entry of a row whose builder raised."""
        return {"_id": oid, "table": self.table.name, "collection": self.collection,
                "key": self.key_document(row), "error": f"{type(exc).__name__}: {exc}",
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
                doc = {"_id": make_id(k)}
                doc.update(zip(fields, row[off:]))
                if with_rowid:
                    doc["_rowid"] = row[0]
                if k[0] is NULL_KEY_MARK:
                    doc["_flags"] = [NULL_KEY_FLAG]
                    out.flags[f"{self.table.name}.{NULL_KEY_FLAG}"] += 1
                doc["_source"] = source
                doc["_v"] = version
                docs.append(doc)
            return out
        ctx, names = self.ctx, self.names
        for row in rows:
            values = row[off:]
            ctx.flags = None
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
                    doc = {"_id": make_id(k)}
                    doc.update(zip(self.fields, values))
                    if self.with_rowid_field:
                        doc["_rowid"] = row[0]
                else:
                    doc = {"_id": make_id(k)}
                    doc.update(build(dict(zip(names, values)), ctx))
            except Exception as exc:  # a bad row must not stop the run: quarantine it
                out.quarantined.append(self._quarantined(row, values, make_id(k), exc))
                continue
            if ctx.flags:
                doc["_flags"] = ctx.flags
                out.flags.update(f"{self.table.name}.{f}" for f in ctx.flags)
            doc["_source"] = source
            doc["_v"] = version
            docs.append(doc)
        return out
