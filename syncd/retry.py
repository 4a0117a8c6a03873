"""Capped exponential backoff with full jitter, and which failures are worth retrying."""

from __future__ import annotations

import random

from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, OperationFailure

from syncd.redact import scrub

# Server states that pass: elections, shutdowns, a primary stepping down.
TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}


class Backoff:
    """Delay before retry n = 0, 1, 2, ...: uniform in [0, c], c = min(cap, base * 2**n).

    "Full jitter" (the AWS Architecture Blog's recommendation): restarted clients
    spread their retries over the whole interval instead of retrying in lockstep.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def mongo_unavailable(exc: BaseException) -> bool:
    """The target is unreachable or between primaries: wait and retry."""
    if isinstance(exc, ConnectionFailure):
        return True
    return isinstance(exc, OperationFailure) and exc.code in TRANSIENT_CODES


class BatchNotTaken(AutoReconnect):
    """A batch a reachable MongoDB did not take (`raise_if_passing`): an outage whose
    message is its one line as it is (syncd.connect.reasons), never "unreachable"."""


def raise_if_passing(exc: BulkWriteError) -> None:
    """A replica set between primaries: a document refused as the primary stepped down
    (InterruptedDueToReplStateChange, NotWritablePrimary, ...), or a write concern not
    met (the writes may be rolled back). Neither is the document's fault nor done: the
    caller's outage path retries the batch whole (its writes are idempotent); it is
    never quarantined, nor counted as written."""
    codes = {e.get("code") for e in exc.details.get("writeErrors", [])}
    concern = exc.details.get("writeConcernErrors") or []
    if codes & TRANSIENT_CODES or concern:
        first = concern[0] if concern else next(e for e in exc.details["writeErrors"]
                                                if e.get("code") in TRANSIENT_CODES)
        raise BatchNotTaken(f"MongoDB did not take the batch: "
                            f"{scrub(str(first.get('errmsg')))[:160]} (code {first.get('code')})"
                            ) from exc
