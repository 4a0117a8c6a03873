"""Finding and indexing HDF5 window caches: which files, whether complete, what is in them.

`inspect` opens a file once (without locks, see `legacy_adapters.hdf5`), reads its
structure but no window data, and checks that it did not change meanwhile;
`fingerprint` hashes its bytes so a touched file keeps its generation.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from legacy_adapters.hdf5 import (
    DEFAULT_PATTERNS,
    BadFile,
    FileBusy,
    FileSig,
    Layout,
    find_layout,
    held_for_write,
    is_busy_error,
    open_h5,
    short_error,
)

# Numeric kinds only: float, signed and unsigned integers, booleans. Nothing that
# needs an object or a structured decoder is ever cached.
ALLOWED_KINDS = frozenset("fiub")
HASH_BLOCK = 8 << 20


@dataclass
class DatasetInfo:
    name: str
    shape: list[int]
    dtype: str
    chunks: list[int] | None
    compression: str | None
    compression_opts: Any
    shuffle: bool
    filters: list[str]

    def document(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": self.dtype, "chunks": self.chunks,
                "compression": self.compression, "compression_opts": self.compression_opts,
                "shuffle": self.shuffle, "filters": self.filters}


@dataclass
class FileInfo:
    """Everything indexing learns about one complete file."""

    path: Path
    sig: FileSig
    layout: Layout
    datasets: dict[str, DatasetInfo]
    attrs: dict[str, Any]
    n_windows: int
    window_shape: list[int]
    window_dtype: str  # native byte order, numpy `dtype.str`
    label_shape: list[int]
    label_dtype: str
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def window_bytes(self) -> int:
        return int(np.dtype(self.window_dtype).itemsize * math.prod(self.window_shape))


# -- finding files --------------------------------------------------------------------


def list_files(dirs: Iterable[Path], patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[Path]:
    """Every file under `dirs` (recursively) whose name matches one of `patterns`, sorted."""
    found: set[Path] = set()
    for top in dirs:
        for root, subdirs, names in os.walk(top):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in names:
                if not name.startswith(".") and matches(name, patterns):
                    found.add(Path(root, name).absolute())
    return sorted(found)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def json_safe(value: Any, limit: int = 1000) -> Any:
    """An HDF5 attribute as a JSON/BSON-safe value (bytes decoded, arrays as lists)."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value)[:limit].hex()
    if isinstance(value, np.ndarray):
        if value.size > limit:
            return {"dtype": value.dtype.str, "shape": list(value.shape), "truncated": True}
        return [json_safe(v, limit) for v in value.tolist()] if value.ndim else \
            json_safe(value.item(), limit)
    if isinstance(value, np.generic):
        return json_safe(value.item(), limit)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v, limit) for v in value[:limit]]
    if isinstance(value, h5py.Empty):
        return None
    return str(value)


def _dataset_info(name: str, ds: h5py.Dataset) -> DatasetInfo:
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[3].decode(errors="replace") for i in range(plist.get_nfilters())]
    opts = ds.compression_opts
    return DatasetInfo(name, [int(n) for n in ds.shape], ds.dtype.str,
                       list(ds.chunks) if ds.chunks else None, ds.compression,
                       json_safe(opts), bool(ds.shuffle), filters)


def _check_numeric(name: str, ds: h5py.Dataset) -> np.dtype:
    dtype = ds.dtype
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise BadFile(f"dataset {name!r} has dtype {dtype} (only numeric and boolean dtypes "
                      "are cached)")
    return dtype.newbyteorder("=")


def inspect(path: Path, layouts: Sequence[Layout], with_fingerprint: bool = True,
            workers: int = 2) -> FileInfo:
    """Open `path` once, read its structure (no window data), close it; check consistency.

    Raises FileBusy when the file changes while being read, BadFile when it is unusable.
    """
    path = Path(path)
    before = FileSig.of(path)
    if held_for_write(path):
        raise FileBusy("open for writing by another process")
    try:
        with open_h5(path) as f:
            layout = find_layout(f, layouts)
            windows, labels = f[layout.windows], f[layout.labels]
            wdtype = _check_numeric(layout.windows, windows)
            ldtype = _check_numeric(layout.labels, labels)
            if windows.ndim < 2:
                raise BadFile(f"dataset {layout.windows!r} has shape {windows.shape}: expected "
                              "(N, channels, times)")
            if labels.ndim < 1 or labels.shape[0] != windows.shape[0]:
                raise BadFile(f"{layout.labels!r} has shape {labels.shape} but "
                              f"{layout.windows!r} has {windows.shape[0]} windows")
            datasets = {}
            for name, obj in _walk(f):
                datasets[name] = _dataset_info(name, obj)
            attrs = {str(k): json_safe(_attr(f, k)) for k in f.attrs}
            info = FileInfo(path, before, layout, datasets, attrs, int(windows.shape[0]),
                            [int(n) for n in windows.shape[1:]], wdtype.str,
                            [int(n) for n in labels.shape[1:]], ldtype.str)
    except (FileBusy, BadFile, FileNotFoundError):
        raise
    except Exception as exc:  # h5py raises many kinds (KeyError, OSError, RuntimeError ...)
        if FileSig.of(path) != before or is_busy_error(exc):
            raise FileBusy(f"changed while being read ({short_error(exc)})") from None
        raise BadFile(f"unreadable: {short_error(exc)}") from None
    if with_fingerprint:
        info.fingerprint = fingerprint(path, workers)
    if FileSig.of(path) != before:
        raise FileBusy("changed while being indexed")
    return info


def _attr(f: h5py.File, key: str) -> Any:
    try:
        return f.attrs[key]
    except Exception as exc:  # an attribute of a type h5py cannot read
        return f"<unreadable: {type(exc).__name__}>"


def _walk(f: h5py.File, limit: int = 100) -> list[tuple[str, h5py.Dataset]]:
    out: list[tuple[str, h5py.Dataset]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and len(out) < limit:
            out.append((name, obj))

    f.visititems(visit)
    return out


def fingerprint(path: Path, workers: int = 2) -> str:
    """A SHA-256 tree hash of the file's bytes: 8 MiB blocks hashed in parallel threads
    (hashlib releases the GIL; SHA-256 uses the CPU's SHA instructions where it has
    them), then the size and the block digests hashed together. Two files with the
    same fingerprint hold the same bytes."""
    size = os.path.getsize(path)
    starts = range(0, size, HASH_BLOCK)

    def block(start: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            return hashlib.sha256(handle.read(HASH_BLOCK)).digest()

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="syncd-hash") as pool:
        digests = list(pool.map(block, starts))
    top = hashlib.sha256(size.to_bytes(8, "big"))
    for d in digests:
        top.update(d)
    return "sha256-tree:" + top.hexdigest()


def wait_stable(path: Path, debounce: float, seen: dict[Path, tuple[FileSig, float]],
                now: float | None = None) -> tuple[bool, FileSig]:
    """Whether `path` has kept the same size/mtime/inode for `debounce` seconds.

    Stable when its mtime is at least `debounce` old, or when `seen` (the caller's
    memory of earlier looks) shows the same signature for that long.
    """
    sig = FileSig.of(path)
    mono = time.monotonic() if now is None else now
    age = time.time() - sig.mtime_ns / 1e9
    prev = seen.get(path)
    if prev is None or prev[0] != sig:
        seen[path] = (sig, mono)
        prev = seen[path]
    return (age >= debounce or mono - prev[1] >= debounce), sig
