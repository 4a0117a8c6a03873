"""What `syncd status` shows about the HDF5 caches: per-file states, coverage, budget."""

from __future__ import annotations

from typing import Any

import redis
from pymongo.database import Database

from syncd.checkpoint.hdf5 import read_hdf5_status
from syncd.checkpoint.store import StateStore
from syncd.connect.redis_urls import server_info
from syncd.hdf5.files import HDF5_FILES
from syncd.hdf5.identity import one_per_file


def hdf5_status(db: Database, client: redis.Redis | None = None,
                limit: int = 50) -> dict[str, Any]:
    """Per-file states, coverage (windows cached/total), quarantined files with their
    errors, and the cache's memory against its budget. Reads MongoDB (and Redis if given).

    Each file (host and path) counts once: of two records an earlier version may have
    left (one per source, merged by the follower's next pass), the newest."""
    coll = db[HDF5_FILES]
    recorded = read_hdf5_status(db)
    files, counts, total, cached, accounted = [], {}, 0, 0, 0
    quarantined = []
    fields = {"path": 1, "state": 1, "generation": 1, "n_windows": 1, "cached_windows": 1,
              "features": 1, "error": 1, "quarantined_at": 1, "cache_bytes": 1, "warmed_at": 1,
              "host": 1, "source_id": 1, "updated_at": 1}
    hosts = {s["source_id"]: s["host"] for s in StateStore(db).sources()
             if s.get("source_id") and s.get("host")}
    for doc in one_per_file(coll.find({}, fields).sort("path", 1), hosts):
        state = doc.get("state", "?")
        counts[state] = counts.get(state, 0) + 1
        n, c = int(doc.get("n_windows") or 0), int(doc.get("cached_windows") or 0)
        if state != "quarantined":
            total += n
            cached += min(c, n)
            accounted += int(doc.get("cache_bytes") or 0)
        if state == "quarantined":
            quarantined.append({"path": doc["path"], "error": doc.get("error"),
                                "at": doc.get("quarantined_at")})
        if len(files) < limit:
            files.append({"path": doc["path"], "state": state,
                          "generation": doc.get("generation"), "windows": n, "cached": c,
                          "coverage": round(c / n, 4) if n else None,
                          "features": sorted((doc.get("features") or {}).keys()),
                          "warmed_at": doc.get("warmed_at")})
    out: dict[str, Any] = {
        "files": files, "files_total": sum(counts.values()), "states": counts,
        "windows_total": total, "windows_cached": cached,
        "coverage": round(cached / total, 4) if total else None,
        "quarantined": quarantined,
        "memory": {"used_bytes": accounted, "budget_bytes": recorded.get("max_bytes"),
                   "redis_used_memory": None},
        "last_scan_at": recorded.get("last_scan_at"),
    }
    if client is not None:
        try:
            out["memory"]["redis_used_memory"] = server_info(client, "memory").get("used_memory")
        except redis.RedisError as exc:
            out["redis_error"] = f"{type(exc).__name__}: {exc}"
    return out
