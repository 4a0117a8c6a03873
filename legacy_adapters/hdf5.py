"""The legacy HDF5 window caches: a read-only source that never gets in a writer's way.

Promises to the legacy writers (h5py scripts that create, rewrite and append):
- files are opened with HDF5 file locking off (`locking=False`), read-only, and
  closed as soon as one pass over them is done; no handle is kept between passes;
- a file is only indexed once it is complete: its size and mtime have been stable
  for a debounce window, no process holds it open for writing (the write lock an
  h5py writer holds, read from /proc/locks, never taken), and it opens
  consistently (same stat before and after);
- windows are read in chunk-aligned slabs. For gzip (and shuffle) chunks the raw
  chunk bytes are fetched from HDF5 and inflated in worker threads (libdeflate or
  zlib, both without the GIL), so decompression uses every core; other filters go
  through h5py.

Two kinds of failure: `FileBusy` (being written, or changed under us: try again
later) and `BadFile` (truncated, corrupt, not HDF5, no known layout: quarantine).

This module holds the types the other parts share and the one way files are opened;
`hdf5_index` finds, inspects and fingerprints files, `hdf5_slabs` reads their windows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

DEFAULT_LAYOUTS: tuple[tuple[str, str], ...] = (("eeg", "labels"), ("data", "targets"))
DEFAULT_PATTERNS: tuple[str, ...] = ("*.h5", "*.hdf5")
# HDF5's answer to an open whose locking flags differ from an open already in this process.
_LOCKING_MISMATCH = "flag values don't match"
# HDF5 error texts that mean "someone is writing this file right now", not "corrupt".
_BUSY_MARKERS = ("already open for write", "unable to lock", "file locking",
                 "resource temporarily unavailable")


class Hdf5Error(Exception):
    """Base of the errors this source raises."""


class FileBusy(Hdf5Error):
    """The file is being written or changed while read: not an error, try again later."""


class BadFile(Hdf5Error):
    """The file cannot be used (truncated, corrupt, not HDF5, unknown layout): quarantine it."""


@dataclass(frozen=True)
class FileSig:
    """What changes when a file is written: size, mtime (ns) and inode (a rewrite via rename)."""

    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, path: Path) -> FileSig:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def document(self) -> dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "ino": self.ino}


@dataclass(frozen=True)
class Layout:
    """Which datasets hold the windows `(N, ...)` and the per-window labels `(N, ...)`."""

    windows: str
    labels: str


# -- opening ------------------------------------------------------------------------


def held_for_write(path: Path, locks: Path = Path("/proc/locks")) -> bool:
    """Whether a process holds a write lock on `path` (an h5py writer with HDF5's default
    file locking does, for as long as the file is open), read from /proc/locks without
    taking any lock ourselves. False where /proc/locks does not exist."""
    try:
        st = os.stat(path)
        text = locks.read_text()
    except OSError:
        return False
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[5] == ident and parts[3] == "WRITE":
            return True
    return False


def is_busy_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def open_h5(path: Path, **kwargs: Any) -> h5py.File:
    """Open read-only without HDF5 file locks (a legacy writer must never wait on syncd).

    HDF5 refuses a second open of a file that this process already has open with other
    locking flags (the legacy Dataset, a notebook: h5py's defaults). Such a file is then
    opened the way it is already open: the lock, if any, is already held by this
    process, so no writer is newly blocked.
    """
    for locking in (False, None, True):  # ours; h5py's default; an explicit locking=True
        try:
            return h5py.File(path, "r", locking=locking, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if _LOCKING_MISMATCH in str(exc):
                continue
            if is_busy_error(exc):
                raise FileBusy(f"being written ({short_error(exc)})") from None
            raise BadFile(f"cannot open as HDF5: {short_error(exc)}") from None
    raise FileBusy("already open in this process with HDF5 file access settings that do not "
                   "allow a second read-only open (e.g. open for writing); close that handle "
                   "or open it with h5py.File(path, 'r', locking=False)")


def short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__

def find_layout(f: h5py.File, layouts: Sequence[Layout]) -> Layout:
    for layout in layouts:
        w, lab = f.get(layout.windows), f.get(layout.labels)
        if isinstance(w, h5py.Dataset) and isinstance(lab, h5py.Dataset):
            return layout
    wanted = ", ".join(f"{lay.windows}+{lay.labels}" for lay in layouts)
    present = ", ".join(sorted(f.keys())[:10]) or "none"
    raise BadFile(f"no known windows/labels datasets (looked for {wanted}; found {present})")
