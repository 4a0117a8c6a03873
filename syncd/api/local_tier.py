"""The host's local tier (syncd.client.local_tier): its settings, `syncd warm --local`
and its part of `syncd cache stats` and of the dashboard.

`[cache] local_dir` (default `$XDG_CACHE_HOME/syncd/local`, else `~/.cache/syncd/local`)
and `[cache] local_bytes` (default 16 GiB; 0 turns the tier off) are resolved here
and only here: `CachedWindowDataset` takes them from the same configuration through
`local_tier_options`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from syncd.client.cache import CacheError
from syncd.client.local_tier import LocalTier, LocalTierOptions
from syncd.client.shards import ShardError
from syncd.config import Settings, section
from syncd.errors import ConfigError
from syncd.progress import Progress

log = logging.getLogger(__name__)


def default_local_dir() -> Path:
    """Under the user's cache directory (XDG), as pip and torch keep theirs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "syncd" / "local"


def local_tier_options(settings: Settings) -> LocalTierOptions:
    """`[cache] local_dir` and `local_bytes`, checked."""
    from syncd.hdf5.options import CACHE_DEFAULTS

    c = section(settings, "cache", CACHE_DEFAULTS)
    if c["local_bytes"] < 0:
        raise ConfigError(f"--config {settings.config_file}: [cache] local_bytes must not be "
                          "negative (0 turns the local tier off)")
    directory = Path(c["local_dir"]).expanduser() if c["local_dir"] else default_local_dir()
    return LocalTierOptions(directory.absolute(), int(c["local_bytes"]))


def local_stats(settings: Settings) -> dict[str, Any]:
    """This host's local tier: directory, budget, bytes, shards, hits, misses, fills."""
    return LocalTier(local_tier_options(settings)).stats()


@dataclass
class LocalWarmReport:
    """What `syncd warm --local` did on this host."""

    directory: str
    budget_bytes: int
    filled: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # had a good shard already
    skipped: list[dict[str, str]] = field(default_factory=list)  # path, why
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "budget_bytes": self.budget_bytes,
                "filled": self.filled, "present": self.present, "skipped": self.skipped,
                "bytes": self.bytes}


def warm_local(settings: Settings, client: Any, prefix: str,
               progress: Progress | None = None) -> LocalWarmReport:
    """Fill this host's local tier with every file Redis holds that lies under
    `--hdf5-dir` (all of them without one), from Redis, else from the file."""
    from syncd.client.cache import WindowCache

    options = local_tier_options(settings)
    tier = LocalTier(options)
    report = LocalWarmReport(str(options.directory), options.budget)
    if not tier.enabled:
        return report
    why = tier.untrusted(create=True)
    if why:
        raise ConfigError(f"[cache] local_dir {options.directory} is {why}: another user "
                          "could plant shards there (chmod 700 it, or choose a directory "
                          "of your own)")
    dirs = [str(Path(d).absolute()) for d in settings.hdf5_dirs]
    cache = WindowCache(client, prefix, local_tier=tier)
    metas = [m for m in cache.files()
             if not dirs or any(m.path.startswith(d.rstrip("/") + "/") for d in dirs)]
    with progress or Progress(enabled=False, verb="windows") as shown:
        for meta in metas:
            task = shown.task(Path(meta.path).name, meta.n_windows)
            try:
                had = tier.open(cache.generation(meta))
                shard = had or cache.fill_local(meta, progress=task.advance)
            except (ShardError, CacheError, OSError, redis.RedisError) as exc:  # reported
                report.skipped.append({"path": meta.path, "error": str(exc)})
                continue
            finally:
                task.finish()
            if shard is None:
                report.skipped.append({"path": meta.path, "error": "does not fit the "
                                       "local_bytes budget beside the shards in use"})
                continue
            (report.present if had is not None else report.filled).append(meta.path)
            report.bytes += shard.layout.size
            shard.close()
    tier.flush()
    return report


def warm_local_tier(settings: Settings, progress: Progress | None = None) -> LocalWarmReport:
    """`syncd warm --local`: this host's tier filled from the configured Redis."""
    from syncd.api.hdf5_options import load_hdf5_config
    from syncd.api.options import endpoints
    from syncd.connect.redis import open_redis

    config = load_hdf5_config(settings, require_dirs=False, warming=False)
    with open_redis(endpoints(settings)) as rt:
        return warm_local(settings, rt.client, config.prefix, progress)
