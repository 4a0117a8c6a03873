"""The HDF5 cache commands (`syncd warm`, `syncd cache stats`) and their part of `syncd status`.

Kept beside cli.py so that file stays a short list of commands; the work itself is
in syncd.hdf5 and syncd.client.cache.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from syncd.cli.output import print_json, say, table
from syncd.config import Settings
from syncd.errors import SyncdError


@contextlib.contextmanager
def _redis(settings: Settings) -> Iterator[Any]:
    from syncd.connect.redis import open_redis

    with open_redis(settings) as target:
        yield target


@contextlib.contextmanager
def running_redis(settings: Settings) -> Iterator[Any]:
    """The configured Redis, or the embedded one if it is already running; never starts one."""
    from syncd.connect.redis import connect_redis
    from syncd.embedded import EmbeddedRedis

    url = settings.redis_url or EmbeddedRedis(settings.state_dir).running_url()
    if url is None:
        yield None
        return
    # A status read: a Redis that hangs must not hang the command (bounded, no retries).
    client = connect_redis(url, settings.mongo_timeout, retry=False,
                           read_timeout=settings.mongo_timeout)
    try:
        yield client
    finally:
        client.close()


def _mb(n: float | None) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f} MB"


def _refuse_beside_a_daemon(db: Any) -> None:
    """One indexer per database: a running `syncd run` with HDF5 dirs already warms."""
    from syncd.checkpoint.store import StateStore, utcnow

    daemon = StateStore(db).state.find_one({"_id": "daemon"}) or {}
    fresh = daemon.get("heartbeat_at") and (utcnow() - daemon["heartbeat_at"]).total_seconds() \
        < 3 * float(daemon.get("heartbeat_seconds", 5))
    if daemon.get("running") and fresh and daemon.get("hdf5_dirs"):
        raise SyncdError(f"syncd run (pid {daemon.get('pid')} on {daemon.get('host')}) keeps "
                         "the HDF5 caches warm for this database; `syncd warm` is not needed "
                         "(see syncd status)")


def cmd_warm(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.connect.mongo import open_target
    from syncd.hdf5.features import require_torch
    from syncd.hdf5.follower import Hdf5Follower
    from syncd.hdf5.options import load_hdf5_config
    from syncd.progress import Progress

    config = load_hdf5_config(settings)  # bad settings fail before any server starts
    if config.features.extractors:
        require_torch()
    with open_target(settings) as target, _redis(settings) as rt, \
            Progress(enabled=not args.json, verb="windows") as progress:
        _refuse_beside_a_daemon(target.db)
        follower = Hdf5Follower(settings, target.db, rt.client, progress=progress,
                                config=config)
        report = follower.warm()
        where = rt.shown_url + (f" (embedded, data in {settings.state_dir / 'redis'}; saved "
                                "and stopped when syncd exits)" if rt.embedded else "")
    if args.json:
        print_json({"redis": where, **report.to_dict()})
        return 1 if report.redis_error or report.mongo_error else 0
    rate = report.window_bytes / report.seconds if report.seconds else 0.0
    say(f"warmed {len(report.warmed)} file(s) into {where}: {report.windows_written:,} windows "
        f"({_mb(report.window_bytes)}, {_mb(rate)}/s), {report.features_written:,} feature "
        f"rows, in {report.seconds:.1f} s")
    say(f"files: {report.files} found, {len(report.indexed)} indexed, {report.unchanged} "
        f"unchanged, {len(report.pending)} still being written, {len(report.quarantined)} "
        f"quarantined, {len(report.removed)} removed")
    coverage = f"{report.windows_cached / report.windows_total:.0%}" if report.windows_total \
        else "-"
    say(f"cache: {report.windows_cached:,}/{report.windows_total:,} windows ({coverage}); "
        f"{_mb(report.used_bytes)} of the {_mb(report.budget_bytes)} budget")
    if report.windows_trimmed:
        say(f"trimmed {report.windows_trimmed:,} windows to stay within the budget")
    for q in report.quarantined:
        say(f"quarantined {q['path']}: {q['error']}")
    for path in report.pending:
        say(f"pending (still being written): {path}")
    for path in report.changed_while_warming:
        say(f"changed while warming, re-indexed by the next pass: {path}")
    for path in report.metadata_repaired:
        say(f"unreadable cache metadata, written again: {path}")
    if report.redis_error or report.mongo_error:
        say(f"failed: {report.redis_error or report.mongo_error}")
        return 1
    return 0


def cmd_cache(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.client.cache import WindowCache
    from syncd.hdf5.options import load_hdf5_config

    config = load_hdf5_config(settings, require_dirs=False)
    with _redis(settings) as rt:
        stats = WindowCache(rt.client, config.prefix, config.max_value_bytes).stats()
        stats["redis"] = rt.shown_url
    if args.json:
        print_json(stats)
        return 0
    say(f"redis: {stats['redis']}; prefix {config.prefix!r}")
    coverage = "-" if stats["coverage"] is None else f"{stats['coverage']:.0%}"
    say(f"{stats['files']} file(s); {stats['windows_cached']:,}/{stats['windows_total']:,} "
        f"windows cached ({coverage})")
    say(f"memory: {_mb(stats['used_memory'])} used by Redis; maxmemory "
        f"{_mb(stats['maxmemory']) if stats['maxmemory'] else 'unlimited'}; "
        f"{stats['evicted_keys']} keys evicted")
    hit = "-" if stats["hit_rate"] is None else f"{stats['hit_rate']:.1%}"
    say(f"lookups: {stats['keyspace_hits']:,} hits, {stats['keyspace_misses']:,} misses "
        f"({hit} hit rate, whole server)")
    for bad in stats["unreadable_metadata"]:
        say(f"unreadable metadata for file id {bad['fid']} (read as not cached; the next "
            f"warm pass writes it again): {bad['error']}")
    if stats["per_file"]:
        say(table([[f["path"], f["generation"], f"{f['cached']}/{f['windows']}",
                    ", ".join(f["features"]) or "-"] for f in stats["per_file"]],
                  ["file", "generation", "cached", "features"]))
    return 0


def status_section(db: Any, settings: Settings) -> dict[str, Any] | None:
    """The HDF5 part of `syncd status` (None when no HDF5 file was ever indexed)."""
    from syncd.hdf5.files import HDF5_FILES
    from syncd.hdf5.status import hdf5_status

    if HDF5_FILES not in db.list_collection_names():
        return None
    with running_redis(settings) as client:
        return hdf5_status(db, client)


def print_status_section(status: dict[str, Any]) -> None:
    states = ", ".join(f"{n} {s}" for s, n in sorted(status["states"].items())) or "none"
    coverage = "-" if status["coverage"] is None else f"{status['coverage']:.0%}"
    mem = status["memory"]
    redis_mem = "Redis not running" if mem["redis_used_memory"] is None else \
        f"Redis using {_mb(mem['redis_used_memory'])}"
    say(f"hdf5 files: {status['files_total']} ({states}); windows cached "
        f"{status['windows_cached']:,}/{status['windows_total']:,} ({coverage}); cache "
        f"{_mb(mem['used_bytes'])} of {_mb(mem['budget_bytes'])} budget, {redis_mem}")
    if status["files"]:
        say(table([[f["path"], f["state"], f["generation"], f"{f['cached']}/{f['windows']}",
                    len(f["features"])] for f in status["files"]],
                  ["file", "state", "generation", "cached", "features"]))
    for q in status["quarantined"]:
        say(f"  quarantined {q['path']}: {q['error']}")


def add_commands(command: Callable[..., argparse.ArgumentParser],
                 settings_parent: argparse.ArgumentParser,
                 json_parent: argparse.ArgumentParser) -> None:
    """Register `warm` and `cache` with the parser `cli.build_parser` is making."""
    command("warm", cmd_warm, "index the HDF5 caches into MongoDB and warm Redis (one shot)",
            "Index every HDF5 window cache under --hdf5-dir into MongoDB (hdf5_files), then "
            "warm Redis with windows, labels and features within [cache] max_bytes, newest "
            "files first. Files still being written are waited for (up to [hdf5] "
            "settle_seconds); unreadable ones are quarantined. With no --redis-url an "
            "embedded Redis runs under --state-dir while syncd does.")
    p = command("cache", cmd_cache, "inspect the Redis window cache",
                "Inspect the Redis window and feature cache.", json_flag=False, settings=False)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    acts.add_parser("stats", help="coverage, memory, hits and misses",
                    description="Coverage per file, Redis memory and hit counters.",
                    parents=[settings_parent, json_parent])

