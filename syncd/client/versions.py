"""One run's versions: each state its document had, when, and what changed.

`syncd experiments history REF --versions` and the dashboard's experiment page list
them. Each version of the run's legacy row (syncd.sinks.history) is projected as the
daemon projects rows today (syncd.client.rebuild), and compared with the document
before it, key by dotted key (as `compare` flattens them): an UPDATE shows the
fields it changed, an INSERT OR REPLACE (a delete and an insert of one statement) is
one `replace` with its differences, a DELETE ends the run. A value under a
credential's key (a config's `api_key`) is shown as `***`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.database import Database

from legacy_adapters.base import TableInfo
from syncd.client.compare import _same, flatten
from syncd.client.rebuild import (
    SourceModel,
    history_sources,
    project_versions,
    schema_as_of,
    source_model,
    tables_for,
    when,
)
from syncd.engine.migration_files import MigrationFile
from syncd.errors import SyncdError
from syncd.projection.ids import derive_id
from syncd.projection.project import Projector
from syncd.redact import secret_key
from syncd.sinks.julian import from_julian_day

HIDDEN = ("_id", "_source", "_v")
NOW = float("inf")


@dataclass
class Change:
    """One key's value before and after a version (None: absent)."""

    key: str
    before: Any
    after: Any

    def shown(self) -> tuple[Any, Any]:
        if secret_key(self.key):
            return tuple(None if v is None else "***" for v in (self.before, self.after))
        return self.before, self.after


@dataclass
class RunVersion:
    """One version: `op` (snapshot, insert, update, delete or replace), when its statement
    ran, the document it left (None after a delete) and what it changed. `found`: no
    change log gave it (a reconcile or a scan did), so `at` is when syncd read the row
    and the statement ran earlier."""

    op: str
    at: dt.datetime
    seq: int
    doc: dict[str, Any] | None
    changes: list[Change] = field(default_factory=list)
    found: bool = False

    def shown_changes(self) -> list[Change]:
        """The changes to show people: an `_orig.KEY` entry (what a conversion of KEY
        dropped, such as a time's microseconds) is left out when KEY changed too."""
        keys = {c.key for c in self.changes}

        def redundant(key: str) -> bool:
            if not key.startswith("_orig."):
                return False
            base = key[len("_orig."):]
            return any(k == base or k.startswith(base + ".") for k in keys)

        return [c for c in self.changes if not redundant(c.key)]

    def note(self) -> str | None:
        """What people are told beside the time of a version no change log gave."""
        return "ran earlier: not logged, a reconcile or scan found it then" if self.found else None

    def shown_at(self) -> str:
        """When, to the nearest millisecond (a julian day holds a moment to ~40 us)."""
        return (self.at + dt.timedelta(microseconds=500)).isoformat(timespec="milliseconds")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "at": self.shown_at(), "seq": self.seq, "found": self.found,
                "changes": [{"key": c.key, "before": c.shown()[0], "after": c.shown()[1]}
                            for c in self.changes]}


@dataclass
class RunVersions:
    """A run's versions, oldest first; history starts at `since` (the first sync)."""

    id: ObjectId
    source: str
    run_id: Any
    since: dt.datetime
    versions: list[RunVersion]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "run_id": self.run_id,
                "history_starts": self.since, "versions": [v.to_dict() for v in self.versions]}


def _flat(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        return {}
    return flatten({k: v for k, v in doc.items() if k not in HIDDEN})


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[Change]:
    """The dotted keys whose value differs between two documents: those set or changed
    (in the new document's order), then those removed."""
    old, new = _flat(before), _flat(after)
    keys = list(dict.fromkeys([*new, *old]))
    return [Change(k, old.get(k), new.get(k)) for k in keys
            if not (k in old and k in new and _same(old[k], new[k]))]


def _run_id(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _docs(model: SourceModel, info: TableInfo, ref: str | int | ObjectId) -> list[ObjectId]:
    """The row documents of `info` that `ref` names: an `_id`, else a key: the `_id` it
    derives to (one indexed look-up), else any row whose key it is."""
    base = {"source": model.source, "table": info.name}
    history = model.reader.history
    try:
        oid = ref if isinstance(ref, ObjectId) else ObjectId(str(ref))
        return [oid] if history.find_one({**base, "doc": oid}, {"_id": 1}) else []
    except (InvalidId, TypeError):
        key = [_run_id(str(ref))]
    oid = derive_id(model.source, info.name, key)
    if history.find_one({**base, "doc": oid}, {"_id": 1}):
        return [oid]
    return list(history.distinct("doc", {**base, "key": key}))


def run_versions(db: Database, ref: str | int | ObjectId, source: str | None = None,
                 until: float | None = None,
                 migrations: Sequence[MigrationFile] | None = None) -> RunVersions:
    """The versions of the run `ref` (its `_id` or legacy run_id) recorded up to `until`
    (a julian day; None: every one)."""
    found = []
    for name in history_sources(db, source):
        model, projection = source_model(db, name, migrations)
        schema = schema_as_of(model, NOW, tables_for(projection, "experiments"))
        for info, mapping in projection.resolve(schema, db.name):
            if mapping.collection == "experiments":
                found += [(model, info, mapping, oid) for oid in _docs(model, info, ref)]
    if not found:
        raise SyncdError(f"no recorded versions of experiment {str(ref)[:80]!r} in database "
                         f"{db.name!r}" + (f", source {source!r}" if source else "")
                         + " (history starts at the first sync)")
    if len(found) > 1:
        names = ", ".join(sorted({f[0].source for f in found}))
        raise SyncdError(f"run_id {str(ref)!r} is in several sources ({names}): pass --source "
                         "or the experiment's _id")
    model, info, mapping, oid = found[0]
    projector = Projector(info, mapping, model.params)
    out: list[RunVersion] = []
    last: dict[str, Any] | None = None
    for v in model.reader.versions(info.name, oid):
        if until is not None and v["jd"] > until:
            break
        doc = next(iter(project_versions(projector, info, [v])), None)
        at = from_julian_day(v["jd"])
        prior = out[-1] if out else None
        if (v["op"] == "insert" and prior is not None and prior.op == "delete"
                and prior.seq == v["seq"] and prior.at == at):
            out[-1] = RunVersion("replace", at, v["seq"], doc, changes(last, doc))
        else:
            out.append(RunVersion(v["op"], at, v["seq"], doc,
                                  changes(None if v["op"] == "snapshot" else last, doc),
                                  bool(v.get("found"))))
        last = doc if doc is not None else last
    run_id = next((v.doc.get("run_id") for v in reversed(out) if v.doc), None)
    start = model.reader.first_jd()
    return RunVersions(oid, model.source, run_id, when(start if start is not None else 0.0),
                       out)
