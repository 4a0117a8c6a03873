"""A builder of the plain shape, compiled into one function for a whole chunk.

Most builders (every one of the EEG2025 model) are a single `return {...}` of
`row["column"]` values, constants, nested dict displays and `ctx` helper calls.
Called row by row, such a builder costs a row dict, a call and a copy of its
result (to put `_id` first) on every row: more than the builder's own work. This
module reads the builder's source and, when it has that shape and nothing else,
makes the equivalent list display over a chunk: `row["c"]` becomes the row tuple's
item, the helpers are the context's own bound methods called with the same
arguments in the same order, and the document's keys come in the same order. The
documents are the same, by construction; a chunk in which a row raises or is
flagged is done again row by row, so quarantine and `_flags` are unchanged.

Safety: the source read back is compiled again and its bytecode compared with the
loaded function's, so a file changed on disk after it was loaded is never used; the
generated source holds only generated identifiers and integer indices (keys,
constants, table names and helpers are bound as the function's globals:
`compiled.compile_function`). Anything of another shape is simply not compiled.
"""

from __future__ import annotations

import ast
import inspect
import logging
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from syncd.projection.compiled import compile_function

log = logging.getLogger(__name__)

# The RowContext helpers a compiled builder may call: pure functions of their
# arguments (plus the row's flags, which send the chunk down the row-by-row path).
HELPERS = frozenset({"ref", "datetime", "json_object", "boolean", "number"})

ChunkBuild = Callable[[Sequence[Sequence[Any]], Sequence[Any], str, int], list[dict[str, Any]]]


class _Shape(Exception):
    """The builder is not of the shape this module compiles."""


class _Writer:
    """Turns the builder's expression tree into source, binding every value as a global."""

    def __init__(self, row: str, ctx: str, columns: dict[str, int], context: Any) -> None:
        self.row, self.ctx, self.columns, self.context = row, ctx, columns, context
        self.bound: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"g{len(self.bound)}"
        self.bound[name] = value
        return name

    def expr(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant) and not isinstance(node.value, bytes):
            return self.bind(node.value)
        if isinstance(node, ast.Dict):
            return "{" + self.display(node) + "}"
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                and node.value.id == self.row and isinstance(node.slice, ast.Constant)):
            index = self.columns.get(node.slice.value) if isinstance(node.slice.value, str) \
                else None
            if index is None:  # not a column: the row dict would raise; leave it to that path
                raise _Shape(f"row[{node.slice.value!r}] is not a column")
            return f"r[{index}]"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == self.ctx
                and node.func.attr in HELPERS and not node.keywords
                and not any(isinstance(a, ast.Starred) for a in node.args)):
            args = node.args
            if (node.func.attr == "ref" and len(args) == 2 and isinstance(args[0], ast.Constant)
                    and isinstance(args[0].value, str)):  # the common foreign key
                return f"{self.bind(self.context.ref_to(args[0].value))}({self.expr(args[1])})"
            method = self.bind(getattr(self.context, node.func.attr))
            return f"{method}({', '.join(self.expr(a) for a in node.args)})"
        raise _Shape(f"line {node.lineno}: {ast.unparse(node)[:60]} is not a row value, "
                     "a constant, a dict display or a ctx helper call")

    def display(self, node: ast.Dict) -> str:
        items = []
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise _Shape("a dict key that is not a constant string (or `**`)")
            items.append(f"{self.bind(key.value)}: {self.expr(value)}")
        return ", ".join(items)


def _function(build: Callable[..., Any]) -> ast.FunctionDef:
    """The builder's definition, read back and checked to be the code that is loaded."""
    try:
        source = textwrap.dedent(inspect.getsource(build))
    except (OSError, TypeError):
        raise _Shape("its source cannot be read") from None
    tree = ast.parse(source)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise _Shape("not a plain `def`")
    fn = tree.body[0]
    code = build.__code__
    again = compile(tree, code.co_filename, "exec", dont_inherit=True)
    made = next(c for c in again.co_consts if hasattr(c, "co_code"))
    if (made.co_code, made.co_consts, made.co_names, made.co_varnames) != (
            code.co_code, code.co_consts, code.co_names, code.co_varnames):
        raise _Shape("its file changed since it was loaded")
    return fn


def compile_builder(build: Callable[..., Any], names: Sequence[str], offset: int,
                    context: Any) -> ChunkBuild | None:
    """`(rows, ids, source, version) ->` the documents the builder gives, `_id` first and
    `_source`, `_v` last; None when the builder is not of the plain shape.

    `names` are the table's columns, at `offset` in each row tuple (after the rowid);
    `context` is the RowContext whose helpers the builder calls.
    """
    name = getattr(build, "__qualname__", repr(build))
    if getattr(build, "__defaults__", None) or getattr(build, "__closure__", None):
        log.debug("builder %s runs row by row: it has defaults or a closure", name)
        return None
    try:
        fn = _function(build)
        args = fn.args
        if (fn.decorator_list or args.posonlyargs or args.kwonlyargs or args.vararg
                or args.kwarg or len(args.args) != 2):
            raise _Shape("not `def name(row, ctx)` without decorators")
        body = fn.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        if len(body) != 1 or not isinstance(body[0], ast.Return) \
                or not isinstance(body[0].value, ast.Dict):
            raise _Shape("its body is not one `return {...}`")
        columns = {column: i + offset for i, column in enumerate(names)}  # a later one wins,
        writer = _Writer(args.args[0].arg, args.args[1].arg, columns, context)  # as in dicts
        items = writer.display(body[0].value)
        made = compile_function(
            "rows, ids, source, version",
            f"[{{'_id': oid, {items + ', ' if items else ''}'_source': source, '_v': version}} "
            "for r, oid in zip(rows, ids)]", {"zip": zip, **writer.bound})
    except _Shape as exc:
        log.debug("builder %s runs row by row: %s", name, exc)
        return None
    except Exception as exc:  # anything unforeseen: the builder as written, row by row
        log.debug("builder %s runs row by row: %s: %s", name, type(exc).__name__, exc)
        return None
    log.debug("builder %s compiled for whole chunks", name)
    return made
