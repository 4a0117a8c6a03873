"""The local tier: this host's directory of shards (syncd.client.shards), within a byte budget.

Redis is the fleet's shared cache; under it each training host keeps the file
generations it reads as uncompressed shards that every process maps (the page cache
is shared). In the directory (`[cache] local_dir`, mode 0700):

    KEY.shard   a complete, checksummed shard (KEY: path hash - generation hash)
    KEY.ok      its stamp: the shard's inode, size, mtime and ctime when its checksum was
                last proven, and the boot it was proven in; the stamp's own mtime
                is the shard's last use (least recently used shards go first)
    KEY.lock    held (flock, exclusive) by the one process filling KEY
    KEY.*.tmp   a fill in progress (exclusively flocked by its writer; one nobody
                holds is a killed fill's, and is removed)
    .tier.lock  held while the budget is counted and room is made
    .counters   hits, misses, fills and bad shards of every process (u64 each)

A process that maps a shard holds a shared flock on it (its lease); eviction takes
an exclusive one without waiting, so a shard in use is never evicted. A shard is
written under a temporary name at its full size (so concurrent fills count it),
checksummed and renamed into place: a kill -9 while filling leaves only a `.tmp`.
A shard whose stamp does not match (none yet, truncated, overwritten, another boot)
has its checksum read again before use; one that fails is a counted miss, removed
and rebuilt. syncd never truncates or overwrites a shard in place (see shards.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import util as mp_util
from pathlib import Path
from typing import Any

import numpy as np

from syncd.client.shards import (
    Generation,
    Shard,
    ShardError,
    ShardLayout,
    open_shard,
)
from syncd.client.tier_dir import refusal
from syncd.faults import crashpoint

log = logging.getLogger(__name__)

COUNTERS = ("hits", "misses", "fills", "bad")
_COUNTS = struct.Struct("<4Q")
FLUSH_SECONDS = 0.5


@dataclass(frozen=True)
class LocalTierOptions:
    """`[cache] local_dir` and `local_bytes`, resolved (syncd.api.local_tier)."""

    directory: Path
    budget: int  # bytes; 0: the tier is off


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class LocalTier:
    """One process' handle on the host's local tier (not thread-safe)."""

    def __init__(self, options: LocalTierOptions) -> None:
        self.directory = Path(options.directory)
        self.budget = int(options.budget)
        self.pid = os.getpid()
        self.counts = dict.fromkeys(COUNTERS, 0)  # this process', all of them
        self._pending = dict.fromkeys(COUNTERS, 0)  # not yet added to .counters
        self._flushed_at = 0.0
        self._finalizer: Any = None
        self.busy = False  # the last fill found another process filling the shard
        self._untrusted: str | None = None  # why the directory is refused ("": trusted)

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def untrusted(self, create: bool = False) -> str | None:
        """Why the directory is refused (None: it is this user's alone, or not made yet;
        syncd.client.tier_dir): such a directory turns the tier off, with one warning.
        Checked once per process, `create` making the directory (0700) first."""
        if self._untrusted is None:
            if create:
                self._ensure_dir()
            self._untrusted = refusal(self.directory)
            if self._untrusted:
                log.warning("local tier: %s is %s; another user could plant shards there, "
                            "so the local tier is off (chmod 700 it, or set [cache] local_dir "
                            "to a directory of your own)", self.directory, self._untrusted)
        return self._untrusted or None

    def path(self, gen: Generation, suffix: str = ".shard") -> Path:
        return self.directory / (gen.key() + suffix)

    # -- counters ----------------------------------------------------------------------

    def count(self, **deltas: int) -> None:
        """Add to this process' counters; they reach `.counters` at most every half second
        (and when the process exits or `flush` is called)."""
        for name, n in deltas.items():
            self.counts[name] += n
            self._pending[name] += n
        if self._finalizer is None or self.pid != os.getpid():
            self.pid = os.getpid()
            self._finalizer = mp_util.Finalize(self, self.flush, exitpriority=10)
        if time.monotonic() - self._flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Add this process' new counts to the directory's `.counters`."""
        self._flushed_at = time.monotonic()
        if not any(self._pending.values()):
            return
        try:
            self._ensure_dir()
            fd = os.open(self.directory / ".counters", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
        except OSError as exc:
            log.warning("local tier %s: counters not saved (%s)", self.directory, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _COUNTS.size, 0)
            old = _COUNTS.unpack(raw) if len(raw) == _COUNTS.size else (0,) * len(COUNTERS)
            os.pwrite(fd, _COUNTS.pack(*(o + self._pending[k] for o, k in zip(old, COUNTERS))),
                      0)
            self._pending = dict.fromkeys(COUNTERS, 0)
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def open(self, gen: Generation) -> Shard | None:
        """The shard of `gen`, mapped and leased; None when there is none (or a bad one,
        counted and removed so that a fill rebuilds it). Hits and misses are the caller's
        to count (by window)."""
        if not self.enabled or self.untrusted():
            return None
        path = self.path(gen)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        st = os.fstat(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.stat(path).st_ino != st.st_ino:
                raise FileNotFoundError(path)  # evicted or replaced meanwhile
            stamp = self._stamp(gen)
            proven = stamp == self._stamp_of(st)
            shard = open_shard(fd, gen, verify=not proven)
        except FileNotFoundError:
            os.close(fd)
            return None
        except (ShardError, OSError, ValueError) as exc:
            os.close(fd)
            log.warning("local tier: %s is not a good shard of %s (%s); rebuilding it",
                        path, gen.path, exc)
            self.count(bad=1)
            self._remove(gen, only_ino=st.st_ino)
            return None
        if not proven:
            self._write_stamp(gen, st)
        with contextlib.suppress(OSError):
            os.utime(self.path(gen, ".ok"))  # last use, for eviction
        return shard

    def _stamp_of(self, st: os.stat_result) -> dict[str, Any]:
        return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns, "boot": _boot_id()}

    def _stamp(self, gen: Generation) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(gen, ".ok").read_bytes())
        except (OSError, ValueError):
            return None

    def _write_stamp(self, gen: Generation, st: os.stat_result) -> None:
        tmp = self.path(gen, f".{os.getpid()}.{secrets.token_hex(4)}.oktmp")
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self._stamp_of(st)))
            os.replace(tmp, self.path(gen, ".ok"))
        with contextlib.suppress(OSError):
            tmp.unlink()

    def _remove(self, gen: Generation, only_ino: int | None) -> None:
        """Unlink a shard (never truncate it: mappings of it stay valid) and its stamp."""
        path = self.path(gen)
        with contextlib.suppress(OSError):
            if only_ino is None or os.stat(path).st_ino == only_ino:
                path.unlink()
        with contextlib.suppress(OSError):
            self.path(gen, ".ok").unlink()

    # -- filling -------------------------------------------------------------------------

    def fill(self, gen: Generation, n: int, shape: tuple[int, ...], label_dtype: np.dtype,
             label_shape: tuple[int, ...],
             write: Callable[[np.ndarray, np.ndarray], None], wait: bool = False
             ) -> Shard | None:
        """Build `gen`'s shard with `write(windows, labels)` (it fills both arrays of the
        new file, or raises) and return it mapped. None: another process is filling it
        (unless `wait`), or it does not fit the budget beside the shards in use."""
        if not self.enabled:
            return None
        self._ensure_dir()
        if self.untrusted():
            return None
        with self._locked(self.path(gen, ".lock"), wait) as got:
            self.busy = not got
            if not got:
                return None
            shard = self.open(gen)  # filled by another process while we waited
            if shard is not None:
                return shard
            layout, header = ShardLayout.plan(gen, n, shape, np.dtype(label_dtype),
                                              label_shape)
            tmp = self.path(gen, f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = self._reserve(gen, layout.size, tmp)
            if fd is None:
                return None
            try:
                self._write(fd, gen, layout, header, write)
                os.rename(tmp, self.path(gen))
                self._write_stamp(gen, os.fstat(fd))  # its checksum was just computed
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            finally:
                os.close(fd)
            self.count(fills=1)
            return self.open(gen)

    def _write(self, fd: int, gen: Generation, layout: ShardLayout, header: bytes,
               write: Callable[[np.ndarray, np.ndarray], None]) -> None:
        mm = mmap.mmap(fd, layout.size)
        try:
            windows = np.ndarray((layout.n, *layout.shape), np.float32, mm, layout.header)
            labels = np.ndarray((layout.n, *layout.label_shape), layout.label_dtype, mm,
                                layout.labels_at)
            write(windows, labels)
            del windows, labels
            crashpoint("local_fill")
            os.pwrite(fd, layout.header_bytes(gen, layout.checksum(gen, mm)), 0)
        finally:
            mm.close()

    def _reserve(self, gen: Generation, size: int, tmp: Path) -> int | None:
        """Under the directory lock: old generations of the file and, least recently used
        first, unused shards go until `size` more bytes fit; then the temporary file is
        made at full size, its blocks allocated (so other fills count it, and a full disk
        fails here). Its fd (exclusively flocked), or None."""
        with self._locked(self.directory / ".tier.lock", True):
            for old in self.directory.glob(gen.key().split("-")[0] + "-*.shard"):
                if old.name != gen.key() + ".shard":
                    self._evict(old)
            entries = self._entries()
            used = sum(e[2] for e in entries)
            claimed: list[tuple[Path, int]] = []  # unlinked only if that makes room enough
            try:
                for path, _, bytes_ in sorted((e for e in entries if e[0].suffix == ".shard"),
                                              key=lambda e: e[1]):
                    if used + size <= self.budget:
                        break
                    fd = self._claim(path)
                    if fd is not None:
                        claimed.append((path, fd))
                        used -= bytes_
                if used + size > self.budget:
                    log.info("local tier: %s (%d bytes) does not fit the %d-byte budget "
                             "beside the shards in use; serving it from Redis", gen.path, size,
                             self.budget)
                    return None
                for path, _ in claimed:
                    self._unlink(path)
            finally:
                for _, fd in claimed:
                    os.close(fd)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # blocks allocated now: a full disk is an error here, not a SIGBUS
                os.posix_fallocate(fd, 0, size)  # while writing through the mapping
            except OSError:
                os.close(fd)
                tmp.unlink()
                raise
            return fd

    def _entries(self) -> list[tuple[Path, float, int]]:
        """(path, last use, bytes) of every shard and live fill; killed fills are removed."""
        out = []
        for path in self.directory.iterdir():
            if path.suffix == ".tmp" and self._evict(path):
                continue  # nobody held it: a killed fill's
            if path.suffix not in (".shard", ".tmp"):
                continue
            try:
                size = path.stat().st_size
                used = path.with_suffix(".ok").stat().st_mtime \
                    if path.suffix == ".shard" else time.time()
            except OSError:
                used = 0.0
                with contextlib.suppress(OSError):
                    size = path.stat().st_size
            out.append((path, used, size))
        return out

    def _evict(self, path: Path) -> bool:
        """Unlink `path` (and its stamp and fill lock) unless a process holds it."""
        if (fd := self._claim(path)) is None:
            return False
        try:
            return self._unlink(path)
        finally:
            os.close(fd)

    def _claim(self, path: Path) -> int | None:
        """`path` opened and exclusively flocked; None: a process holds it, or it is gone."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _unlink(self, path: Path) -> bool:
        """Unlink a claimed file, and a shard's stamp and fill lock with it."""
        try:
            path.unlink()
        except OSError:
            return False
        if path.suffix == ".shard":
            for suffix in (".ok", ".lock"):
                with contextlib.suppress(OSError):
                    path.with_suffix(suffix).unlink()
        return True

    @contextlib.contextmanager
    def _locked(self, path: Path, wait: bool) -> Iterator[bool]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- statistics ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The tier on this host: directory, budget, bytes and shards, and the counters of
        every process that used it."""
        shards = []
        filling = 0
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if path.suffix == ".shard":
                        shards.append(path.stat().st_size)
                    elif path.suffix == ".tmp":
                        filling += 1
        counts = dict.fromkeys(COUNTERS, 0)
        with contextlib.suppress(OSError):
            raw = (self.directory / ".counters").read_bytes()
            if len(raw) == _COUNTS.size:
                counts = dict(zip(COUNTERS, _COUNTS.unpack(raw)))
        return {"directory": str(self.directory), "budget_bytes": self.budget,
                "enabled": self.enabled, "bytes": sum(shards), "shards": len(shards),
                "filling": filling, **counts}
