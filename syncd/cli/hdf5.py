"""The HDF5 cache commands (`syncd warm`, `syncd cache stats`) and their part of `syncd status`.

Kept beside main.py so that file stays a short list of commands; the work itself is
syncd.api.warm and syncd.api.cache_stats.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from syncd import api
from syncd.cli.output import print_json, say, table
from syncd.config import Settings
from syncd.progress import Progress


def _mb(n: float | None) -> str:
    """In MiB, the unit budgets are set in (`slab_mb`, 16 GiB `local_bytes`), as the
    dashboard shows them."""
    return "?" if n is None else f"{n / 2**20:,.1f} MiB"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of workers")
    return value


def cmd_warm(args: argparse.Namespace, settings: Settings) -> int:
    where, report = api.warm(settings, Progress(enabled=not args.json, verb="windows"),
                             workers=args.workers)
    if args.json:
        failed = report.redis_error or report.mongo_error
        local = api.warm_local_tier(settings) if args.local and not failed else None
        print_json({"redis": where, **report.to_dict(),
                    **({"local": local.to_dict()} if local is not None else {})})
        return 1 if failed or (local is not None and local.skipped) else 0
    rate = report.window_bytes / report.seconds if report.seconds else 0.0
    say(f"warmed {len(report.warmed)} file(s) into {where}: {report.windows_written:,} windows "
        f"({_mb(report.window_bytes)}, {_mb(rate)}/s), {report.features_written:,} feature "
        f"rows, in {report.seconds:.1f} s ({report.workers} workers)")
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
    return _warm_local(args, settings) if args.local else 0


def _warm_local(args: argparse.Namespace, settings: Settings) -> int:
    """`--local`: this host's local tier, after Redis (one progress bar per file)."""
    local = api.warm_local_tier(settings, Progress(verb="windows"))
    say(f"local tier {local.directory}: {len(local.filled)} file(s) filled, "
        f"{len(local.present)} already there, {_mb(local.bytes)} of the "
        f"{_mb(local.budget_bytes)} budget" if local.budget_bytes else
        f"local tier {local.directory}: off ([cache] local_bytes = 0)")
    for skipped in local.skipped:
        say(f"not in the local tier: {skipped['path']}: {skipped['error']}")
    return 1 if local.skipped else 0


def cmd_cache(args: argparse.Namespace, settings: Settings) -> int:
    stats, prefix = api.cache_stats(settings)
    if args.json:
        print_json(stats)
        return 0
    say(f"redis: {stats['redis']}; prefix {prefix!r}")
    coverage = "-" if stats["coverage"] is None else f"{stats['coverage']:.0%}"
    say(f"{stats['files']} file(s); {stats['windows_cached']:,}/{stats['windows_total']:,} "
        f"windows cached ({coverage})")
    say(f"memory: {_mb(stats['used_memory'])} used by Redis; maxmemory "
        f"{_mb(stats['maxmemory']) if stats['maxmemory'] else 'unlimited'}; "
        f"{stats['evicted_keys']} keys evicted")
    hit = "-" if stats["hit_rate"] is None else f"{stats['hit_rate']:.1%}"
    say(f"lookups: {stats['keyspace_hits']:,} hits, {stats['keyspace_misses']:,} misses "
        f"({hit} hit rate, whole server)")
    local = stats["local"]
    say(f"local tier (this host) {local['directory']}: " + (
        f"{_mb(local['bytes'])} of {_mb(local['budget_bytes'])} in {local['shards']} shard(s); "
        f"{local['hits']:,} hits, {local['misses']:,} misses (windows), {local['fills']:,} "
        f"fills, {local['bad']:,} bad shards rebuilt" if local["enabled"] else
        "off ([cache] local_bytes = 0)"))
    for bad in stats["unreadable_metadata"]:
        say(f"unreadable metadata for file id {bad['fid']} (read as not cached; the next "
            f"warm pass writes it again): {bad['error']}")
    if stats["per_file"]:
        say(table([[f["path"], f["generation"], f"{f['cached']}/{f['windows']}",
                    ", ".join(f["features"]) or "-"] for f in stats["per_file"]],
                  ["file", "generation", "cached", "features"]))
    return 0


def print_status_section(status: dict[str, Any]) -> None:
    """The HDF5 files and the cache, as a part of `syncd status`."""
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
    p = command("warm", cmd_warm, "index the HDF5 caches into MongoDB and warm Redis (one "
                "shot)",
                "Index every HDF5 window cache under --hdf5-dir into MongoDB (hdf5_files), then "
                "warm Redis with windows, labels and features within [cache] max_bytes, newest "
                "files first. Files still being written are waited for (up to [hdf5] "
                "settle_seconds); unreadable ones are quarantined. With no --redis-url an "
                "embedded Redis runs under --state-dir while syncd does. Files are opened "
                "without HDF5 file locks, so the legacy writers are never blocked.")
    p.add_argument("--local", action="store_true",
                   help="then fill this host's local tier ([cache] local_dir, local_bytes) "
                   "with every warmed file under --hdf5-dir, from Redis, with a progress bar; "
                   "CachedWindowDataset then maps those shards instead of asking Redis")
    p.add_argument("--workers", type=_positive, metavar="N", default=None,
                   help="threads inflating gzip chunks and hashing files (default: [hdf5] "
                   "warm_workers, else one per usable CPU, at most 8)")
    p = command("cache", cmd_cache, "inspect the Redis window cache and the local tier",
                "Inspect the Redis window and feature cache, and this host's local tier "
                "(its shards, bytes, hits, misses and fills).", json_flag=False,
                settings=False)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    acts.add_parser("stats", help="coverage, memory, hits and misses",
                    description="Coverage per file, Redis memory and hit counters; this "
                    "host's local tier (bytes, shards, hits, misses, fills).",
                    parents=[settings_parent, json_parent])

