"""Planning and running `syncd migrate`: versions, changelog, lease, resume, swap.

The target version's model is rebuilt by replaying migrations 1..N; applied
migrations are checked against their recorded checksums first (as Flyway does),
and one lease document keeps a second syncd from migrating at the same time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from legacy_adapters.base import Schema, Source, TableInfo
from syncd.checkpoint.lease import Lease
from syncd.checkpoint.store import StateStore, utcnow
from syncd.engine.backfill import Backfill
from syncd.engine.baseline import Baseline
from syncd.engine.migration_files import (
    MigrationFile,
    build_model,
    folder_hint,
    is_bundled,
)
from syncd.engine.options import MigrateOptions
from syncd.engine.report import Report
from syncd.errors import ConfigError, MigrationError
from syncd.faults import crashpoint
from syncd.progress import Progress
from syncd.projection.model import Model, TableMap
from syncd.projection.project import Params, host_timezone
from syncd.projection.unmirrored import NotMirrored
from syncd.sinks.base import Sink
from syncd.sinks.collections import MongoCollections
from syncd.sinks.history import HistoryStore

log = logging.getLogger(__name__)


def check_changelog(applied: list[dict[str, Any]], migrations: list[MigrationFile],
                    up_to: int) -> None:
    """Refuse when an applied migration (version <= up_to) is missing or its file changed."""
    by_version = {m.version: m for m in migrations}
    for entry in applied:
        version = entry.get("version", entry["_id"])
        if version > up_to:
            continue
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"applied migration {version:04d} ({entry.get('file')}) is "
                                 f"missing from the migrations folder: {folder_hint(migrations)}")
        if migration.checksum != entry.get("checksum"):
            raise MigrationError(
                f"applied migration {migration.file} has changed since it was applied "
                f"(checksum {entry.get('checksum', '?')[:12]} recorded, "
                f"{migration.checksum[:12]} now); restore the file, or move below it first "
                f"(syncd migrate --to {version - 1}) and then up again")


def resolve_params(options: MigrateOptions, meta: dict[str, Any] | None) -> Params:
    """Projection parameters: the explicit settings, else the source's recorded ones,
    else defaults."""
    recorded = (meta or {}).get("params") or {}
    if options.timezone_given and options.timezone:
        zone = options.timezone
    else:
        zone = recorded.get("timezone") or options.timezone or host_timezone()
    return Params(options.source_id, zone)


@dataclass
class MigrationPlan:
    """What `migrate` will do; `--dry-run` prints it and stops."""

    current: int
    target: int
    kind: str
    params: Params
    model: Model
    pairs: list[tuple[TableInfo, TableMap]]
    counts: dict[str, int | None]
    views: list[str]
    drop: list[str]
    migrations: list[MigrationFile]
    job: dict[str, Any] | None = None
    discard_job: bool = False
    notes: list[str] = field(default_factory=list)
    not_mirrored: list[NotMirrored] = field(default_factory=list)

    @property
    def collections(self) -> list[str]:
        return [m.collection for _, m in self.pairs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current, "target_version": self.target, "kind": self.kind,
            "params": self.params.document(),
            "migrations": [{"version": m.version, "file": m.file, "description": m.description}
                           for m in self.migrations[:self.target]],
            "tables": [{"table": i.name, "collection": m.collection, "key": i.key_kind,
                        "rows": self.counts.get(i.name)} for i, m in self.pairs],
            "views_not_synced": self.views, "drop_collections": self.drop, "notes": self.notes,
            "not_mirrored": [n.document() for n in self.not_mirrored],
        }


class Migrator:
    """Plans and applies a move of the target database to a migration version."""

    def __init__(self, options: MigrateOptions, source: Source, db: Database,
                 migrations: list[MigrationFile], progress: Progress) -> None:
        self.options, self.source, self.db = options, source, db
        self.migrations, self.progress = migrations, progress
        self.store = StateStore(db, options.source_id)

    def plan(self, to: int | None = None) -> MigrationPlan:
        meta = self.store.meta()
        current = int(meta.get("version", 0)) if meta else 0
        latest = len(self.migrations)
        if to is None:
            if current > latest:
                raise MigrationError(
                    f"the database is at version {current} but the migrations folder has only "
                    f"{latest}: {folder_hint(self.migrations)}; to move down to {latest} "
                    f"instead, pass --to {latest}")
            target = latest
        else:
            target = to
        if not 0 <= target <= latest:
            raise ConfigError(f"--to {target}: there are migrations 0..{latest}")
        applied = self.store.applied()
        check_changelog(applied, self.migrations, target)
        params = resolve_params(self.options, meta)
        params = Params(params.source_id, params.timezone, target)
        model = build_model(self.migrations, target)
        schema: Schema = self.source.schema()
        pairs = model.resolve(schema, self.db.name)
        skipped = model.not_mirrored(schema, self.db.name)
        job = self.store.job()
        notes: list[str] = [
            f"{self.migrations[m.version - 1].file} maps table {m.table!r}, which the legacy "
            "database does not have: nothing to mirror until it exists (a typo?)"
            for m in model.tables.values() if m.table not in schema.tables
            and current < m.version <= target and not is_bundled(self.migrations[m.version - 1])]
        discard = False
        if job and job.get("kind") == "rebuild" and job.get("version") == target \
                and job.get("params") == params.document():
            kind = "resume"
            notes.append(f"resuming the unfinished migration to version {target} "
                         f"(phase {job['phase']})")
        else:
            if job:
                notes.append(f"discarding an unfinished migration to version "
                             f"{job.get('version')}")
                job, discard = None, True
            same = meta is not None and current == target and \
                (meta.get("params") or {}) == params.document()
            kind = "reconcile" if same else "rebuild"
        managed = list((meta or {}).get("collections", [])) + list(
            (meta or {}).get("declared", []))
        wanted = {m.collection for _, m in pairs} | set(model.declared)
        drop = [c for c in managed if c not in wanted]
        counts = {info.name: self.source.count(info) for info, _ in pairs}
        return MigrationPlan(current, target, kind, params, model, pairs, counts, schema.views,
                             drop, self.migrations, job, discard, notes, skipped)

    def _ensure_declared(self, model: Model) -> None:
        """Create the collections other sources fill (and their indexes) if missing."""
        target = MongoCollections(self.db, self.options.source_id)
        existing = target.names()
        for name in sorted(model.declared):
            if name not in existing:
                target.create(name)
            target.ensure_indexes(name, model.index_specs(name), by_source=False)

    def run(self, plan: MigrationPlan, sink: Sink, lease: Lease | None = None) -> Report:
        """Apply `plan` under the migration lease (or under `lease`, already held); the
        caller has checked the source's file (syncd.api, once per command)."""
        if lease is not None:
            return self._run(plan, sink, lease)
        lease = Lease(self.store, "migrate")
        lease.acquire()
        try:
            return self._run(plan, sink, lease)
        finally:
            lease.release()

    def _run(self, plan: MigrationPlan, sink: Sink, lease: Lease) -> Report:
        history = Baseline(HistoryStore(self.db, self.options.source_id), self.source,
                           self.options.history_exclude)
        backfill = Backfill(self.source, self.db, sink, self.store, plan.params,
                        self.options.chunk_size, self.progress, lease, history=history)
        schema = self.source.schema()
        if plan.discard_job:
            backfill.drop_staging(t.get("staging", "") for t in (self.store.job() or {}).get(
                "tables", []))
            self.store.clear_job()
        if plan.kind == "reconcile":
            report = backfill.reconcile(plan.pairs, plan.model, plan.target,
                                      [c for c in plan.drop if c not in plan.model.declared])
            self._ensure_declared(plan.model)
            self.store.save_meta(collections=plan.collections, declared=sorted(plan.model.declared),
                                 not_mirrored=[n.document() for n in plan.not_mirrored],
                                 last_run_at=utcnow())
        else:
            entries = [{"_id": m.version, "file": m.file, "description": m.description,
                        "checksum": m.checksum} for m in self.migrations[:plan.target]]
            job = plan.job
            if job is None:
                job = backfill.new_job(plan.pairs, plan.target, plan.current, entries)
            report = backfill.rebuild(job, plan.model, schema, resumed=plan.kind == "resume")
            # A job saved by an earlier syncd may hold a table syncd cannot mirror (a
            # name MongoDB cannot hold): its collection is not managed.
            existing = backfill.target.names()
            skipped = {n.table for n in plan.not_mirrored}
            wanted = {e["collection"] for e in job["tables"] if e["collection"] in
                      plan.collections or (e["collection"] in existing
                                           and e["table"] not in skipped)}
            for name in plan.drop:
                if name not in wanted and name not in plan.model.declared:
                    backfill.drop_own(name)
                    report.dropped.append(name)
            self._ensure_declared(plan.model)
            if plan.target < plan.current:
                report.notes += backfill.target.retire_indexes(plan.model, build_model(
                    self.migrations, len(self.migrations)), alone=not backfill.others())
            crashpoint("finish.before_changelog")
            now = utcnow()
            for entry in job["checksums"]:
                entry.setdefault("applied_at", now)
                entry.setdefault("seconds", round(report.seconds, 3))
            self.store.record_applied(job["checksums"], plan.target)
            self.store.save_meta(version=plan.target, params=plan.params.document(),
                                 collections=sorted(wanted),
                                 declared=sorted(plan.model.declared),
                                 not_mirrored=[n.document() for n in plan.not_mirrored],
                                 last_run_at=now)
            crashpoint("finish.before_clear")
            self.store.clear_job()
        history.record_views()
        history.record_left_out({info.name for info, _ in plan.pairs})
        report.notes = plan.notes + report.notes
        # "kind" names the run (what `syncd status` looks up); "plan" what it did.
        self.store.record_run({**report.to_dict(), "kind": "migrate", "plan": report.kind,
                               "sqlite": str(self.options.sqlite)})
        return report
