"""MongoDB's query, sort and projection semantics over documents in memory.

An as-of view (syncd.client.asof) holds documents rebuilt from history, not stored
ones, and must answer the Tracker's queries exactly as the server answers them on
live data: the same filter matches the same runs, the same sort gives the same
order. This is the subset of MongoDB's query language those queries use (and the
usual operators of `syncd experiments search`), with MongoDB's rules: BSON type
brackets (a number never equals or sorts among strings), numeric equality across
int and double, `null` matching a missing field, paths through arrays, an array
sorting by its least (ascending) or greatest (descending) element. An operator
outside the subset is refused by name, never silently ignored. tests/test_match.py
checks every rule against the server's own answers.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bson import Decimal128, Int64, ObjectId, Regex
from bson.binary import Binary
from bson.timestamp import Timestamp

from syncd.errors import ConfigError

Doc = Mapping[str, Any]
Predicate = Callable[[Doc], bool]


class UnsupportedQuery(ConfigError):
    """A filter, sort or projection an as-of view cannot evaluate (it names why): the
    user's input, exit 2."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# -- BSON order ----------------------------------------------------------------------------

# MongoDB's comparison order of BSON types (null and a missing field share a rank).
NULL, NUMBER, STRING, OBJECT, ARRAY, BINARY, OBJECTID, BOOL, DATE, TIMESTAMP, REGEX = (
    2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
TYPE_ALIASES: dict[str, int | str] = {
    "double": 1, "string": 2, "object": 3, "array": 4, "binData": 5, "objectId": 7,
    "bool": 8, "date": 9, "null": 10, "regex": 11, "int": 16, "timestamp": 17, "long": 18,
    "decimal": 19, "number": "number"}


def rank(value: Any) -> int:
    """`value`'s place in MongoDB's order of types."""
    if value is None or value is MISSING:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float, Decimal128)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, Mapping):
        return OBJECT
    if isinstance(value, (list, tuple)):
        return ARRAY
    if isinstance(value, (bytes, Binary)):
        return BINARY
    if isinstance(value, ObjectId):
        return OBJECTID
    if isinstance(value, dt.datetime):
        return DATE
    if isinstance(value, Timestamp):
        return TIMESTAMP
    if isinstance(value, (Regex, re.Pattern)):
        return REGEX
    raise UnsupportedQuery(f"a value of type {type(value).__name__} has no BSON order")


def type_code(value: Any) -> int | None:
    """The BSON type number of a value (`$type`), None for a missing field."""
    if value is MISSING:
        return None
    if value is None:
        return 10
    if isinstance(value, bool):
        return 8
    if isinstance(value, Int64) or (isinstance(value, int) and not -2**31 <= value < 2**31):
        return 18
    return {int: 16, float: 1, str: 2, dict: 3, list: 4, ObjectId: 7, dt.datetime: 9,
            Timestamp: 17, Decimal128: 19}.get(type(value)) or {
        OBJECT: 3, ARRAY: 4, BINARY: 5, REGEX: 11}.get(rank(value), 0)


def _number(value: Any) -> float | int:
    return float(value.to_decimal()) if isinstance(value, Decimal128) else value


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1: `a` against `b` in MongoDB's order (types first, then values)."""
    ra, rb = rank(a), rank(b)
    if ra != rb:
        return _sign(ra, rb)
    if ra == NULL:
        return 0
    if ra == NUMBER:
        x, y = _number(a), _number(b)
        if math.isnan(x) or math.isnan(y):  # NaN equals NaN and is below every number
            return _sign(not math.isnan(x), not math.isnan(y))
        return _sign(x, y)
    if ra == OBJECT:
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            found = _sign(rank(va), rank(vb)) or _sign(ka, kb) or compare(va, vb)
            if found:
                return found
        return _sign(len(a), len(b))
    if ra == ARRAY:
        for va, vb in zip(a, b):
            found = compare(va, vb)
            if found:
                return found
        return _sign(len(a), len(b))
    if ra == BINARY:
        sa = a.subtype if isinstance(a, Binary) else 0
        sb = b.subtype if isinstance(b, Binary) else 0
        return _sign(len(a), len(b)) or _sign(sa, sb) or _sign(bytes(a), bytes(b))
    if ra == OBJECTID:
        return _sign(a.binary, b.binary)
    if ra == DATE:
        return _sign(_utc(a), _utc(b))
    if ra == REGEX:
        return _sign((a.pattern, str(a.flags)), (b.pattern, str(b.flags)))
    return _sign(a, b)


def equal(a: Any, b: Any) -> bool:
    return rank(a) == rank(b) and compare(a, b) == 0


# -- paths ---------------------------------------------------------------------------------


def resolve(value: Any, parts: Sequence[str]) -> list[Any]:
    """The values a dotted path reaches (MISSING where it reaches none), through arrays:
    `a.b` of `{a: [{b: 1}, {b: 2}]}` is [1, 2]; `a.0` is the first element."""
    return [v for v, _ in _reach(value, parts)]


def _reach(value: Any, parts: Sequence[str], expand: bool = True) -> list[tuple[Any, bool]]:
    """`resolve`, each value with whether an operator also tests its elements (not for
    an array reached by its position: `a.0` of `[[1, 2]]` is the array [1, 2] alone)."""
    if not parts:
        return [(value, expand)]
    head, rest = parts[0], parts[1:]
    if isinstance(value, Mapping):
        return _reach(value[head], rest) if head in value else [(MISSING, True)]
    if isinstance(value, (list, tuple)):
        out: list[tuple[Any, bool]] = []
        if head.isdigit() and int(head) < len(value):
            out += _reach(value[int(head)], rest, expand=False)
        for item in value:
            if isinstance(item, Mapping):
                out += _reach(item, parts)
        return out
    return [(MISSING, True)]


def _candidates(leaves: Iterable[tuple[Any, bool]]) -> list[Any]:
    """What an operator tests: each value reached, and each element of an array reached."""
    out: list[Any] = []
    for leaf, expand in leaves:
        out.append(leaf)
        if expand and isinstance(leaf, (list, tuple)):
            out.extend(leaf)
    return out


# -- filters -------------------------------------------------------------------------------

Leaves = list[tuple[Any, bool]]  # what a path reached (`_reach`)
Test = Callable[[Leaves], bool]  # the leaves a path reached -> matched?


def compile_filter(spec: Mapping[str, Any] | None) -> Predicate:
    """A document predicate for a MongoDB filter (refusing what it cannot evaluate)."""
    if spec is None:
        return lambda doc: True
    if not isinstance(spec, Mapping):
        raise UnsupportedQuery(f"a filter must be an object, not {spec!r}")
    parts: list[Predicate] = []
    for key, value in spec.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list) or not value:
                raise UnsupportedQuery(f"{key} takes a non-empty list of filters")
            subs = [compile_filter(v) for v in value]
            if key == "$and":
                parts.append(lambda d, s=subs: all(p(d) for p in s))
            elif key == "$or":
                parts.append(lambda d, s=subs: any(p(d) for p in s))
            else:
                parts.append(lambda d, s=subs: not any(p(d) for p in s))
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            raise UnsupportedQuery(f"{key} is not supported in an as-of query")
        else:
            slow = _path_test(key.split("."), _condition(value))
            parts.append(_fast_equality(key, value, slow) or slow)
    return lambda doc: all(p(doc) for p in parts)


def _path_test(path: list[str], test: Test) -> Predicate:
    return lambda doc: test(_reach(doc, path))


def _fast_equality(key: str, value: Any, slow: Predicate) -> Predicate | None:
    """`{field: value}` on a top-level field (`experiment_id`, `status`): a value of the
    same class is compared at once, anything else takes the general path."""
    if "." in key or value is None or isinstance(value, (Mapping, list, tuple, Regex,
                                                         re.Pattern, float)):
        return None
    kind = value.__class__

    def test(doc: Doc) -> bool:
        found = doc.get(key, MISSING)
        return found == value if found.__class__ is kind else slow(doc)
    return test


def matches(doc: Doc, spec: Mapping[str, Any] | None) -> bool:
    return compile_filter(spec)(doc)


def _is_operators(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and next(iter(value)).startswith("$")


def _condition(value: Any) -> Test:
    """The test of one field's condition: operators, a regex, or a value to equal."""
    if _is_operators(value):
        if "$options" in value and "$regex" not in value:
            raise UnsupportedQuery("$options needs a $regex")
        tests = [_operator(op, arg, value) for op, arg in value.items() if op != "$options"]
        return lambda leaves: all(t(leaves) for t in tests)
    if isinstance(value, (Regex, re.Pattern)):
        return _regex_test(_pattern(value))
    return _eq_test(value)


def _eq_test(value: Any) -> Test:
    if value is None:
        return lambda leaves: any(c is None or c is MISSING for c in _candidates(leaves))
    return lambda leaves: any(equal(c, value) for c in _candidates(leaves))


def _pattern(value: Any, options: str = "") -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if isinstance(value, Regex):
        value, options = value.pattern, options or str(value.flags)
    if not isinstance(value, str):
        raise UnsupportedQuery(f"$regex takes a string, not {value!r}")
    flags = 0
    for letter in options:
        if letter not in "imsx":
            raise UnsupportedQuery(f"$options {options!r}: only i, m, s and x are supported")
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[letter]
    try:
        return re.compile(value, flags)
    except re.error as exc:
        raise UnsupportedQuery(f"$regex {value!r}: {exc}") from None


def _regex_test(pattern: re.Pattern[str]) -> Test:
    return lambda leaves: any(isinstance(c, str) and pattern.search(c) is not None
                              for c in _candidates(leaves))


def _range_test(op: str, arg: Any) -> Test:
    want = {"$gt": (1,), "$gte": (0, 1), "$lt": (-1,), "$lte": (-1, 0)}[op]
    if arg is None:  # only $gte/$lte null match null (and missing)
        return _eq_test(None) if 0 in want else (lambda leaves: False)
    bracket = rank(arg)
    nan_arg = bracket == NUMBER and math.isnan(_number(arg))

    def test(leaves: Leaves) -> bool:
        for c in _candidates(leaves):
            if c is MISSING or rank(c) != bracket:
                continue
            if bracket == NUMBER and (nan_arg or math.isnan(_number(c))):
                if 0 in want and nan_arg and math.isnan(_number(c)):
                    return True
                continue
            if compare(c, arg) in want:
                return True
        return False
    return test


def _in_test(arg: Any) -> Test:
    if not isinstance(arg, (list, tuple)):
        raise UnsupportedQuery(f"$in takes a list, not {arg!r}")
    tests = [_regex_test(_pattern(v)) if isinstance(v, (Regex, re.Pattern)) else _eq_test(v)
             for v in arg]
    return lambda leaves: any(t(leaves) for t in tests)


def _type_test(arg: Any) -> Test:
    wanted = set()
    for item in arg if isinstance(arg, list) else [arg]:
        code = TYPE_ALIASES.get(item, item) if isinstance(item, str) else item
        if code not in (*TYPE_ALIASES.values(), 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 16, 17, 18,
                        19) or isinstance(code, bool):
            raise UnsupportedQuery(f"$type {item!r} is not a type an as-of query knows")
        wanted.add(code)

    def has(value: Any) -> bool:
        code = type_code(value)
        return code in wanted or ("number" in wanted and code in (1, 16, 18, 19))
    return lambda leaves: any(has(c) for c in _candidates(leaves)) or (
        4 in wanted and any(isinstance(v, list) for v, _ in leaves))


def _elem_match_test(arg: Any) -> Test:
    if not isinstance(arg, Mapping):
        raise UnsupportedQuery("$elemMatch takes an object")
    if _is_operators(arg):
        condition = _condition(arg)

        def one(item: Any) -> bool:
            return condition([(item, False)])
    else:
        pred = compile_filter(arg)

        def one(item: Any) -> bool:
            return isinstance(item, Mapping) and pred(item)
    return lambda leaves: any(isinstance(v, list) and any(one(i) for i in v)
                              for v, _ in leaves)


def _operator(op: str, arg: Any, whole: Mapping[str, Any]) -> Test:
    if op == "$eq":
        return _eq_test(arg)
    if op == "$ne":
        test = _eq_test(arg)
        return lambda leaves: not test(leaves)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _range_test(op, arg)
    if op == "$in":
        return _in_test(arg)
    if op == "$nin":
        test = _in_test(arg)
        return lambda leaves: not test(leaves)
    if op == "$exists":
        return lambda leaves: any(v is not MISSING for v, _ in leaves) == bool(arg)
    if op == "$type":
        return _type_test(arg)
    if op == "$regex":
        return _regex_test(_pattern(arg, str(whole.get("$options", ""))))
    if op == "$not":
        if not (_is_operators(arg) or isinstance(arg, (Regex, re.Pattern))):
            raise UnsupportedQuery("$not takes operators or a regular expression")
        test = _condition(arg)
        return lambda leaves: not test(leaves)
    if op == "$size":
        if isinstance(arg, bool) or not isinstance(arg, int):
            raise UnsupportedQuery(f"$size takes a whole number, not {arg!r}")
        return lambda leaves: any(isinstance(v, list) and len(v) == arg for v, _ in leaves)
    if op == "$all":
        if not isinstance(arg, list):
            raise UnsupportedQuery("$all takes a list")
        tests = [_eq_test(v) for v in arg]
        return lambda leaves: bool(tests) and all(t(leaves) for t in tests)
    if op == "$elemMatch":
        return _elem_match_test(arg)
    if op == "$mod":
        if not (isinstance(arg, list) and len(arg) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in arg)) \
                or not int(arg[0]):
            raise UnsupportedQuery("$mod takes [divisor, remainder]")
        d, r = int(arg[0]), int(arg[1])
        return lambda leaves: any(
            rank(c) == NUMBER and c is not MISSING and math.isfinite(_number(c))
            and math.fmod(int(_number(c)), d) == r for c in _candidates(leaves))
    raise UnsupportedQuery(f"{op} is not supported in an as-of query")
