"""Printing results: JSON for scripts, short text for people."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from typing import Any

from bson import ObjectId
from bson.binary import Binary

from syncd.redact import scrub


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
    sys.stdout.write(dumps(data) + "\n")


def say(text: str = "") -> None:
    sys.stdout.write(scrub(text) + "\n")


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
