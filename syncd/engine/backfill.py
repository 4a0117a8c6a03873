"""The backfill engine: legacy tables -> projected documents -> MongoDB, checkpointed.

Two ways to bring a collection to the projection of the legacy rows:

- **rebuild** (a new version, new parameters, or the first run): a collection
  that does not exist yet is filled directly; one that holds only this source's
  documents is replayed into a fresh staging collection with `insert_many`,
  indexes built there, and swapped in with `renameCollection` (dropTarget), so
  readers never see a half-built collection. One that holds other sources'
  documents (a shared database: renaming would replace theirs, and a sharded
  collection cannot be renamed) is rebuilt in place by a reconcile of this
  source's documents; each document's `_v` tells readers which version made it.
  The job document is the checkpoint: before each chunk is written its ids are
  saved as `pending`; after the write the position advances and `pending` is
  cleared. A crash (SIGKILL anywhere) resumes by deleting the pending ids from
  staging and re-reading from the saved position: nothing lost, nothing doubled.
- **reconcile** (same version and parameters): documents are compared by BSON
  bytes and only missing, different and extra ones are written. Idempotent, so a
  crash simply means running it again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any

from bson.binary import Binary
from pymongo.database import Database

from legacy_adapters.base import Chunk, Schema, Source, TableInfo
from legacy_adapters.values import RawText
from syncd.checkpoint.lease import Lease
from syncd.checkpoint.resync import request_reconcile
from syncd.checkpoint.store import STAGE_PREFIX, StateStore, utcnow
from syncd.engine.baseline import Baseline, start_of
from syncd.engine.compare import compare_docs, digest_steps, key_to_id, recheck
from syncd.engine.quarantine import quarantine
from syncd.engine.report import Report, TableReport
from syncd.faults import crashpoint
from syncd.progress import Progress
from syncd.projection.model import Model, TableMap
from syncd.projection.project import Params, Projected, Projector, gc_paused
from syncd.projection.unmirrored import shown
from syncd.projection.values import TEXT_SUBTYPE, to_bson
from syncd.sinks.base import Sink
from syncd.sinks.collections import MongoCollections, own, stage_name

log = logging.getLogger(__name__)


def encode_position(position: Any) -> Any:
    if isinstance(position, tuple):
        return [to_bson(v) for v in position]
    return position


def decode_position(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(RawText(bytes(v)) if isinstance(v, Binary) and v.subtype == TEXT_SUBTYPE
                     else v for v in value)
    return value


def read_projected(source: Source, table: TableInfo, projector: Projector, start: Any,
                   chunk_size: int, upto: Any = None) -> Iterator[tuple[Chunk, Projected]]:
    """Chunks of the table after `start` up to `upto`, each with its projected documents."""
    position = start
    while True:
        with gc_paused(promote=True):
            chunk = source.scan(table, position, chunk_size, upto)
            if not chunk.rows:
                return
            projected = projector.project(chunk.rows, careful=chunk.raw_text > 0)
        yield chunk, projected
        position = chunk.last


class Backfill:
    """A rebuild or a reconcile of whole mapped tables into the target database (what
    `syncd migrate` runs, and the daemon's reconciles)."""

    def __init__(self, source: Source, db: Database, sink: Sink, store: StateStore,
                 params: Params, chunk_size: int, progress: Progress,
                 lease: Lease | None = None,
                 history: Baseline | None = None) -> None:
        self.source, self.db, self.sink, self.store = source, db, sink, store
        self.target = MongoCollections(db, params.source_id)
        self.params, self.chunk_size, self.progress, self.lease = (
            params, chunk_size, progress, lease)
        # Records history's baseline (a snapshot per row, then the SQL) of each table
        # that has none yet, in the same read pass (syncd.engine.baseline).
        self.history = history

    def _renew(self) -> None:
        if self.lease is not None:
            self.lease.renew()

    # -- rebuild -------------------------------------------------------------------

    def drop_staging(self, names: Iterable[str]) -> None:
        """Remove the staging collections `names` an abandoned migration left behind."""
        self.target.drop_staging(names)

    def others(self) -> set[str]:
        """The other sources registered in this database (any may write here any moment)."""
        return StateStore(self.db, self.params.source_id).other_sources()

    def shared(self, collection: str) -> bool:
        """Whether `collection` holds, or may get at any moment, another source's documents:
        it has some, or another source is registered in the database. A rename replaces
        the whole collection, so it is only safe while this source is alone."""
        return bool(self.others()) or self.target.holds_others(collection)

    def drop_own(self, collection: str) -> None:
        """Remove this source's documents of `collection`; the collection too once empty."""
        self.target.drop_own(collection)

    def new_job(self, pairs: list[tuple[TableInfo, TableMap]], version: int,
                from_version: int, checksums: list[dict[str, Any]]) -> dict[str, Any]:
        """Start a rebuild: a job checkpoint at the beginning, one write target per table.

        A collection that exists with documents is rebuilt in a staging collection and
        swapped in at the end. One that does not exist yet (or is empty) has nothing
        for readers to lose, so it is filled in place: no copy at the swap, which some
        servers implement as a full copy (SecantusDB's renameCollection is O(n)).
        One that holds other sources' documents is reconciled in place (`inplace`).
        """
        mine = [stage_name(m.collection, self.params.source_id) for _, m in pairs]
        if not self.others():  # the unsuffixed names of versions before sources had tags
            mine += [STAGE_PREFIX + m.collection for _, m in pairs]
        self.drop_staging(mine)
        existing = self.target.names()
        tables = []
        for info, mapping in pairs:
            coll = mapping.collection
            direct = coll not in existing or self.target.is_empty(coll)
            inplace = not direct and self.shared(coll)
            tables.append({"table": info.name, "collection": coll, "inplace": inplace,
                           "staging": coll if direct or inplace
                           else stage_name(coll, self.params.source_id),
                           "position": None, "done": False,
                           "rows": 0, "docs": 0, "quarantined": 0, "raw_text": 0,
                           "flags": [], "seconds": 0.0})
        job = {"_id": "job", "kind": "rebuild", "version": version,
               "from_version": from_version, "params": self.params.document(),
               "checksums": checksums, "phase": "copy", "tables": tables,
               "pending": None, "started_at": utcnow()}
        self.store.clear_quarantine([t["table"] for t in tables])
        self.store.save_job(job)
        return job

    def _prepare(self, job: dict[str, Any], model: Model, mirrored: set[str]) -> None:
        """Create each write target with its indexes before the copy (idempotent).

        Indexes are maintained during the bulk load rather than built after it: with a
        server that syncs every commit, one commit per batch beats one per index entry.
        A table no longer `mirrored` (dropped, renamed, or one an earlier syncd could not
        write) gets no target: its collection name may be one MongoDB refuses.
        """
        existing = self.target.names()
        for entry in job["tables"]:
            if entry["done"] or entry["table"] not in mirrored:
                continue
            if entry["staging"] not in existing:
                self.target.create(entry["staging"])
            self.target.ensure_indexes(entry["staging"], model.index_specs(entry["collection"]))

    def rebuild(self, job: dict[str, Any], model: Model, schema: Schema,
                resumed: bool) -> Report:
        started = time.monotonic()
        report = Report("rebuild", job["from_version"], job["version"], resumed=resumed)
        mappings = {i.name: m for i, m in model.resolve(schema, self.db.name)}
        self._model = model
        if job["phase"] == "copy":
            self._prepare(job, model, set(mappings))
            for i, entry in enumerate(job["tables"]):
                report.tables.append(self._copy_table(i, entry, job, schema, mappings))
            self.store.update_job({"phase": "swap"})
            job["phase"] = "swap"
        else:
            report.tables = [self._entry_report(e) for e in job["tables"]]
        existing = self.target.names()
        for entry in job["tables"]:
            self._renew()
            if entry["staging"] != entry["collection"] and entry["staging"] in existing:
                info, mapping = schema.tables.get(entry["table"]), mappings.get(entry["table"])
                if self.shared(entry["collection"]) and info is not None and mapping:
                    # Another source wrote here since the copy began: a rename would
                    # replace its documents, so this source's are reconciled in place.
                    self.reconcile_table(info, mapping, model)
                    self.target.drop_staging([entry["staging"]])
                    continue
                crashpoint("swap.before_rename")
                self.target.swap_in(entry["staging"], entry["collection"])
                crashpoint("swap.after_rename")
                self._after_rename(entry["collection"])
        report.seconds = time.monotonic() - started
        return report

    def _after_rename(self, collection: str) -> None:
        """A source that registered between the check and the rename may have written
        into the replaced collection: hand it a reconcile, which writes back anything
        of its own that the rename dropped."""
        for other in sorted(self.others()):
            log.warning("source %r joined the database while %s was swapped in; asking it "
                        "to reconcile", other, collection)
            request_reconcile(StateStore(self.db, other), [])

    @staticmethod
    def _entry_report(entry: dict[str, Any]) -> TableReport:
        return TableReport(
            entry["table"], entry["collection"], rows=entry["rows"], written=entry["docs"],
            quarantined=entry["quarantined"], raw_text=entry["raw_text"],
            flags=Counter(dict(entry["flags"])), seconds=entry["seconds"])

    def _copy_table(self, i: int, entry: dict[str, Any], job: dict[str, Any], schema: Schema,
                    mappings: dict[str, TableMap]) -> TableReport:
        report = self._entry_report(entry)
        if entry["done"]:
            return report
        info, mapping = schema.tables.get(entry["table"]), mappings.get(entry["table"])
        if entry.get("inplace") and info is not None and mapping is not None:
            report = self.reconcile_table(info, mapping, self._model, check=True)
            self.store.update_job({f"tables.{i}.done": True, f"tables.{i}.rows": report.rows,
                                   f"tables.{i}.docs": report.written})
            return report
        pending = job.get("pending")
        if pending and pending["index"] == i:
            # A crash came between announcing this chunk and checkpointing it: undone, its
            # rows (and their baseline snapshots) are read again as they are now.
            self.target.delete_ids(entry["staging"], pending["ids"])
            if self.history is not None:
                self.history.undo(entry["table"], start_of(entry), pending["ids"])
            self.store.update_job({}, unset=("pending",))
        if info is None or mapping is None:
            log.warning("table %s disappeared from the legacy database during the migration "
                        "(or is not mirrored any more); the migration goes on without it",
                        shown(entry["table"]))
            self.store.update_job({f"tables.{i}.done": True})
            return report
        projector = Projector(info, mapping, self.params)
        position = decode_position(entry["position"])
        if "upto" not in entry:
            entry["upto"] = encode_position(self.source.high_water(info))
            self.store.update_job({f"tables.{i}.upto": entry["upto"]})
        upto = decode_position(entry["upto"])
        task = self.progress.task(f"{info.name} → {mapping.collection}",
                                  self.source.count(info))
        task.advance(report.rows)
        began = time.monotonic() - report.seconds
        self.source.check_intact(info)
        tpass = None if self.history is None else self.history.begin(info, start_of(entry))
        if tpass is not None and start_of(entry) is None:
            self.store.update_job({f"tables.{i}.baseline": tpass.start})
        chunks = read_projected(self.source, info, projector, position, self.chunk_size, upto)
        for chunk, projected in chunks if upto is not None else ():
            self._renew()
            self.store.update_job({"pending": {"index": i, "ids": [
                d["_id"] for d in (*projected.docs, *projected.quarantined)]}})
            crashpoint("copy.after_pending")
            rejected = self.sink.insert(entry["staging"], projected.docs)
            if tpass is not None:
                tpass.add(chunk, projector, projected)
            crashpoint("copy.after_insert")
            report.rows += len(chunk.rows)
            report.written += len(projected.docs) - len(rejected)
            report.raw_text += chunk.raw_text
            report.flags.update(projected.flags)
            if projected.quarantined or rejected:
                report.quarantined += quarantine(self.store, projector, chunk.rows,
                                                  projected.quarantined, rejected)
            report.seconds = time.monotonic() - began
            self.store.update_job({
                f"tables.{i}.position": encode_position(chunk.last),
                f"tables.{i}.rows": report.rows, f"tables.{i}.docs": report.written,
                f"tables.{i}.quarantined": report.quarantined,
                f"tables.{i}.raw_text": report.raw_text,
                f"tables.{i}.flags": [[k, v] for k, v in report.flags.items()],
                f"tables.{i}.seconds": report.seconds,
            }, unset=("pending",))
            crashpoint("copy.after_checkpoint")
            task.advance(len(chunk.rows))
        self.source.confirm_read(info, report.rows, upto)
        if tpass is not None:
            tpass.finish()
        self.store.update_job({f"tables.{i}.done": True})
        task.finish()
        return report

    # -- reconcile -----------------------------------------------------------------

    def reconcile(self, pairs: list[tuple[TableInfo, TableMap]], model: Model,
                  version: int, orphans: Sequence[str] = ()) -> Report:
        """Bring each mapped collection to the projection in place, writing only differences."""
        started = time.monotonic()
        report = Report("reconcile", version, version)
        for info, mapping in pairs:
            report.tables.append(self.reconcile_table(info, mapping, model, check=True))
        for name in orphans:
            count = self.target.delete_own(name)
            if count:
                report.notes.append(f"collection {name}: its legacy table is gone; "
                                    f"removed its {count} documents")
        report.seconds = time.monotonic() - started
        return report

    def reconcile_table(self, info: TableInfo, mapping: TableMap, model: Model,
                        check: bool = False) -> TableReport:
        """Write the differences, then delete what no row projects to, but only after
        the source confirmed the read was complete (a corrupt page reads short).

        `check` runs the source's whole-table check first (migrate: it reads
        everything anyway; the daemon's periodic reconcile does not).
        """
        steps = self.reconcile_steps(info, mapping, model, check)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def reconcile_steps(self, info: TableInfo, mapping: TableMap, model: Model,
                        check: bool = False) -> Generator[None, None, TableReport]:
        """`reconcile_table` as steps: it pauses (yields) after each chunk written and
        every 10,000 documents read (and after the last), so that its driver (the
        daemon's Reconciler) can apply new changes in between instead of stalling for
        the whole table; the generator's value is the report. A chunk's differences
        are checked again against the target as it is then (`recheck`)."""
        report = TableReport(info.name, mapping.collection)
        if check:
            self.source.check_intact(info)
        began = time.monotonic()
        self.target.ensure_indexes(mapping.collection, model.index_specs(mapping.collection))
        digests: dict[Any, bytes] = {}
        for _ in digest_steps(self.db[mapping.collection], own(self.params.source_id),
                              digests):
            self._renew()
            yield
        yield  # what was committed while the digests were read is applied before chunk 1
        held = self.store.quarantined_ids(info.name)
        seen_held: set[Any] = set()  # quarantined rows still in the table
        projector = Projector(info, mapping, self.params)
        task = self.progress.task(f"{info.name} → {mapping.collection}", self.source.count(info))
        tpass = None if self.history is None else self.history.begin(info)
        # no new baseline: the rows this reconcile repairs become versions of their own
        repairs = None if self.history is None or tpass else self.history.repairs(info)
        upto = self.source.high_water(info)
        chunks = read_projected(self.source, info, projector, None, self.chunk_size, upto)
        if repairs is not None:
            chunks = repairs.stamping(chunks)  # each stamped as it is read, after the pause
        for chunk, projected in chunks if upto is not None else ():
            self._renew()
            missing, different = recheck(self.db[mapping.collection],
                                         *compare_docs(projected.docs, digests))
            keys = (projector.legacy_keys(chunk.rows, projected.docs)
                    if (missing or different) and self.sink.wants_keys else None)
            rejected = self.sink.insert(mapping.collection, missing, keys)
            rejected += self.sink.upsert(mapping.collection, different, keys=keys)
            if tpass is not None:
                tpass.add(chunk, projector, projected)
            elif repairs is not None:
                bad = {r.id for r in rejected}
                repairs.add(chunk, projector, projected,
                            {d["_id"] for d in missing} - bad,
                            {d["_id"] for d in different} - bad)
            crashpoint("reconcile.after_write")
            report.rows += len(chunk.rows)
            report.written += len(missing) + len(different) - len(rejected)
            report.unchanged += len(projected.docs) - len(missing) - len(different)
            report.raw_text += chunk.raw_text
            report.flags.update(projected.flags)
            if projected.quarantined or rejected:
                report.quarantined += quarantine(self.store, projector, chunk.rows,
                                                  projected.quarantined, rejected)
            if held:
                bad = {r.id for r in rejected}
                fixed = [d["_id"] for d in projected.docs if d["_id"] in held
                         and d["_id"] not in bad]
                self.store.release_quarantine(info.name, fixed)
                ids = projector.chunk_ids(chunk.rows) or [
                    projector.make_id(projector.key(r)) for r in chunk.rows]
                seen_held.update(i for i in ids if i in held)
            task.advance(len(chunk.rows))
            yield
        self.source.confirm_read(info, report.rows, upto)
        if tpass is not None:
            tpass.finish()
        extras = [key_to_id(k) for k in digests]
        for start in range(0, len(extras), 1000):
            report.deleted += self.sink.delete(mapping.collection, extras[start:start + 1000])
        if repairs is not None and extras:
            repairs.deleted(extras)
        # A quarantined row deleted since has no document to find as extra: it leaves the
        # quarantine, and its history ends in a delete (else a restore would bring it back).
        gone = list(held - seen_held)
        if gone:
            self.store.release_quarantine(info.name, gone)
            if repairs is not None:
                repairs.deleted(gone)
        task.finish()
        report.seconds = time.monotonic() - began
        return report
