"""One record per HDF5 file: repairing the duplicates an earlier version left.

Before files had one identity per host, a document was keyed by the source that saw
the file: `syncd warm --hdf5-dir D` (source `HOST`) and `syncd run --sqlite DB
--hdf5-dir D` (source `HOST:/path/DB`) each recorded every file of D, and warmed it
under a file id of their own. The follower repairs that once, on its first pass:
it records the host on the earlier documents of its files, keeps the record with the
newest state of each file, and deletes the others after freeing their Redis keys
(through `CacheWriter`; a crash midway repeats the repair, which deletes nothing twice).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from legacy_adapters.hdf5 import FileSig
from syncd.hdf5.files import Hdf5Files, Stale, doc_sig, under
from syncd.sinks.cache import CacheWriter

log = logging.getLogger(__name__)

_OLDEST = dt.datetime.min


def host_of(doc: Mapping[str, Any], source_hosts: Mapping[str, str]) -> str:
    """The host of a document: its `host`, else (an earlier version's) its source's
    recorded host, else the host part of the source id (`HOST` or `HOST:/path/DB`)."""
    if doc.get("host"):
        return str(doc["host"])
    source = str(doc.get("source_id") or "")
    return source_hosts.get(source) or source.split(":", 1)[0]


def newest(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The record with the newest state (latest `updated_at`)."""
    return max(docs, key=lambda d: (d.get("updated_at") or _OLDEST, str(d.get("_id"))))


def one_per_file(docs: Iterable[dict[str, Any]],
                 source_hosts: Mapping[str, str]) -> list[dict[str, Any]]:
    """The newest record of each file (host and path), in the order first seen."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for doc in docs:
        groups.setdefault((host_of(doc, source_hosts), doc["path"]), []).append(doc)
    return [newest(group) for group in groups.values()]


def repair(files: Hdf5Files, cache: CacheWriter, source_hosts: Mapping[str, str],
           stale: Stale, drop_stale: Callable[[dict[str, Any]], None]) -> int:
    """Give this host's files under the follower's directories one record each; returns
    how many records were dropped. `stale(doc)` describes a record's cached generation,
    `drop_stale(doc)` deletes the keys of the generations it has retired."""
    earlier = [d for d in files.without_host() if under(d["path"], files.dirs)
               and (host_of(d, source_hosts) == files.host or _here(d))]
    files.adopt(earlier)
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in files.mine():
        groups.setdefault(doc["path"], []).append(doc)
    dropped = 0
    for path, docs in groups.items():
        if len(docs) < 2:
            continue
        keep = newest(docs)
        for doc in docs:
            if doc is not keep:
                _free(doc, keep, cache, stale, drop_stale)
                files.delete(doc)
                dropped += 1
        _point_at(keep, cache)
        log.warning("%s had %d records (an earlier syncd kept one per source); kept the "
                    "newest (%s, file id %s) and freed the others' cache keys", path,
                    len(docs), keep.get("state"), keep.get("fid"))
    return dropped


def _here(doc: dict[str, Any]) -> bool:
    """Whether the file a document recorded is here, as recorded (size, mtime and inode):
    a source named by `--source-id` says nothing of its host, the file does."""
    try:
        return doc_sig(doc) == FileSig.of(Path(doc["path"]))
    except OSError:
        return False


def _free(doc: dict[str, Any], keep: dict[str, Any], cache: CacheWriter, stale: Stale,
          drop_stale: Callable[[dict[str, Any]], None]) -> None:
    """Delete a dropped record's keys, unless they are the kept record's own."""
    fid, keep_fid = doc.get("fid"), keep.get("fid")
    if not fid:
        return
    drop_stale(doc)
    if doc.get("state") != "quarantined" and doc.get("generation") and \
            doc.get("n_windows") is not None and \
            (fid, doc.get("generation")) != (keep_fid, keep.get("generation")):
        record = stale(doc)
        cache.delete_values(fid, record["generation"], 0, record["windows"],
                            record["features"])
        cache.delete_labels(fid, record["generation"])
    if fid != keep_fid:
        cache.forget(fid, doc["path"])


def _point_at(keep: dict[str, Any], cache: CacheWriter) -> None:
    """Make the files index name the kept record's metadata (a dropped one may have had it)."""
    meta = cache.file(keep["fid"]) if keep.get("fid") else None
    if meta is not None and keep.get("state") != "quarantined" and \
            meta.gen == keep.get("generation"):
        cache.write_meta(meta)
