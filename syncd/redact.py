"""Keep secrets out of every line syncd prints or logs.

Passwords come from URLs (mongodb://user:pw@host, redis://:pw@host). They are
registered once when settings load; `scrub` masks them wherever they appear, and
`SecretFilter` applies that to every log record.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)@")
_secrets: set[str] = set()


def redact_url(url: str | None) -> str:
    """The URL with any password replaced by `***`."""
    if not url:
        return ""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***@", url)


def register_url(url: str | None) -> None:
    """Remember the password in `url` so that `scrub` hides it anywhere."""
    if not url:
        return
    for match in _URL_PASSWORD.finditer(url):
        pw = match.group("pw")
        if pw:
            _secrets.add(pw)
            _secrets.add(unquote(pw))


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
