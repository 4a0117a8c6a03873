"""Where `CachedWindowDataset` finds its settings and each file's layout.

The settings are the CLI's: the TOML named by `config=` (as `--config`), else by
`SYNCD_CONFIG`, then the `SYNCD_*` environment. A file's layout (which datasets hold
its windows and labels) is first the one syncd recorded when it indexed the file
(the cache's metadata in Redis, or its `hdf5_files` document), then the first of
`[hdf5] layouts` the file has, so a layout added to the TOML for `syncd warm` is
the Dataset's too, without an argument of its own.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from legacy_adapters.hdf5 import BadFile, Layout, find_layout
from syncd.client.cache import CacheError, Keys, read_file_meta
from syncd.client.local_tier import LocalTierOptions
from syncd.config import load_settings
from syncd.hdf5.files import HDF5_FILES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetDefaults:
    """What the settings give the Dataset where its arguments say nothing."""

    redis_url: str | None  # the configured Redis, else the embedded one running
    prefix: str  # [cache] prefix
    layouts: list[Layout]  # [hdf5] layouts
    local: LocalTierOptions  # [cache] local_dir, local_bytes


def dataset_defaults(config: str | Path | None, state_dir: str | Path | None) -> DatasetDefaults:
    """The settings as the CLI resolves them (TOML < SYNCD_* < these arguments)."""
    from syncd.api.hdf5_options import cache_prefix, load_layouts
    from syncd.api.local_tier import local_tier_options
    from syncd.api.options import endpoints
    from syncd.connect.redis import running_redis_url

    flags: dict[str, Any] = {}
    if config is not None:
        flags["config"] = str(config)
    if state_dir is not None:
        flags["state_dir"] = state_dir
    settings = load_settings(flags)
    return DatasetDefaults(running_redis_url(endpoints(settings)), cache_prefix(settings),
                           list(load_layouts(settings)), local_tier_options(settings))


def pick_layout(f: Any, path: Path, recorded: Layout | None,
                layouts: Sequence[Layout]) -> Layout:
    """The recorded layout if the file has it, else the first of `layouts` it has."""
    try:
        return find_layout(f, ([recorded] if recorded else []) + list(layouts))
    except BadFile as exc:
        raise BadFile(f"{path}: {exc}; name them in [hdf5] layouts of the syncd TOML "
                      "(config= or SYNCD_CONFIG) or pass layouts=") from None


def recorded_layouts(paths: Sequence[Path], db: Any, redis_url: str | None,
                     keys: Keys) -> dict[str, Layout]:
    """The layout syncd recorded for each file it indexed: from `db` (the syncd database,
    if given), else from the cache's metadata in Redis; files it never indexed are absent."""
    found: dict[str, Layout] = {}
    if db is not None:
        wanted = {"path": {"$in": [str(p) for p in paths]}, "state": {"$ne": "quarantined"},
                  "host": {"$in": [socket.gethostname(), None]}}
        for doc in db[HDF5_FILES].find(wanted, {"path": 1, "layout": 1}):
            layout = doc.get("layout") or {}
            if layout.get("windows") and layout.get("labels"):
                found[doc["path"]] = Layout(layout["windows"], layout["labels"])
    missing = [p for p in paths if str(p) not in found]
    if not missing or not redis_url:
        return found
    from syncd.connect.redis import reader_redis

    client = reader_redis(redis_url)
    if client is None:
        return found
    try:
        for path in missing:
            try:
                meta = read_file_meta(client, keys, str(path))
            except CacheError:
                continue
            if meta is not None and len(meta.layout) == 2:
                found[str(path)] = Layout(*meta.layout)
    except redis.RedisError as exc:
        log.warning("Redis did not say which layouts syncd recorded (%s); using [hdf5] "
                    "layouts", exc)
    finally:
        client.close()
    return found
