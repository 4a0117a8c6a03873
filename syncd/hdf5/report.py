"""What one HDF5 pass did: the report `syncd warm` prints and `syncd run` keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScanReport:
    """What one pass did (also what `syncd warm --json` prints)."""

    files: int = 0
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    pending: list[str] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warmed: list[str] = field(default_factory=list)
    changed_while_warming: list[str] = field(default_factory=list)
    metadata_repaired: list[str] = field(default_factory=list)  # unreadable, written again
    windows_written: int = 0
    window_bytes: int = 0
    features_written: int = 0
    windows_trimmed: int = 0
    windows_cached: int = 0
    windows_total: int = 0
    budget_bytes: int = 0
    used_bytes: int = 0
    redis_error: str | None = None
    mongo_error: str | None = None
    seconds: float = 0.0
    workers: int = 0  # threads inflating chunks and hashing files ([hdf5] warm_workers)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def merge(self, later: ScanReport) -> None:
        """Fold a later pass (of the same run) into this one."""
        for name in ("indexed", "quarantined", "removed", "warmed", "changed_while_warming",
                     "metadata_repaired"):
            getattr(self, name).extend(getattr(later, name))
        for name in ("windows_written", "window_bytes", "features_written", "windows_trimmed",
                     "seconds"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        for name in ("files", "unchanged", "pending", "windows_cached", "windows_total",
                     "budget_bytes", "used_bytes", "redis_error", "mongo_error", "workers"):
            setattr(self, name, getattr(later, name))
