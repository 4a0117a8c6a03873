"""The local state directory (`--state-dir`): private, and never made by a mere reader.

It holds the embedded servers' data (every synced document, the Redis cache and its
`dump.rdb`), their logs and the daemon's status file, so it is created 0700 and,
while a command uses it, syncd runs with a umask of 077: the files it (and the
embedded servers it starts) create there are 0600. An existing directory that others
can enter (one made by an earlier syncd under a 022 umask) is made 0700, with a
warning. A directory syncd cannot create or write is a
configuration error naming `--state-dir`; a reading command (`status`, `experiments`,
`verify`, `cache stats`, ...) never creates one: it says where it looked and how to
point at the data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from syncd.embedded.endpoints import Endpoints
from syncd.errors import ConfigError

log = logging.getLogger(__name__)

# Commands that only read (or, `source`, only delete; `reconcile`, only ask the running
# daemon): they use the embedded servers' existing data, never make it.
READERS = frozenset({"status", "experiments", "cache", "dashboard", "restore", "source",
                     "verify", "reconcile"})
# Commands that use no state directory (`events` only looks for a running Redis).
NO_STATE = frozenset({"sample", "capture", "events"})
# Commands that use the embedded Redis (when no --redis-url) but not MongoDB.
REDIS_ONLY = frozenset({"cache"})
# Commands that use both; `run` also keeps its status file (daemon.json) there.
REDIS_TOO = frozenset({"warm", "run"})


def shown(path: Path) -> str:
    """`--state-dir PATH`, with the working directory when PATH is relative."""
    text = f"--state-dir {path}"
    if not path.is_absolute():
        with contextlib.suppress(OSError):
            text += f" (in {Path.cwd()})"
    return text


def prepare(path: Path) -> None:
    """Create `path` 0700 (or tighten it) and prove it is writable; else a ConfigError."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{shown(path)}: cannot create the state directory "
                          f"({exc.strerror or exc}); name a writable one with --state-dir "
                          "DIR (env: SYNCD_STATE_DIR)") from None
    _tighten(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{shown(path)}: the state directory is not writable "
                          f"({exc.strerror or exc}); name a writable one with --state-dir "
                          "DIR (env: SYNCD_STATE_DIR)") from None


def _tighten(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        os.chmod(path, 0o700)
    except OSError as exc:
        log.warning("%s is open to other users (mode %04o) and syncd cannot change that (%s); "
                    "it holds the synced data: chmod 700 it", shown(path), mode, exc.strerror)
        return
    log.warning("%s was open to other users (mode %04o); it holds the synced data, so syncd "
                "made it 0700", shown(path), mode)


def _uses(command: str, ends: Endpoints) -> tuple[bool, bool]:
    """(embedded MongoDB, embedded Redis) that `command` would run under the state dir."""
    mongo = command not in REDIS_ONLY and not ends.mongo_url
    redis = command in REDIS_ONLY | REDIS_TOO and not ends.redis_url
    return mongo, redis


def _require_existing(command: str, ends: Endpoints, mongo: bool) -> None:
    """A reader finds the data it would read, or says where it looked and how to point."""
    from syncd.embedded import EmbeddedMongo, EmbeddedRedis

    server = EmbeddedMongo(ends.state_dir) if mongo else EmbeddedRedis(ends.state_dir)
    if server.data.is_dir():
        return
    how = ("--state-dir DIR (where syncd migrate ran), or --mongo-url URL and --database NAME"
           if mongo else "--state-dir DIR (where syncd warm or run ran), or --redis-url URL")
    raise ConfigError(f"{shown(ends.state_dir)}: no syncd state found there (no embedded "
                      f"{server.kind} data); point at it with {how}")


@contextlib.contextmanager
def for_command(command: str, ends: Endpoints) -> Iterator[None]:
    """The state directory made ready for `command` (if it uses one), privately."""
    if command in NO_STATE:
        yield
        return
    mongo, redis = _uses(command, ends)
    if not (mongo or redis or command == "run"):
        yield
        return
    if command in READERS:
        _require_existing(command, ends, mongo)
    prepare(ends.state_dir)
    global _user_umask
    old = os.umask(0o077)
    _user_umask = old
    try:
        yield
    finally:
        os.umask(old)
        _user_umask = None


_user_umask: int | None = None


def user_umask() -> int:
    """The umask the user gave syncd (while a command runs with syncd's private 077):
    what files made for the user, not for syncd (a restored metadata.db), are made with."""
    if _user_umask is not None:
        return _user_umask
    current = os.umask(0)
    os.umask(current)
    return current
