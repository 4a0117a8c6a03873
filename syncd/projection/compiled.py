"""Per-table functions that turn a row tuple into a dict, compiled once per table.

`dict(zip(names, row[1:]))` pays for a slice, a zip iterator and a dict grown one
key at a time, on every row; a dict display (`{k0: r[1], k1: r[2], ...}`) builds
the same dict at its final size, in about half the time. The generated source
holds only generated identifiers and integer indices: the names (legacy column
names, arbitrary text) are bound as the function's globals, never written into
the source, so no legacy text is ever compiled.

The dicts are the same as the zip forms give, key order and duplicate keys
included (a later key overwrites the value, the first position stays).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from syncd.projection.envelope import envelope_display

RowDict = Callable[[Sequence[Any]], dict[str, Any]]
DocMaker = Callable[[Any, Sequence[Any], str, int], dict[str, Any]]


def compile_function(params: str, body: str, bound: Mapping[str, Any]) -> Callable[..., Any]:
    """`def made(params): return body`, whose only globals are `bound` (no builtins).

    `body` must hold generated identifiers and integer indices only; every value
    (legacy names, a builder's keys and constants) is one of `bound`'s names."""
    namespace: dict[str, Any] = {"__builtins__": {}, **bound}
    exec(f"def made({params}):\n    return {body}\n", namespace)  # indices only: see above
    return namespace["made"]


def _names(names: Sequence[str]) -> dict[str, str]:
    return {f"k{i}": name for i, name in enumerate(names)}


def row_dict_maker(names: Sequence[str], offset: int) -> RowDict:
    """`row -> dict(zip(names, row[offset:]))`."""
    items = ", ".join(f"k{i}: r[{i + offset}]" for i in range(len(names)))
    return compile_function("r", "{" + items + "}", _names(names))


def doc_maker(fields: Sequence[str], offset: int, with_rowid: bool) -> DocMaker:
    """`(id, row, source, version) ->` the generic document: `_id`, every column under
    its field name, `_rowid` (`with_rowid`: row[0]), `_source`, `_v`, in that order."""
    items = "".join(f"k{i}: r[{i + offset}], " for i in range(len(fields)))
    body = envelope_display(items, "r[0]" if with_rowid else None)
    return compile_function("oid, r, source, version", body, _names(fields))
