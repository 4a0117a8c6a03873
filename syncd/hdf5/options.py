"""The `[hdf5]` and `[cache]` settings (and `--hdf5-dir`), checked once into an `Hdf5Config`.

A bad value fails here, before any server starts, with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legacy_adapters.hdf5 import DEFAULT_LAYOUTS, DEFAULT_PATTERNS, Layout
from legacy_adapters.hdf5_slabs import default_workers
from syncd.config import Settings, section
from syncd.errors import ConfigError
from syncd.hdf5.features import FeatureConfig, load_feature_config
from syncd.sinks.cache import DEFAULT_PREFIX, MAX_VALUE_BYTES

HDF5_DEFAULTS: dict[str, Any] = {
    "layouts": [list(pair) for pair in DEFAULT_LAYOUTS],
    "patterns": list(DEFAULT_PATTERNS),
    "debounce_seconds": 2.0,
    "settle_seconds": 30.0,
    "warm_workers": 0,  # 0: one per usable CPU, at most 8 (hdf5_slabs.default_workers)
    "workers": None,  # the old name of warm_workers, still accepted
    "slab_mb": 8,
    "verify_seconds": 60.0,
}
CACHE_DEFAULTS: dict[str, Any] = {
    "max_bytes": 1 << 30,
    "prefix": DEFAULT_PREFIX,
    "warm_first": [],
    "max_value_mb": MAX_VALUE_BYTES >> 20,
    # the training host's local tier (syncd.api.local_tier resolves these two)
    "local_dir": "",  # "": $XDG_CACHE_HOME/syncd/local, else ~/.cache/syncd/local
    "local_bytes": 16 << 30,  # 0: no local tier
}


@dataclass(frozen=True)
class Hdf5Config:
    """The validated `[hdf5]` and `[cache]` tables plus the directories."""

    dirs: tuple[Path, ...]
    layouts: tuple[Layout, ...]
    patterns: tuple[str, ...]
    debounce: float
    settle: float
    warm_workers: int  # threads inflating chunks (and hashing files)
    slab_bytes: int
    verify_seconds: float
    max_bytes: int
    prefix: str
    warm_first: tuple[str, ...]
    max_value_bytes: int
    features: FeatureConfig


def load_layouts(settings: Settings) -> tuple[Layout, ...]:
    """`[hdf5] layouts`, checked (also what `CachedWindowDataset` reads of the settings)."""
    where = f"--config {settings.config_file}"
    layouts = []
    for pair in section(settings, "hdf5", HDF5_DEFAULTS)["layouts"]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and p
                                                                  for p in pair)):
            raise ConfigError(f"{where}: [hdf5] layouts: {pair!r} is not valid: expected "
                              '["windows dataset", "labels dataset"]')
        layouts.append(Layout(pair[0], pair[1]))
    if not layouts:
        raise ConfigError(f"{where}: [hdf5] layouts is empty")
    return tuple(layouts)


def cache_prefix(settings: Settings) -> str:
    """`[cache] prefix` (the Dataset's default prefix)."""
    return str(section(settings, "cache", CACHE_DEFAULTS)["prefix"])


def load_hdf5_config(settings: Settings, require_dirs: bool = True) -> Hdf5Config:
    """Check `--hdf5-dir`, `[hdf5]`, `[cache]` and `[features]`; a ConfigError names the problem."""
    h = section(settings, "hdf5", HDF5_DEFAULTS)
    c = section(settings, "cache", CACHE_DEFAULTS)
    where = f"--config {settings.config_file}"
    layouts = load_layouts(settings)
    for key in ("debounce_seconds", "settle_seconds", "verify_seconds"):
        if h[key] < 0:
            raise ConfigError(f"{where}: [hdf5] {key} must not be negative")
    workers = h["warm_workers"] or h["workers"] or 0
    if type(workers) is not int or workers < 0:
        raise ConfigError(f"{where}: [hdf5] warm_workers = {workers!r} is not valid: expected "
                          "a whole number of threads (0: one per usable CPU)")
    if h["slab_mb"] < 1:
        raise ConfigError(f"{where}: [hdf5] slab_mb must be at least 1")
    if c["max_bytes"] < 0:
        raise ConfigError(f"{where}: [cache] max_bytes must not be negative")
    if c["max_value_mb"] < 1:
        raise ConfigError(f"{where}: [cache] max_value_mb must be at least 1")
    prefix = c["prefix"]
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ConfigError(f"{where}: [cache] prefix must be a non-empty word")
    dirs = tuple(Path(d).absolute() for d in settings.hdf5_dirs)
    if require_dirs and not dirs:
        raise ConfigError("--hdf5-dir is not set: name the HDF5 cache directories "
                          "(repeatable, or SYNCD_HDF5_DIRS)")
    for d in dirs:
        if require_dirs and not d.is_dir():
            raise ConfigError(f"--hdf5-dir {d}: no such directory")
    features = load_feature_config(settings)
    return Hdf5Config(dirs, layouts, tuple(str(p) for p in h["patterns"]),
                      float(h["debounce_seconds"]), float(h["settle_seconds"]),
                      workers or default_workers(),
                      int(h["slab_mb"]) << 20, float(h["verify_seconds"]), int(c["max_bytes"]),
                      prefix, tuple(str(g) for g in c["warm_first"]),
                      int(c["max_value_mb"]) << 20, features)
