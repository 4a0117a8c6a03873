"""The experiments list's order, computed in this process from one projected pass.

MongoDB answers a page of a sorted list by sorting every matching run and skipping
to the page (SecantusDB: 0.3-0.6 s a page at 10,000 runs, more the further the
page). The list's order needs only a few small fields per run (`_id`, the loss,
run_id and the three filter fields), so it is cheaper to read those once, sort
them here, and fetch a page's documents by `_id`: any page, and its count, is then
a slice. `Ranking` holds that order and takes single-document changes (from a
change stream: syncd.client.ranking_feed keeps one up to date); `ranked_ids`
is the one-shot form (`syncd experiments best`).

The order is exactly MongoDB's: values compare as BSON compares them (numbers
of any type by value, NaN below every number, strings by code point, null and
missing alike), ties broken by `_id`. A value this module does not order (an
array, an embedded document, binary data...) in any field it reads makes the
Ranking decline (`usable` False), and the caller asks the server instead.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from bson import Decimal128, Int64, ObjectId
from pymongo.collection import Collection

LOSS = "metrics.best_val_loss"
FILTERS = ("challenge", "status", "_source")  # the fields a list page may filter on
FIELDS = {"_id": 1, LOSS: 1, "run_id": 1, **{f: 1 for f in FILTERS}}
FETCH_GROUP = 25  # _ids per `$in` query (SecantusDB answers 4 x 25 faster than 1 x 100)

# BSON's order of types (those this module orders).
_NULL, _NUMBER, _STRING, _OBJECTID, _BOOL, _DATE = 1, 2, 3, 7, 8, 9


class Unorderable(Exception):
    """A value this module does not order as MongoDB does."""


def bson_key(value: Any) -> tuple[Any, ...]:
    """A sort key that orders values as MongoDB's sort does (for scalars)."""
    if value is None:
        return (_NULL,)
    if isinstance(value, bool):
        return (_BOOL, value)
    if isinstance(value, (int, Int64)):
        return (_NUMBER, 1, int(value))
    if isinstance(value, float):
        return (_NUMBER, 0, 0) if math.isnan(value) else (_NUMBER, 1, value)
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        return (_NUMBER, 0, 0) if number.is_nan() else (_NUMBER, 1, number)
    if isinstance(value, str):
        return (_STRING, value)  # code point order is UTF-8 byte order
    if isinstance(value, ObjectId):
        return (_OBJECTID, value.binary)
    if isinstance(value, dt.datetime):
        return (_DATE, value if value.tzinfo is None
                else value.astimezone(dt.timezone.utc).replace(tzinfo=None))
    raise Unorderable(type(value).__name__)


def _field(doc: Mapping[str, Any], path: str) -> Any:
    """`doc`'s value at a dotted path (None where missing); a path through an array
    is Unorderable (MongoDB would look into every element)."""
    value: Any = doc
    for part in path.split("."):
        if isinstance(value, list):
            raise Unorderable("array")
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def has_loss(value: Any) -> bool:
    """The list's first range: a number from -Infinity up (not NaN, not a boolean)."""
    key = bson_key(value)
    return key[0] == _NUMBER and key[1] == 1


def list_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """The dashboard list's order: runs with a loss by (loss, run_id, _id), then the
    others by (run_id, _id)."""
    loss = _field(doc, LOSS)
    run, oid = bson_key(_field(doc, "run_id")), bson_key(doc["_id"])
    return (0, bson_key(loss)[2], run, oid) if has_loss(loss) else (1, run, oid)


def best_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """`syncd experiments best`'s order: (loss, run_id, _id), NaN first as MongoDB has it."""
    return (bson_key(_field(doc, LOSS)), bson_key(_field(doc, "run_id")), bson_key(doc["_id"]))


class Ranking:
    """Every run's place in the list, and its filter fields, kept in order."""

    def __init__(self) -> None:
        self._keys: dict[Any, tuple[Any, ...]] = {}  # _id -> its list key
        self._fields: dict[Any, tuple[tuple[Any, ...], ...]] = {}  # _id -> filter keys
        self._raw: dict[Any, tuple[Any, ...]] = {}  # _id -> filter values as stored
        self._order: list[tuple[tuple[Any, ...], Any]] = []  # (key, _id), sorted
        self._odd: set[Any] = set()  # runs with a value this module does not order
        self._filtered: dict[tuple[Any, ...], list[Any]] = {}  # per filter, this version
        self._choices: dict[str, list[Any]] | None = None

    @classmethod
    def read(cls, coll: Collection) -> Ranking:
        """One projected pass over every run."""
        ranking = cls()
        for doc in coll.find({}, FIELDS, batch_size=10_000):
            ranking._add(doc)
        ranking._order.sort()
        return ranking

    def __len__(self) -> int:
        return len(self._keys) + len(self._odd)

    @property
    def usable(self) -> bool:
        """False while a run holds a value this module cannot order."""
        return not self._odd

    def _add(self, doc: Mapping[str, Any]) -> None:
        oid = doc["_id"]
        try:
            key = list_key(doc)
            raw = tuple(_field(doc, f) for f in FILTERS)
            fields = tuple(bson_key(v) for v in raw)
        except Unorderable:
            self._odd.add(oid)
            return
        self._keys[oid], self._fields[oid], self._raw[oid] = key, fields, raw
        self._order.append((key, oid))

    def _changed(self) -> None:
        self._filtered.clear()
        self._choices = None

    def put(self, doc: Mapping[str, Any]) -> None:
        """A run inserted, replaced or updated (its current fields)."""
        self.remove(doc["_id"])
        self._add(doc)
        if doc["_id"] in self._keys:  # _add appended it: move it to its place
            entry = self._order.pop()
            bisect.insort(self._order, entry)

    def remove(self, oid: Any) -> None:
        """A run deleted (nothing if it is not here)."""
        self._changed()
        self._odd.discard(oid)
        key = self._keys.pop(oid, None)
        if key is None:
            return
        del self._fields[oid], self._raw[oid]
        # Keys are unique (each ends with its _id): the first entry from `(key,)` is it.
        del self._order[bisect.bisect_left(self._order, (key,))]

    def page(self, match: Mapping[str, Any], offset: int,
             limit: int) -> tuple[list[Any], int] | None:
        """The `_id`s of one page of the runs equal to `match` on the filter fields,
        and how many match; None where this Ranking cannot answer (another field,
        a value it does not order, a run it does not order)."""
        if self._odd or not set(match) <= set(FILTERS):
            return None
        try:
            wanted = tuple((FILTERS.index(f), bson_key(v)) for f, v in sorted(match.items()))
        except Unorderable:
            return None
        if not wanted:
            return [oid for _, oid in self._order[offset:offset + limit]], len(self._order)
        ids = self._filtered.get(wanted)
        if ids is None:
            fields = self._fields
            ids = [oid for _, oid in self._order
                   if all(fields[oid][i] == key for i, key in wanted)]
            self._filtered[wanted] = ids
        return ids[offset:offset + limit], len(ids)

    def choices(self) -> dict[str, list[Any]]:
        """The distinct values of each filter field (None left out), as stored."""
        if self._choices is None:
            seen: dict[str, dict[tuple[Any, ...], Any]] = {f: {} for f in FILTERS}
            for oid, raw in self._raw.items():
                for f, key, value in zip(FILTERS, self._fields[oid], raw):
                    if value is not None:
                        seen[f].setdefault(key, value)
            self._choices = {f: list(values.values()) for f, values in seen.items()}
        return self._choices


def ranked_ids(coll: Collection, match: Mapping[str, Any]) -> list[Any] | None:
    """The `_id`s of the runs matching `match` in `best_key` order, from one projected
    pass; None if a run holds a value this module does not order."""
    keyed = []
    try:
        for doc in coll.find(dict(match), {"_id": 1, LOSS: 1, "run_id": 1}, batch_size=10_000):
            keyed.append((best_key(doc), doc["_id"]))
    except Unorderable:
        return None
    keyed.sort()
    return [oid for _, oid in keyed]


def fetch(coll: Collection, ids: Iterable[Any],
          projection: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The documents of `ids`, in that order, by `_id` in small groups (one gone since
    leaves its place out)."""
    ids = list(ids)
    found: dict[Any, dict[str, Any]] = {}
    for at in range(0, len(ids), FETCH_GROUP):
        group = ids[at:at + FETCH_GROUP]
        for doc in coll.find({"_id": {"$in": group}}, projection):
            found[doc["_id"]] = doc
    return [found[i] for i in ids if i in found]

