"""The HDF5 cache: index and warm once (`warm`), Redis' view of it, its part of `status`."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from syncd.api.options import endpoints
from syncd.checkpoint.daemon_doc import live_daemons
from syncd.checkpoint.store import StateStore
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.connect.redis import RedisClient, open_redis, running_redis
from syncd.errors import SyncdError
from syncd.progress import Progress

# The modules that import h5py or numpy (syncd.hdf5.*, hdf5_options, client.cache) are
# imported inside the functions that need them: other commands start without them.
if TYPE_CHECKING:
    from syncd.hdf5.follower import Hdf5Follower


def _refuse_beside_a_daemon(db: Any, settings: Settings) -> None:
    """A running `syncd run` on this host with these HDF5 dirs (any source's) already
    warms them. Dirs are compared resolved: the daemon records absolute paths, and a
    relative `--hdf5-dir` slipped past the check (two warmers, fighting over features)."""
    wanted = {str(Path(d).resolve()) for d in settings.hdf5_dirs}
    for daemon in live_daemons(StateStore(db, settings.source_id)):
        theirs = {str(Path(d).resolve()) for d in daemon.get("hdf5_dirs") or []}
        if not theirs or daemon.get("host") != socket.gethostname() or \
                (wanted and not wanted & theirs):
            continue
        raise SyncdError(f"syncd run (pid {daemon.get('pid')} on {daemon.get('host')}) keeps "
                         "the HDF5 caches warm for this database; `syncd warm` is not needed "
                         "(see syncd status)")


def warm(settings: Settings, progress: Progress | None = None,
         workers: int | None = None) -> tuple[str, Any]:
    """Index the HDF5 caches into MongoDB and warm Redis once: (where Redis is, report).

    `workers` (`--workers`) overrides `[hdf5] warm_workers`. The report's `redis_error`
    / `mongo_error` say whether the pass failed.
    """
    from syncd.api.hdf5_options import load_hdf5_config
    from syncd.hdf5.features import require_torch
    from syncd.hdf5.follower import Hdf5Follower

    config = load_hdf5_config(settings)  # bad settings fail before any server starts
    if workers is not None:
        config = dataclasses.replace(config, warm_workers=max(1, workers))
    if config.features.extractors:
        require_torch()
    ends = endpoints(settings)
    with open_target(ends) as target, open_redis(ends) as rt, \
            (progress or Progress(enabled=False, verb="windows")) as shown_progress:
        _refuse_beside_a_daemon(target.db, settings)
        follower = Hdf5Follower(config, settings.source_id, target.db, rt.client,
                                progress=shown_progress)
        report = follower.warm()
        where = rt.shown_url + (f" (embedded, data in {settings.state_dir / 'redis'}; saved "
                                "and stopped when syncd exits)" if rt.embedded else "")
    return where, report


def cache_stats(settings: Settings) -> tuple[dict[str, Any], str]:
    """Coverage per file, Redis memory and hit counters, and this host's local tier
    (`local`): (stats, the cache's key prefix)."""
    from syncd.api.hdf5_options import load_hdf5_config
    from syncd.api.local_tier import local_stats
    from syncd.client.cache import WindowCache

    config = load_hdf5_config(settings, require_dirs=False, warming=False)
    with open_redis(endpoints(settings)) as rt:
        stats = WindowCache(rt.client, config.prefix, config.max_value_bytes).stats()
        stats["redis"] = rt.shown_url
    stats["local"] = local_stats(settings)
    return stats, config.prefix


def hdf5_check_config(settings: Settings) -> Any:
    """The settings `verify` checks the cache with (None without --hdf5-dir), checked
    before any server starts."""
    from syncd.api.hdf5_options import load_hdf5_config

    return load_hdf5_config(settings, warming=False) if settings.hdf5_dirs else None


def verify_cache(settings: Settings, config: Any, db: Database, source_id: str) -> Any:
    """`verify`'s check of the cache in Redis (syncd.hdf5.check.CacheCheck)."""
    from syncd.hdf5.check import check_cache

    with open_redis(endpoints(settings)) as rt:
        return check_cache(config, db, rt.client, source_id)


def hdf5_status(db: Any, settings: Settings) -> dict[str, Any] | None:
    """The HDF5 part of `status` (None when no HDF5 file was ever indexed)."""
    from syncd.hdf5.files import HDF5_FILES
    from syncd.hdf5.status import hdf5_status as collect

    if HDF5_FILES not in db.list_collection_names():
        return None
    with running_redis(endpoints(settings)) as client:
        return collect(db, client)


def hdf5_follower(settings: Settings, db: Database, client: RedisClient,
                  **kwargs: Any) -> Hdf5Follower:
    """The HDF5 follower over the configured dirs and tables (checked: a ConfigError names
    a bad one), for the configured source; `kwargs`: Hdf5Follower's own."""
    from syncd.api.hdf5_options import load_hdf5_config
    from syncd.hdf5.follower import Hdf5Follower

    return Hdf5Follower(load_hdf5_config(settings), settings.source_id, db, client, **kwargs)
