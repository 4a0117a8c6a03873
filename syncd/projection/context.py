"""What builders get besides the row: `Params` and the `RowContext` helpers.

The helpers run once per value of every built document, so they are written for
the common case (an ISO time, a JSON object, an integer foreign key) and take the
slow, flagging path only for a value that is not that. Their results are the
same whichever path a value takes.

When the mapping declares an inverse (`keeping`), each conversion that the inverse
(syncd.projection.inverse) could not undo exactly also keeps what it drops in the
row's `_orig` (`orig`): a time's sub-millisecond digits (a BSON date holds
milliseconds) or its original text, JSON text that `json.dumps` of the parsed object
does not give back, a boolean's value when it was not the INTEGER 0 or 1. The check is
one comparison on the common path; `_orig` is built only for a value that fails it.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from syncd.projection.ids import id_maker
from syncd.projection.values import to_bson

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UTC_NAMES = ("UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu")
REF_CACHE_SIZE = 65536

_fromisoformat = datetime.fromisoformat
_utc = timezone.utc
# What the inverse writes a JSON object back as: `json.dumps(obj)` with its defaults
# (what Python legacy scripts store); check_circular only changes speed.
dump_json = json.JSONEncoder(check_circular=False).encode


def to_local(stored: datetime, zone: ZoneInfo | None) -> datetime:
    """A stored (UTC, naive) time as naive wall time in `zone` (None: UTC)."""
    if zone is None:
        return stored
    return stored.replace(tzinfo=_utc).astimezone(zone).replace(tzinfo=None)


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
        # `keeping`: the mapping declares an inverse, so `orig` collects this row's `_orig`.
        self.keeping = False
        self.orig: dict[str, Any] | None = None
        self._makers: dict[str, Callable[[Sequence[Any]], ObjectId]] = {}
        self._refs: dict[tuple[str, tuple[Any, ...]], ObjectId] = {}
        self._utc = params.timezone in UTC_NAMES
        # `json.loads(text, parse_int=...)` builds a decoder on every call (most of
        # its cost on a small object); one decoder per context, used the same way.
        self._decode = json.JSONDecoder(parse_int=_json_int).decode

    def flag(self, name: str, problem: str) -> None:
        """Record that field `name` of this row kept its legacy value because of `problem`."""
        if self.flags is None:
            self.flags = []
        self.flags.append(f"{name}: {problem}")

    def keep(self, name: str, value: Any) -> None:
        """Keep in `_orig` what converting field `name` dropped (see the module's text)."""
        if self.orig is None:
            self.orig = {}
        self.orig[name] = value

    def ref(self, table: str, *key: Any) -> ObjectId | None:
        """The `_id` of the row of `table` with primary key `key` (None if a part is NULL).

        Only keys made of exact `int` and `str` values are cached: those never equal a
        value of another type. A REAL 3.0 equals (and hashes like) the INTEGER 3, and
        -0.0 equals 0.0, yet their ids differ, so such keys are hashed every time.
        """
        for value in key:
            if value.__class__ is not int and value.__class__ is not str:
                return self._ref_uncached(table, key)
        oid = self._refs.get((table, key))
        if oid is None:
            oid = self._remember((table, key), self._maker(table), key)
        return oid

    def _remember(self, cached: tuple[str, tuple[Any, ...]],
                  maker: Callable[[Sequence[Any]], ObjectId], key: tuple[Any, ...]) -> ObjectId:
        """A cache miss of `ref`: the id made and kept (the cache emptied when full)."""
        if len(self._refs) > REF_CACHE_SIZE:
            self._refs.clear()
        oid = self._refs[cached] = maker(key)
        return oid

    def _ref_uncached(self, table: str, key: tuple[Any, ...]) -> ObjectId | None:
        if None in key:
            return None
        return self._maker(table)(key)

    def _maker(self, table: str) -> Callable[[Sequence[Any]], ObjectId]:
        maker = self._makers.get(table)
        if maker is None:
            maker = self._makers[table] = id_maker(self.params.source_id, table)
        return maker

    def datetime(self, value: Any, name: str) -> Any:
        """ISO-8601 text as a BSON datetime; naive times are in the configured zone."""
        if value.__class__ is str:
            try:
                parsed = _fromisoformat(value)
            except ValueError:
                self.flag(name, "not an ISO-8601 time")
                return value
            if parsed.tzinfo is None:
                if self._utc:
                    if self.keeping:  # `_keep_time` for the common case, inlined
                        # Naive UTC: the inverse gives back parsed.isoformat(), with the
                        # sub-millisecond digits (a BSON date drops them) kept on their
                        # own. `value` parsed, so its digits are digits: it is isoformat()
                        # when its length and separators are (`YYYY-MM-DDTHH:MM:SS`, and
                        # `.ffffff` for microseconds), and it is not hour 24 (midnight of
                        # the next day, where a Python reads that). isoformat() itself
                        # would cost five times as much; tests/test_lossless.py checks
                        # that both agree, and verify --lossless uses isoformat().
                        micro = parsed.microsecond
                        if (len(value) == 26 and value[4:20:3] == "--T::." if micro else
                                len(value) == 19 and value[4:17:3] == "--T::") \
                                and value[11:13] != "24":
                            if micro % 1000:
                                orig = self.orig
                                if orig is None:
                                    self.orig = {name: micro % 1000}
                                else:
                                    orig[name] = micro % 1000
                        else:
                            self.keep(name, value)
                    return parsed
                stored = parsed - self.zone.utcoffset(parsed)
            else:
                stored = parsed.astimezone(_utc).replace(tzinfo=None)
            if self.keeping:
                self._keep_time(value, stored, name)
            return stored
        if value is None:
            return None
        self.flag(name, f"not text ({type(value).__name__})")
        return to_bson(value)

    def _keep_time(self, text: str, stored: datetime, name: str) -> None:
        """What `_orig` needs for the inverse to give `text` back from the BSON date of
        `stored`: nothing, the sub-millisecond microseconds (an int), or the text."""
        rest = stored.microsecond % 1000
        back = to_local(stored - timedelta(microseconds=rest),
                        None if self._utc else self.zone) + timedelta(microseconds=rest)
        if back.isoformat() != text:
            self.keep(name, text)
        elif rest:
            self.keep(name, rest)

    def json_object(self, value: Any, name: str) -> Any:
        """JSON text as an embedded document; anything else kept as it is and flagged."""
        if value is None:
            return None
        if value.__class__ is not str:
            self.flag(name, f"not JSON text ({type(value).__name__})")
            return to_bson(value)
        try:
            # A leading BOM fails here as in json.loads: "not JSON" either way.
            parsed = self._decode(value)
        except (ValueError, OverflowError):
            self.flag(name, "not JSON")
            return value
        if not isinstance(parsed, dict):
            self.flag(name, "JSON but not an object")
            return value
        if self.keeping and dump_json(parsed) != value:
            self.keep(name, value)  # spacing, 1e3, duplicate keys, escapes: as written
        return parsed

    def boolean(self, value: Any, name: str) -> Any:
        """A 0/1 (or true/false text) flag as a real boolean; NULL stays NULL.

        A one-byte BLOB 0x00/0x01 is what sqlite3 stores for a numpy.bool_ (it is
        bound through the buffer protocol), as the EEG2025 scripts do.
        """
        if value is None:
            return None
        if value.__class__ is int and (value == 1 or value == 0):
            return value == 1
        if value.__class__ is bytes and value in (b"\x00", b"\x01"):
            truth = value == b"\x01"
        elif value == 1 and value.__class__ is not str:
            truth = True
        elif value == 0 and value.__class__ is not str:
            truth = False
        elif value.__class__ is str and value.strip().lower() in ("true", "false", "1", "0"):
            truth = value.strip().lower() in ("true", "1")
        else:
            self.flag(name, "not a boolean")
            return to_bson(value)
        if self.keeping:  # the inverse gives back the INTEGER 0 or 1
            self.keep(name, to_bson(value))
        return truth

    def number(self, value: Any, name: str) -> Any:
        """A numeric value as stored; text or bytes in a numeric column are kept and flagged."""
        if value is None or value.__class__ in (int, float):
            return value
        self.flag(name, f"not a number ({type(value).__name__})")
        return to_bson(value)


# A migration file's name: four digits, then words (`0006_datasets.py`).
MIGRATION_FILE = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.py$")


def migration_line(exc: BaseException, file: str | None = None) -> tuple[str, int] | None:
    """The migration file (`file`, else any) and line the traceback passed last (the
    builder's, inverse's or upgrade's own line, also when the error came from deeper
    down), so its author finds it; None if none is in it. No source is read: cheap."""
    found = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        name = Path(frame.f_code.co_filename).name
        if name == file if file else MIGRATION_FILE.match(name):
            found = (name, line)
    return found


def raised_at(exc: BaseException) -> str:
    """` (0006_x.py line N)`, or nothing (`migration_line`)."""
    at = migration_line(exc)
    return f" ({at[0]} line {at[1]})" if at else ""
