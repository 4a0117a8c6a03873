"""Julian days: how the change log stamps a legacy statement (SQLite's
`julianday('now')`), and how history orders and shows versions; the conversions to
and from dates that every as-of reader shares."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_UNIX_EPOCH_JD = 2440587.5
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MICROS = 86_400_000_000
_UNIX_EPOCH_JD_MICROS = 210_866_760_000_000_000  # 2440587.5 days in microseconds


def julian_day(when: datetime) -> float:
    """The julian day of an aware (or UTC-naive) datetime, as SQLite's julianday() gives
    it: the same double for the same millisecond (one correctly rounded division of
    whole numbers, as SQLite's), so that `--as-of` a version's shown time includes it.
    (`2440587.5 + timestamp / 86400` is one ulp lower for about 1 moment in 500.)"""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    micros = (when - _UNIX_EPOCH) // timedelta(microseconds=1)
    return (micros + _UNIX_EPOCH_JD_MICROS) / _DAY_MICROS  # int / int: correctly rounded


def julian_day_now() -> float:
    """The julian day now (the clock the change log's julianday('now') reads)."""
    return _UNIX_EPOCH_JD + time.time() / 86400.0


def from_julian_day(jd: float) -> datetime:
    """The UTC datetime of a julian day (to the microsecond)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=jd - _UNIX_EPOCH_JD)


def shown_jd(jd: float) -> str:
    """A julian day for people: ISO 8601 UTC, to the nearest millisecond (a julian day
    holds a moment to about 50 microseconds), without a fraction on a whole second."""
    moment = from_julian_day(jd + 0.0005 / 86400)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
