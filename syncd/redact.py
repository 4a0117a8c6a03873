"""Keep secrets out of every line syncd prints or logs.

Passwords come from URLs (mongodb://user:pw@host, redis://:pw@host,
redis://host/0?password=pw). They are registered once when settings load; `scrub`
masks them wherever they appear, and `SecretFilter` applies that to every log record.

Everything here runs on every string the dashboard, the CLI and the logs show,
including legacy values nobody checked (a pasted traceback, a 1 MB `notes`), so
each step is one forward pass over the text: `str.find` for `://`, one character
class matched once for where a URL ends, `rfind`/`find` inside it. No pattern here can
backtrack, so the cost is linear in the text whatever its shape.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

# What ends a URL in a message: whitespace, a quote, a bracket, a backtick. A single
# character class with nothing after it: `match` takes it in one pass, with nothing to
# backtrack to (and no possessive quantifier, which Python 3.10 cannot read).
_URL_END = re.compile(r"[^\s'\"<>`]*")
# What separates query parameters (MongoDB also accepts ";").
_PARAM_SEP = re.compile(r"[?&;]")
# A query parameter whose name has one of these in it carries a password
# (redis://host/0?password=X, ?tlsCertificateKeyFilePassword=X, ?token=X); MongoDB's
# `authMechanismProperties` carries tokens inside its value (AWS_SESSION_TOKEN:X).
_SECRET_PARAM = ("pass", "pwd", "secret", "token", "authmechanismproperties")
# Shorter registered secrets (and whitespace-only ones) are ignored: masking every
# " " or "a" in every line would garble the logs and hide nothing worth hiding.
MIN_SECRET = 4
_secrets: set[str] = set()


def _urls(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of what follows each `scheme://` in `text`, up to what ends the URL.

    The scheme itself needs no parsing: it is kept as it is, and text before `://` is
    never masked. Each character is looked at a bounded number of times.
    """
    pos = 0
    while (sep := text.find("://", pos)) >= 0:
        start = sep + 3
        end = _URL_END.match(text, start).end()  # type: ignore[union-attr]  # always matches
        yield start, end
        pos = end


def _secret_param(key: str) -> bool:
    name = (unquote(key) if "%" in key else key).lower()
    return any(word in name for word in _SECRET_PARAM)


def _spans(rest: str) -> list[tuple[int, int]]:
    """Where the passwords are in `rest` (a URL after `scheme://`): query values of
    password-like parameters, and the userinfo's password.

    The userinfo is everything before the LAST "@" (a raw "@", ":" or "/" in a
    password is common), so a password is never cut short; an "@" further on (in a
    query) only masks more. The spans may overlap: `_merged` joins them.
    """
    spans: list[tuple[int, int]] = []
    query = rest.find("?")
    if query >= 0 and ("%" in rest or any(w in rest.lower() for w in _SECRET_PARAM)):
        bounds = [m.start() for m in _PARAM_SEP.finditer(rest, query)] + [len(rest)]
        for begin, end in itertools.pairwise(bounds):
            eq = rest.find("=", begin + 1, end)
            if eq > begin + 1 and eq + 1 < end and _secret_param(rest[begin + 1:eq]):
                spans.append((eq + 1, end))
    at = rest.rfind("@")
    if at > 0:
        colon = rest.find(":", 0, at)
        if 0 <= colon < at - 1:  # a user name alone is no secret
            spans.append((colon + 1, at))
    return spans


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if len(spans) < 2:
        return spans
    out: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if out and begin <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((begin, end))
    return out


def redact_url(url: str | None) -> str:
    """The URL (or any text with URLs in it) with every password replaced by `***`."""
    if not url:
        return ""
    if "@" not in url and "?" not in url:
        return url  # no userinfo and no query anywhere: one pass in C, the common case
    pieces: list[str] = []
    pos = 0
    for start, end in _urls(url):
        if url.find("@", start, end) < 0 and url.find("?", start, end) < 0:
            continue  # no userinfo, no query: nothing to mask (the common case)
        rest = url[start:end]
        for begin, stop in _merged(_spans(rest)):
            pieces += [url[pos:start + begin], "***"]
            pos = start + stop
    if not pieces:
        return url
    pieces.append(url[pos:])
    return "".join(pieces)


_PAIRS_KEY = "authmechanismproperties="
_PAIRS_WINDOW = 3 * len(_PAIRS_KEY)  # the key, every character percent-encoded


def register_url(url: str | None) -> None:
    """Remember the passwords in `url` so that `scrub` hides them anywhere."""
    if not url:
        return
    for start, end in _urls(url):
        rest = url[start:end]
        for begin, stop in _spans(rest):
            # authMechanismProperties holds KEY:TOKEN pairs, each token a secret alone; a
            # password's pieces are not (its ':' or ',' is part of it)
            # (the key is read from a bounded window: a scan of all before each span
            # made a megabyte of short parameters quadratic)
            window = rest[max(0, begin - _PAIRS_WINDOW):begin]
            pairs = unquote(_PARAM_SEP.split(window)[-1]).lower() == _PAIRS_KEY
            for value in {rest[begin:stop], unquote(rest[begin:stop])}:
                register_secret(value)
                for item in value.split(",") if pairs else ():
                    register_secret(item.partition(":")[2])


def register_secret(secret: str | None) -> None:
    """Remember a secret that is not in a URL (an HTTP token, a password).

    Whitespace-only or very short values are not remembered: masking them everywhere
    would turn every space (or every "a") in the logs into `***`.
    """
    if secret and len(secret.strip()) >= MIN_SECRET:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """`text` with URL passwords and every registered secret masked."""
    text = redact_url(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
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


# A config key or field name whose value is a credential: shown as `***` wherever
# syncd shows legacy config (the dashboard, `syncd experiments ... [--json]`).
SECRET_KEY = re.compile(r"pass|secret|token|credential|api_?key|auth", re.I)


def secret_key(name: str) -> bool:
    """Whether a field named `name` holds a credential (its value is never shown)."""
    return bool(name) and SECRET_KEY.search(name) is not None


def mask_secrets(value: Any, key: str = "") -> Any:
    """`value` with what sits under a secret-looking key (at any depth) as `***`."""
    if key and value is not None and secret_key(key):
        return "***"
    if isinstance(value, Mapping):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value
