"""What every dashboard read answers with: JSON-ready values, and the error of a query
no stored value could match.

Below the reads (data.py, asof.py) so each can use them without importing the other.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from bson import ObjectId

from syncd.errors import SyncdError
from syncd.redact import scrub, secret_key


class BadQuery(SyncdError):
    """A query parameter no stored value could match (a 400, not a 500)."""


def jsonable(value: Any, key: str = "") -> Any:
    """`value` with ObjectIds and datetimes as text, strings scrubbed, secret keys masked."""
    if key and secret_key(key) and value is not None:
        return "***"
    if isinstance(value, dict):
        return {str(k): jsonable(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": JSON has no such numbers (SQLite has Inf)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(str(value))
