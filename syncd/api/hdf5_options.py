"""The `[hdf5]`, `[cache]` and `[features]` settings (and `--hdf5-dir`), checked once into
an `Hdf5Config` before any server starts: a bad value fails with one line naming it."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from legacy_adapters.hdf5 import Layout
from legacy_adapters.hdf5_slabs import default_workers
from syncd.config import Settings, section, section_defaults
from syncd.errors import ConfigError
from syncd.hdf5.features import EXTRACTORS, FEATURES_DEFAULTS, FeatureConfig
from syncd.hdf5.options import CACHE_DEFAULTS, HDF5_DEFAULTS, Hdf5Config

log = logging.getLogger("syncd.hdf5")
_noted: list[bool] = []  # the no-torch note, once per process


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


def load_hdf5_config(settings: Settings, require_dirs: bool = True,
                     warming: bool = True) -> Hdf5Config:
    """Check `--hdf5-dir`, `[hdf5]`, `[cache]` and `[features]`; a ConfigError names the problem.
    `warming` false: a command that computes no features (cache stats) says nothing of
    a missing torch."""
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
    features = load_feature_config(settings, warming)
    return Hdf5Config(dirs, layouts, tuple(str(p) for p in h["patterns"]),
                      float(h["debounce_seconds"]), float(h["settle_seconds"]),
                      workers or default_workers(),
                      int(h["slab_mb"]) << 20, float(h["verify_seconds"]), int(c["max_bytes"]),
                      prefix, tuple(str(g) for g in c["warm_first"]),
                      int(c["max_value_mb"]) << 20, features,
                      int(section(settings, "daemon", section_defaults("daemon"))
                          ["events_maxlen"]))  # the HDF5 events trim as syncd run's do


def load_feature_config(settings: Settings, warming: bool = True) -> FeatureConfig:
    """`[features]` merged over the defaults and checked (a ConfigError names the bad key)."""
    raw = section(settings, "features", FEATURES_DEFAULTS)
    where = f"--config {settings.config_file}: [features]"
    names = tuple(str(n) for n in raw["extractors"])
    if names and "extractors" not in settings.extra.get("features", {}) \
            and importlib.util.find_spec("torch") is None:
        # the quick-start install has no torch: cache windows only rather than fail;
        # features someone asked for by name still fail in one line (prepare_torch)
        if warming and not _noted:
            _noted.append(True)
            log.warning("torch is not installed: warming windows and labels only, no "
                        "features (for them: pip install torch==2.13.0, the CPU wheel, "
                        "then pip install '.[torch]' in the syncd clone, and restart "
                        "syncd run: it looks for torch only when it starts; or set "
                        "[features] extractors = [] to silence this)")
        names = ()
    unknown = [n for n in names if n not in EXTRACTORS]
    if unknown:
        raise ConfigError(f"{where}: unknown extractor {unknown[0]!r} (known: "
                          f"{', '.join(EXTRACTORS)})")
    bands = []
    for band, edges in raw["bands"].items():
        if not (isinstance(edges, list) and len(edges) == 2
                and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
                and 0 <= edges[0] < edges[1]):
            raise ConfigError(f"{where}: bands.{band} = {edges!r} is not valid: expected "
                              "[low, high] in Hz with 0 <= low < high")
        bands.append((str(band), float(edges[0]), float(edges[1])))
    if names and not bands:
        raise ConfigError(f"{where}: bands is empty")
    sfreq = float(raw["sfreq"])
    if not sfreq > 0:
        raise ConfigError(f"{where}: sfreq = {raw['sfreq']!r} is not valid: must be > 0")
    batch = int(raw["batch_windows"])
    if batch <= 0:
        raise ConfigError(f"{where}: batch_windows must be a positive integer")
    if raw["torch_threads"] < 1:
        raise ConfigError(f"{where}: torch_threads must be at least 1")
    return FeatureConfig(tuple(dict.fromkeys(names)), tuple(bands), sfreq, batch,
                         int(raw["torch_threads"]))
