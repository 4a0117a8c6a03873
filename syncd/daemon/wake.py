"""What wakes the daemon: file events on the legacy database, or a poll timeout.

watchdog (inotify on Linux) watches the database's directory for the db,
-journal and -wal files, so a legacy commit wakes the loop at once. On
filesystems without inotify (NFS) no event arrives; the loop then wakes every
`poll_seconds` and asks SQLite (`PRAGMA data_version`, the log's last seq) whether
anything was committed.

Only the events that can end a commit are subscribed to. One legacy write (new
connection, INSERT, commit, close) makes about a dozen inotify events (opens,
closes, every write() to the db and its journal, the directory's own changes);
watchdog turns each into Python objects on three threads, which at a few hundred
commits a second costs the daemon 40-60 % of a core. In rollback-journal DELETE
mode (SQLite's default, the legacy scripts' mode) every commit ends by deleting
`-journal`: one event per commit. A database in WAL mode, or one whose journal is
kept between transactions (PERSIST/TRUNCATE), commits by writing, so there
modifications are watched too. The mode is judged when the daemon starts; if a
legacy script switches the database to WAL while it runs, the poll finds its
commits (within `poll_seconds`) until the next start. The HDF5 cache folders get
the change events only: a training script opening a cache to read it woke an HDF5
pass per open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

# A commit in rollback-journal DELETE mode deletes -journal; a moved or deleted db
# (replaced, restored) is worth a look too.
DELETE_MODE_EVENTS: list[type[FileSystemEvent]] = [FileDeletedEvent, FileMovedEvent]
# Any other journal mode: commits show up as writes (and closes after writing).
WRITE_EVENTS: list[type[FileSystemEvent]] = [FileModifiedEvent, FileClosedEvent,
                                             FileDeletedEvent, FileMovedEvent,
                                             FileCreatedEvent]


def commit_events(db: Path) -> list[type[FileSystemEvent]]:
    """The file events that can mean a commit to `db`, judged from its files now.

    WAL is recorded in the database header (bytes 18-19 are 2); a `-journal` that
    exists while nobody writes is a PERSIST or TRUNCATE journal (or a DELETE-mode
    write in progress: then the wider set is merely more events, never fewer).
    """
    try:
        with Path(db).open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return WRITE_EVENTS
    wal = len(header) >= 20 and header[18] == 2
    journal = Path(str(db) + "-journal").exists()
    return WRITE_EVENTS if wal or journal else DELETE_MODE_EVENTS


class _Handler(FileSystemEventHandler):
    def __init__(self, names: set[str], event: threading.Event,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.names, self.event, self.on_commit = names, event, on_commit

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            name = Path(str(path)).name if path else ""
            if name in self.names:
                if self.on_commit is not None:
                    self.on_commit()
                self.event.set()
                return


class Waker:
    """Sets `event` when one of `files` changes (their directories are watched), and
    calls `on_commit` for each such event (the loop's pacer counts them)."""

    def __init__(self, files: Iterable[Path], event: threading.Event,
                 extra_dirs: Iterable[Path] = (), extra_event: threading.Event | None = None,
                 wants: Callable[[str], bool] | None = None,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.event = event
        self.observer = Observer()
        watched: dict[Path, set[str]] = {}
        kinds: dict[Path, set[type[FileSystemEvent]]] = {}
        for f in files:
            f = Path(f).resolve()
            watched.setdefault(f.parent, set()).update(
                {f.name, f.name + "-journal", f.name + "-wal"})
            kinds.setdefault(f.parent, set()).update(commit_events(f))
        for folder, names in watched.items():
            handler = _Handler(names, event, on_commit)
            try:
                self.observer.schedule(handler, str(folder), recursive=False,
                                       event_filter=sorted(kinds[folder], key=str))
            except TypeError:  # a watchdog without event_filter: every event
                self.observer.schedule(handler, str(folder), recursive=False)
        # Other folders (the HDF5 caches) wake `extra_event` for paths `wants` accepts,
        # on changes only: a reader's opens and closes (training, syncd's own reads) are
        # not subscribed to, or each would cost a pass.
        for folder in extra_dirs:
            if Path(folder).is_dir():
                handler = _Matching(extra_event or event, wants)
                try:
                    self.observer.schedule(handler, str(folder), recursive=True,
                                           event_filter=WRITE_EVENTS)
                except TypeError:  # a watchdog without event_filter: every event
                    self.observer.schedule(handler, str(folder), recursive=True)

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
