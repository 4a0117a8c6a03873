"""A read-only collection in memory, answering the pymongo calls the Tracker makes.

An as-of view's documents are rebuilt, not stored; wrapping them in an object with
the read methods of a pymongo `Collection` (find with sort/skip/limit, find_one,
count_documents, distinct, a `$match`/`$group` aggregate) lets the `Tracker`'s own
queries run on them unchanged, so live and as-of answers cannot drift apart. Sorting
and projecting follow MongoDB's rules (syncd.client.match); the documents load on
first use (`loader`), so a view of the experiments never rebuilds the epochs unless
an epoch is asked for.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from syncd.client.match import (
    MISSING,
    Doc,
    UnsupportedQuery,
    compare,
    compile_filter,
    equal,
    rank,
    resolve,
)


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


# -- sort ----------------------------------------------------------------------------------


def sort_spec(key: Any, direction: Any = None) -> list[tuple[str, int]]:
    """A sort as pymongo takes it ("field", (field, dir) pairs, or a {field: dir} map)."""
    if isinstance(key, str):
        pairs = [(key, 1 if direction is None else direction)]
    elif isinstance(key, Mapping):
        pairs = list(key.items())
    else:
        pairs = [tuple(p) for p in key]
    for name, way in pairs:
        if way not in (1, -1) or isinstance(way, bool):
            raise UnsupportedQuery(f"sort {name!r}: direction must be 1 or -1, not {way!r}")
    return [(str(n), int(w)) for n, w in pairs]


class _Empty:
    """An empty array's sort value: below null (as MongoDB sorts it)."""


def _sort_value(doc: Doc, path: list[str], way: int) -> Any:
    """A document's sort key for one field: what the path reaches (missing parts of an
    array left out; nothing: null), an array by its least or greatest element."""
    values: list[Any] = []
    for leaf in resolve(doc, path):
        if isinstance(leaf, (list, tuple)):
            values.extend(leaf)
            if not leaf:
                values.append(_Empty)
        elif leaf is not MISSING:
            values.append(leaf)
    if not values:
        values.append(None)
    pick = min if way == 1 else max
    return pick(values, key=functools.cmp_to_key(_sort_compare))


def _sort_compare(a: Any, b: Any) -> int:
    if a is _Empty or b is _Empty:
        return _sign(b is _Empty, a is _Empty)
    return compare(a, b)


def sorted_docs(docs: Iterable[Doc], spec: list[tuple[str, int]]) -> list[Doc]:
    """`docs` in the order MongoDB's `sort(spec)` gives (ties keep their order)."""
    paths = [(name.split("."), way) for name, way in spec]

    def cmp(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
        for x, y, (_, way) in zip(a, b, paths):
            found = _sort_compare(x, y)
            if found:
                return found * way
        return 0
    keyed = [(tuple(_sort_value(d, p, w) for p, w in paths), d) for d in docs]
    keyed.sort(key=functools.cmp_to_key(lambda a, b: cmp(a[0], b[0])))
    return [d for _, d in keyed]


# -- projection ----------------------------------------------------------------------------


def projector(spec: Mapping[str, Any] | Sequence[str] | None) -> Callable[[Doc], dict]:
    """The function a find's projection applies (inclusion or exclusion, dotted paths)."""
    if spec is None:
        return dict
    if not isinstance(spec, Mapping):
        spec = {name: 1 for name in spec}
    keep_id = bool(spec.get("_id", 1))
    fields = {k: v for k, v in spec.items() if k != "_id"}
    if any(isinstance(v, Mapping) for v in fields.values()):
        raise UnsupportedQuery("projection operators are not supported in an as-of query")
    including = {bool(v) for v in fields.values()}
    if len(including) > 1:
        raise UnsupportedQuery("a projection cannot both include and exclude fields")
    tree: dict[str, Any] = {}
    for name in fields:
        node = tree
        *heads, last = name.split(".")
        for head in heads:
            node = node.setdefault(head, {})
            if node is True:
                break
        else:
            node[last] = True
    include = including != {False}

    def pick(value: Any, node: dict[str, Any]) -> Any:
        if isinstance(value, list):
            return [pick(v, node) for v in value if isinstance(v, Mapping) or not include]
        if not isinstance(value, Mapping):
            return value
        out = {}
        for key, item in value.items():
            sub = node.get(key)
            if include and sub is True:
                out[key] = item
            elif include and sub is not None and isinstance(item, (Mapping, list)):
                out[key] = pick(item, sub)
            elif not include and sub is not True:
                out[key] = item if sub is None else pick(item, sub)
        return out

    def apply(doc: Doc) -> dict[str, Any]:
        rest = {k: v for k, v in doc.items() if k != "_id"}
        # No field named: {_id: 0} is everything else, {_id: 1} the _id alone.
        out = pick(rest, tree) if fields else {} if keep_id else rest
        if keep_id and "_id" in doc:
            return {"_id": doc["_id"], **out}
        return out
    return apply


# -- the collection ------------------------------------------------------------------------


class MemoryCursor:
    """`find()`'s answer: sort, skip and limit, applied when iterated."""

    def __init__(self, docs: list[Doc], shape: Callable[[Doc], dict[str, Any]]) -> None:
        self._docs, self._shape = docs, shape
        self._sort: list[tuple[str, int]] = []
        self._skip = self._limit = 0

    def sort(self, key: Any, direction: Any = None) -> MemoryCursor:
        self._sort = sort_spec(key, direction)
        return self

    def skip(self, n: int) -> MemoryCursor:
        self._skip = max(0, int(n))
        return self

    def limit(self, n: int) -> MemoryCursor:
        self._limit = abs(int(n))
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        docs = sorted_docs(self._docs, self._sort) if self._sort else self._docs
        end = self._skip + self._limit if self._limit else None
        return iter([self._shape(d) for d in docs[self._skip:end]])


class MemoryCollection:
    """Documents in memory with a pymongo Collection's read methods (documents are
    never changed: each answer is a copy shaped by its projection)."""

    def __init__(self, name: str, loader: Callable[[], list[dict[str, Any]]]) -> None:
        self.name = name
        self._loader = loader
        self._docs: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()  # pages sharing a view rebuild it once

    @property
    def loaded(self) -> bool:
        """Whether the documents are in memory already (a read costs no rebuild)."""
        return self._docs is not None

    @property
    def docs(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._docs is None:
                self._docs = self._loader()
            return self._docs

    def _matching(self, spec: Mapping[str, Any] | None) -> list[Doc]:
        if not spec:
            return list(self.docs)
        if set(spec) == {"_id"} and not isinstance(spec["_id"], Mapping):
            return [d for d in self.docs if equal(d["_id"], spec["_id"])]
        pred = compile_filter(spec)
        return [d for d in self.docs if pred(d)]

    def find(self, filter: Mapping[str, Any] | None = None, projection: Any = None,
             sort: Any = None, skip: int = 0, limit: int = 0,
             batch_size: int = 0) -> MemoryCursor:
        """As pymongo's find; `batch_size` is taken and ignored (all is in memory)."""
        cursor = MemoryCursor(self._matching(filter), projector(projection))
        if sort:
            cursor.sort(sort)
        return cursor.skip(skip).limit(limit)

    def find_one(self, filter: Mapping[str, Any] | None = None, projection: Any = None,
                 sort: Any = None) -> dict[str, Any] | None:
        return next(iter(self.find(filter, projection, sort, limit=1)), None)

    def count_documents(self, filter: Mapping[str, Any], **_: Any) -> int:
        return len(self._matching(filter))

    def estimated_document_count(self, **_: Any) -> int:
        return len(self.docs)

    def distinct(self, key: str, filter: Mapping[str, Any] | None = None) -> list[Any]:
        """The distinct values of `key` (array elements counted one by one)."""
        found: list[Any] = []
        for doc in self._matching(filter):
            for leaf in resolve(doc, key.split(".")):
                for value in leaf if isinstance(leaf, list) else [leaf]:
                    if value is not MISSING and not any(equal(value, f) for f in found):
                        found.append(value)
        return found

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """`$match`, `$group` (an `_id` of one field or null; `$sum` of a constant or a
        field), `$sort`, `$skip` and `$limit`."""
        docs: list[Any] = list(self.docs)
        for stage in pipeline:
            (name, arg), = stage.items()
            if name == "$match":
                pred = compile_filter(arg)
                docs = [d for d in docs if pred(d)]
            elif name == "$group":
                docs = _group(docs, arg)
            elif name == "$sort":
                docs = sorted_docs(docs, sort_spec(arg))
            elif name == "$skip":
                docs = docs[int(arg):]
            elif name == "$limit":
                docs = docs[:int(arg)]
            else:
                raise UnsupportedQuery(f"aggregate stage {name} is not supported as of a time")
        return iter(docs)


def _field(doc: Doc, expr: Any) -> Any:
    if isinstance(expr, str) and expr.startswith("$"):
        found = resolve(doc, expr[1:].split("."))
        value = found[0] if len(found) == 1 else found
        return None if value is MISSING else value
    if isinstance(expr, (Mapping, list)):
        raise UnsupportedQuery(f"group expression {expr!r} is not supported as of a time")
    return expr


def _group(docs: Iterable[Doc], spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for doc in docs:
        key = _field(doc, spec["_id"])
        group = next((g for g in groups if equal(g["_id"], key)), None)
        if group is None:
            group = {"_id": key, **{name: 0 for name in spec if name != "_id"}}
            groups.append(group)
        for name, acc in spec.items():
            if name == "_id":
                continue
            if not (isinstance(acc, Mapping) and list(acc) == ["$sum"]):
                raise UnsupportedQuery(f"accumulator {acc!r} is not supported as of a time")
            value = _field(doc, acc["$sum"])
            if rank(value) == 3 and not isinstance(value, bool):
                group[name] += value
    return groups

