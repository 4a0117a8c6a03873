"""Printing results: JSON for scripts, short text for people."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from typing import Any

from bson import ObjectId
from bson.binary import Binary

from syncd.redact import mask_secrets, scrub


def _default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, (bytes, Binary)):
        return "0x" + bytes(value).hex()
    if isinstance(value, set):
        return sorted(value)
    return str(value)


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any, indent: int | None = 2) -> str:
    return scrub(json.dumps(_finite(data), default=_default, indent=indent, ensure_ascii=False))


def print_json(data: Any) -> None:
    """JSON on stdout; values under secret-looking keys (a legacy config's `api_key`) as `***`."""
    sys.stdout.write(dumps(mask_secrets(data)) + "\n")


def say(text: str = "") -> None:
    sys.stdout.write(scrub(text) + "\n")


# Control characters (C0, DEL, C1) and Unicode line/paragraph separators and bidi
# controls: what could move a terminal's cursor, recolour it, set its title or split
# one line over several. Shown as Python writes them: \x1b, \r, \n, \u202e.
_INVISIBLE = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7f, 0xa0))}
_INVISIBLE.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202a, 0x202f),
                                               *range(0x2066, 0x206a))})


def visible(text: str) -> str:
    """`text` with every control character written out as an escape, so that what an
    event stream or a legacy value holds (anything may be in them) cannot drive the
    reader's terminal."""
    return text.translate(_INVISIBLE)


# A longer cell of a padded column is cut in the middle (its start and its end, a
# file's name, stay): every row is padded to its column's widest cell, so one 1 MB
# legacy value would otherwise make each row of the table a megabyte long. The last
# column is not padded, so it is shown whole (an error message stays readable).
MAX_CELL = 120


def _cut(text: str) -> str:
    if len(text) <= MAX_CELL:
        return text
    half = (MAX_CELL - 1) // 2
    return text[:half] + "…" + text[-(MAX_CELL - 1 - half):]


def shown(value: Any) -> str:
    """A value as text for people. A date to the millisecond, the precision MongoDB keeps
    (str()'s six digits, `.219000` for a legacy `.219930`, read as lost digits), in UTC
    as MongoDB stores it, saying so (`Z`), as `--json` does."""
    if isinstance(value, dt.datetime):
        text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
        return text + ("Z" if value.tzinfo is None else "")
    return str(value)


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain aligned text table (control characters escaped, padded cells cut)."""
    last = len(headers) - 1
    cells = [[str(h) for h in headers]] + [
        [_cut(text) if i < last else text
         for i, text in enumerate("" if c is None else visible(shown(c)) for c in r)]
        for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    widths[-1] = min(widths[-1], MAX_CELL)  # the dashes under a long last column
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
