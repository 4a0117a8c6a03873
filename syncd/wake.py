"""What wakes the daemon: file events on the legacy database, or a poll timeout.

watchdog (inotify on Linux) watches the database's directory for the db,
-journal and -wal files, so a legacy commit wakes the loop at once. On
filesystems without inotify (NFS) no event arrives; the loop then wakes every
`poll_seconds` and asks SQLite (`PRAGMA data_version`, the log's last seq) whether
anything was committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, names: set[str], event: threading.Event) -> None:
        self.names, self.event = names, event

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            name = Path(str(path)).name if path else ""
            if name in self.names:
                self.event.set()
                return


class Waker:
    """Sets `event` when one of `files` changes (their directories are watched)."""

    def __init__(self, files: Iterable[Path], event: threading.Event,
                 extra_dirs: Iterable[Path] = (), extra_event: threading.Event | None = None,
                 wants: Callable[[str], bool] | None = None) -> None:
        self.event = event
        self.observer = Observer()
        watched: dict[Path, set[str]] = {}
        for f in files:
            f = Path(f).resolve()
            watched.setdefault(f.parent, set()).update(
                {f.name, f.name + "-journal", f.name + "-wal"})
        for folder, names in watched.items():
            self.observer.schedule(_Handler(names, event), str(folder), recursive=False)
        # Other folders (the HDF5 caches) wake `extra_event` for paths `wants` accepts.
        for folder in extra_dirs:
            if Path(folder).is_dir():
                self.observer.schedule(_Matching(extra_event or event, wants),
                                       str(folder), recursive=True)

    def start(self) -> bool:
        try:
            self.observer.start()
        except OSError as exc:  # e.g. inotify limits: polling still works
            log.warning("file events unavailable (%s); polling instead", exc)
            return False
        return True

    def stop(self) -> None:
        if self.observer.is_alive():
            self.observer.stop()
            self.observer.join(timeout=5)


class _Matching(FileSystemEventHandler):
    def __init__(self, event: threading.Event, wants: Callable[[str], bool] | None) -> None:
        self.event, self.wants = event, wants

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and (self.wants is None or self.wants(str(path))):
                self.event.set()
                return
