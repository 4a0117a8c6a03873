"""Why MongoDB failed, in one short line a person reads.

pymongo's server-selection errors carry every host's error with its configured
timeouts and a whole topology description (hundreds of characters). `/readyz`,
systemd's STATUS and `syncd status` show one line instead: "MongoDB at
127.0.0.1:27017 unreachable: connection refused"; the log keeps the full text.
"""

from __future__ import annotations

import re

from pymongo.errors import ConnectionFailure

from syncd.redact import scrub
from syncd.retry import BatchNotTaken

REFUSED_CODES = {13, 18}  # Unauthorized, AuthenticationFailed: settings, not an outage
_HOST_ERROR = re.compile(r"^(\S+:\d+): (?:\[Errno -?\d+\] )?(.+)$")


def unreachable_reason(text: str) -> str:
    """The first host's error of a server selection timeout, without pymongo's
    "(configured timeouts: ...)" and topology dump, and never an unclosed parenthesis."""
    text = text[:4000]  # 200 characters of it are shown: the rest never needs a look
    while (at := text.find("(configured timeouts:")) >= 0 and (end := text.find(")", at)) >= 0:
        text = text[:at].rstrip() + text[end + 1:]
    text = text.split(", Timeout:")[0].split(",")[0][:200].strip()
    while text.count("(") > text.count(")"):
        text = text[:text.rindex("(")].rstrip()
    return text


def mongo_reason(exc: BaseException) -> str:
    """One short line on why a MongoDB call failed (password-free)."""
    text = scrub(str(exc))
    if isinstance(exc, BatchNotTaken):  # the server answered: its own line, code and all
        return text
    if isinstance(exc, ConnectionFailure):
        first = unreachable_reason(text)
        found = _HOST_ERROR.match(first)
        if found:
            host, why = found.groups()
            return f"MongoDB at {host} unreachable: {why[:1].lower()}{why[1:]}"
        return f"MongoDB unreachable: {first or type(exc).__name__}"
    first = (text.splitlines() or [type(exc).__name__])[0].split(", full error")[0]
    return f"MongoDB: {first[:200]}"


def outage_line(what: str, error: str | None) -> str:
    """'MongoDB at HOST unreachable: ...' as it is, else 'WHAT unavailable: ERROR'."""
    if error and error.startswith(what):
        return error
    return f"{what} unavailable: {error}"
