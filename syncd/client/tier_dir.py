"""Whether the local tier's directory is this user's alone.

A shard's checksum proves it whole, not who wrote it: another local user who can
write in the directory (one they made first, e.g. under /tmp, or one made loose by
hand) could plant a well-formed shard of a file generation, which would be served.
Such a directory is refused (syncd.client.local_tier turns the tier off).
"""

from __future__ import annotations

import os
from pathlib import Path


def refusal(directory: Path) -> str | None:
    """Why `directory` is not this user's alone ("": it is); None when it cannot be told
    (not made yet, or not readable: opening a shard there fails as it would anyway)."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by this user ({os.geteuid()})"
    if st.st_mode & 0o022:
        return f"writable by other users (mode {st.st_mode & 0o7777:04o})"
    return ""
