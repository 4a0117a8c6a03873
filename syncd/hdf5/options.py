"""The `[hdf5]` and `[cache]` settings: their defaults and the checked `Hdf5Config`.

syncd.api.hdf5_options reads and checks them (with `--hdf5-dir` and `[features]`)
once, before any server starts; a bad value fails there with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legacy_adapters.hdf5 import DEFAULT_LAYOUTS, DEFAULT_PATTERNS, Layout
from syncd.hdf5.features import FeatureConfig
from syncd.sinks.cache import DEFAULT_PREFIX, EVENTS_MAXLEN, MAX_VALUE_BYTES

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
    events_maxlen: int = EVENTS_MAXLEN  # `[daemon] events_maxlen`: the HDF5 events trim to it
