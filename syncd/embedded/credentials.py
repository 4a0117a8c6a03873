"""The embedded servers' generated passwords: one file each, 0600 from the first byte.

The servers listen on TCP loopback, which every local account can reach; the 0700
state directory alone does not keep a neighbour out. Each server therefore requires a
password that syncd generates once and keeps in `<state>/<mongo|redis>/credentials`,
readable by the state directory's user only, so that every syncd command and
`CachedWindowDataset` of that user find it without anyone typing it. The file is
created with mode 0600 by `os.open` (never world-readable, even for a moment, whatever
the umask) and linked into place only once complete, so a reader never sees half of
it. Every password read is registered with `syncd.redact`, so it is masked wherever
it might be printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from syncd.errors import ConfigError
from syncd.redact import register_secret

log = logging.getLogger(__name__)

FILE_MODE = 0o600


def read(path: Path) -> str | None:
    """The password kept at `path`, or None when there is none (yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the embedded server's password file {path} "
                          f"({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:  # someone loosened it: close it again, and say what happened
            try:
                os.fchmod(handle.fileno(), FILE_MODE)
                done = "syncd made it 0600"
            except OSError as exc:
                done = f"syncd could not make it 0600 ({exc.strerror or exc}): do it"
            log.warning("%s was readable by other users (mode %04o); %s", path, mode, done)
        password = handle.read().decode("ascii", errors="replace").strip()
    if not password:
        return None
    register_secret(password)
    return password


def _private_temp(path: Path) -> tuple[Path, int]:
    """A new temporary file beside `path`, 0600 from its creation (never a link that
    was planted there): its path and a descriptor open for writing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)


def ensure(path: Path) -> str:
    """The password kept at `path`, generated and stored (0600) if there is none."""
    found = read(path)
    if found is not None:
        return found
    password = secrets.token_hex(32)  # hex: safe in a URL, a redis.conf line, a TOML
    register_secret(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _private_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(password.encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # then another process made it: theirs
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    kept = read(path)
    if kept is None:
        raise ConfigError(f"cannot keep the embedded server's password in {path}")
    return kept


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600 from creation), replacing it whole: for files that
    hold a password, such as the embedded Redis's redis.conf."""
    tmp, fd = _private_temp(path)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
