"""Say "no space left on device" and where, instead of a server's "internal server error"."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Below this much free space an embedded server's failure is put down to the disk.
LOW_BYTES = 1 << 20


def free_bytes(path: Path) -> int | None:
    """Free bytes (for an unprivileged writer) on the file system holding `path`."""
    for candidate in (Path(path), *Path(path).parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def no_space(path: Path, detail: str = "") -> str | None:
    """One line if `path`'s file system is full (or `detail` says it is), else None."""
    free = free_bytes(path)
    full_text = os.strerror(errno.ENOSPC).lower() in detail.lower()
    if not full_text and (free is None or free >= LOW_BYTES):
        return None
    left = f"; {free // 1024} KiB free" if free is not None else ""
    return f"no space left on device in {path}{left}: free some space or use another --state-dir"
