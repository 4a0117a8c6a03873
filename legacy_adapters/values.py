"""How the sources read TEXT: decoded, or byte-exact when it is not valid UTF-8."""

from __future__ import annotations


class RawText(bytes):
    """A TEXT value whose bytes are not valid UTF-8 (as read by `text_factory`)."""


def text_factory(data: bytes) -> str | RawText:
    """sqlite3 text factory for the careful path: decode, or keep the raw bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return RawText(data)
