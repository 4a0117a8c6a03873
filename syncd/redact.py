"""Keep secrets out of every line syncd prints or logs.

Passwords come from URLs (mongodb://user:pw@host, redis://:pw@host). They are
registered once when settings load; `scrub` masks them wherever they appear, and
`SecretFilter` applies that to every log record.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

# A URL up to whatever ends it in a message (space, quote, bracket). Its userinfo is
# everything before the LAST "@" (a raw "@", ":" or "/" in a password is common), so a
# password is never cut short; an "@" further on (in a query) only masks more.
_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>[^\s'\"<>`]*)")
_secrets: set[str] = set()


def _split(rest: str) -> tuple[str, str, str] | None:
    """(user:, password, @host...) of the part of a URL after `scheme://`, or None."""
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo = rest[:at]
    colon = userinfo.find(":")
    if colon < 0 or colon == len(userinfo) - 1:
        return None  # a user name alone is no secret
    return userinfo[:colon + 1], userinfo[colon + 1:], rest[at:]


def _mask(match: re.Match[str]) -> str:
    parts = _split(match.group("rest"))
    if parts is None:
        return match.group(0)
    return match.group("scheme") + parts[0] + "***" + parts[2]


def redact_url(url: str | None) -> str:
    """The URL (or any text with URLs in it) with every password replaced by `***`."""
    if not url:
        return ""
    return _URL.sub(_mask, url)


def register_url(url: str | None) -> None:
    """Remember the password in `url` so that `scrub` hides it anywhere."""
    if not url:
        return
    for match in _URL.finditer(url):
        parts = _split(match.group("rest"))
        if parts is not None:
            _secrets.add(parts[1])
            _secrets.add(unquote(parts[1]))


def register_secret(secret: str | None) -> None:
    """Remember a secret that is not in a URL (an HTTP token, a password)."""
    if secret:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """`text` with URL passwords and every registered secret masked."""
    text = redact_url(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


class SecretFilter(logging.Filter):
    """A logging filter that scrubs the formatted message of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message or record.exc_info:
            record.msg, record.args = clean, None
        if record.exc_info:
            # The traceback text could carry a URL too: format it now, scrubbed.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
