"""`syncd verify`: prove the target equals the projection of the legacy source.

Every source row is projected with the applied version's model and parameters
and compared, by BSON bytes, with the stored document; documents no row
projects to are extra. Quarantined rows and an unfinished migration are
differences too: verify passes only when source == target exactly, for every
table syncd mirrors. A table it cannot mirror (syncd.projection.unmirrored) is
listed as "not mirrored" with the reason, and does not fail verify: nothing of it
is in the target to differ, and `migrate` and `run` said so when they skipped it.

History is checked too (syncd.engine.verify_history): each row's last version in
`_syncd_history` must be the row as it is, and a row no longer in the table must end in a
delete, so a restore as of now gives the table back; a table history keeps no rows of
(`[history] exclude`) is named in a note instead.

`lossless=True` (`verify --lossless`) also proves every row comes back from its
document exactly (syncd.engine.lossless), and names each mapping that cannot be
proved (a builder without an inverse) as lossy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from legacy_adapters.base import Source
from syncd.checkpoint.store import StateStore
from syncd.engine.backfill import read_projected
from syncd.engine.compare import compare_docs, key_to_id, target_digests
from syncd.engine.lossless import losses, lossy_line
from syncd.engine.migration_files import MigrationFile, build_model
from syncd.engine.migrator import check_changelog
from syncd.engine.verify_history import HistoryCompare
from syncd.progress import Progress
from syncd.projection.inverse import Inverter
from syncd.projection.project import Params, Projector
from syncd.projection.unmirrored import NotMirrored
from syncd.sinks.collections import own
from syncd.sinks.history_reader import HistoryReader

SAMPLES = 5


@dataclass
class CollectionCheck:
    collection: str
    table: str | None
    source_rows: int = 0
    target_docs: int = 0
    missing: int = 0
    different: int = 0
    extra: int = 0
    quarantined: int = 0
    not_given_back: int = 0  # --lossless: rows their document does not give back
    # History: rows with no version, rows whose last version differs, rows the table no
    # longer has whose history does not end in a delete.
    history_missing: int = 0
    history_different: int = 0
    history_extra: int = 0
    samples: dict[str, list[Any]] = field(
        default_factory=lambda: {"missing": [], "different": [], "extra": [],
                                 "not_given_back": [], "history_missing": [],
                                 "history_different": [], "history_extra": []})

    @property
    def history(self) -> int:
        return self.history_missing + self.history_different + self.history_extra

    @property
    def ok(self) -> bool:
        return not (self.missing or self.different or self.extra or self.quarantined
                    or self.not_given_back or self.history)

    def sample(self, kind: str, keys: list[Any]) -> None:
        room = max(SAMPLES - len(self.samples[kind]), 0)
        self.samples[kind].extend(keys[:room])

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "table": self.table,
                "source_rows": self.source_rows, "target_docs": self.target_docs,
                "missing": self.missing, "different": self.different, "extra": self.extra,
                "quarantined": self.quarantined, "not_given_back": self.not_given_back,
                "history_missing": self.history_missing,
                "history_different": self.history_different,
                "history_extra": self.history_extra, "ok": self.ok,
                "samples": {k: [_plain(v) for v in vs] for k, vs in self.samples.items()}}


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a sample key."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class VerifyReport:
    version: int | None
    params: dict[str, Any] | None
    collections: list[CollectionCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    not_mirrored: list[NotMirrored] = field(default_factory=list)
    lossless: bool = False  # checked with --lossless
    lossy: list[str] = field(default_factory=list)  # mappings that declare no inverse
    notes: list[str] = field(default_factory=list)
    cache: Any = None  # the cache's check (syncd.hdf5.check.CacheCheck), with --hdf5-dir

    @property
    def ok(self) -> bool:
        return not self.problems and not self.lossy and self._equal

    @property
    def _equal(self) -> bool:
        return all(c.ok for c in self.collections) and (self.cache is None or self.cache.ok)

    @property
    def exit_code(self) -> int:
        """0 equal (and lossless, when checked); 1 a difference or problem; 3 no
        difference, but a mapping is lossy (--lossless cannot prove it)."""
        if self.problems or not self._equal:
            return 1
        return 3 if self.lossy else 0

    def total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "version": self.version, "params": self.params,
                "problems": self.problems, "lossless": self.lossless, "lossy": self.lossy,
                "notes": self.notes,
                "cache": None if self.cache is None else self.cache.to_dict(),
                "not_mirrored": [n.document() for n in self.not_mirrored],
                "totals": {k: self.total(k) for k in ("source_rows", "target_docs", "missing",
                                                      "different", "extra", "quarantined",
                                                      "not_given_back", "history_missing",
                                                      "history_different",
                                                      "history_extra")},
                "collections": [c.to_dict() for c in self.collections]}


def _foreign(db: Database, names: list[str]) -> list[str]:
    """A line per collection holding documents of no source (no `_source`): every reader
    shows them, and no source's verify compares them."""
    lines = []
    for name in names:
        query = {"_source": None}  # missing or null
        count = db[name].count_documents(query)
        if count:
            ids = [str(d["_id"]) for d in db[name].find(query, {"_id": 1}).limit(SAMPLES)]
            lines.append(f"collection {name}: {count} document(s) of no source (no _source), "
                         f"e.g. {', '.join(ids)}: no source's verify compares them, yet every "
                         "reader shows them")
    return lines


def verify(db: Database, source: Source, migrations: list[MigrationFile], chunk_size: int,
           progress: Progress, source_id: str = "", lossless: bool = False) -> VerifyReport:
    """Compare source `source_id`'s rows with its documents (other sources' are not read);
    `lossless`: and each row with what its document gives back."""
    store = StateStore(db, source_id)
    meta = store.meta()
    if not meta or "version" not in meta:
        report = VerifyReport(None, None)
        report.problems.append(f"database {db.name!r} holds no migrated data of source "
                               f"{source_id!r}: run syncd migrate")
        return report
    version = int(meta["version"])
    report = VerifyReport(version, meta.get("params"), lossless=lossless)
    try:
        check_changelog(store.applied(), migrations, version)
    except Exception as exc:
        report.problems.append(str(exc))
        return report
    if store.job():
        report.problems.append("a migration is unfinished: run syncd migrate to complete it")
    params = Params(**meta["params"], version=version)
    model = build_model(migrations, version)
    schema = source.schema()
    pairs = model.resolve(schema, db.name)
    report.not_mirrored = model.not_mirrored(schema, db.name)
    left_out = sorted(set(schema.tables) & model.excluded)
    if left_out:  # the user's choice, not a failure: said, so it is never a surprise
        report.notes.append("left out by the model (a migration's exclude_table), not "
                            "compared: " + ", ".join(left_out))
    if lossless:
        report.notes += [f"collection {name} is filled from the legacy {owner} files (they "
                         "stay the record), not from table rows: nothing to give back"
                         for name, owner in sorted(model.declared.items())]
    reader = HistoryReader(db, source_id)
    for info, mapping in pairs:
        check = CollectionCheck(mapping.collection, info.name)
        report.collections.append(check)
        digests = target_digests(db[mapping.collection], None, own(source_id))
        check.target_docs = len(digests)
        projector = Projector(info, mapping, params)
        inverter = None
        if lossless:
            if mapping.invertible:
                inverter = Inverter(info, mapping, params)
            else:
                report.lossy.append(lossy_line(info.name, mapping))
        history = None
        if reader.keeps_rows(info.name):
            history = HistoryCompare(reader, info)
        else:
            report.notes.append(f"history keeps no rows of table {info.name} ([history] "
                                "exclude): its history not compared")
        task = progress.task(f"{info.name} ⇄ {mapping.collection}", source.count(info))
        upto = source.high_water(info)
        source.check_intact(info)  # a corrupt table is an error, never a pass
        chunks = read_projected(source, info, projector, None, chunk_size, upto)
        for chunk, projected in chunks if upto is not None else ():
            check.source_rows += len(chunk.rows)
            check.quarantined += len(projected.quarantined)  # rows that cannot be projected
            missing, different = compare_docs(projected.docs, digests)
            check.missing += len(missing)
            check.different += len(different)
            if missing or different:
                keys = {projector.make_id(projector.key(r)): projector.key_document(r)
                        for r in chunk.rows}
                for kind, docs in (("missing", missing), ("different", different)):
                    check.sample(kind, [keys[d["_id"]] for d in docs[:SAMPLES]])
            if history is not None:
                ids = projector.chunk_ids(chunk.rows) or [
                    projector.make_id(projector.key(r)) for r in chunk.rows]
                no_version, changed = history.compare(ids, chunk.rows)
                check.history_missing += len(no_version)
                check.history_different += len(changed)
                for kind, at in (("history_missing", no_version),
                                 ("history_different", changed)):
                    check.sample(kind, [projector.key_document(chunk.rows[i])
                                        for i in at[:SAMPLES]])
            if inverter is not None:
                lost = losses(projector, inverter, chunk.rows, projected.docs)
                check.not_given_back += len(lost)
                room = max(SAMPLES - len(check.samples["not_given_back"]), 0)
                check.samples["not_given_back"].extend(x.document() for x in lost[:room])
            task.advance(len(chunk.rows))
        source.confirm_read(info, check.source_rows, upto)
        task.finish()
        check.extra = len(digests)
        check.samples["extra"] = [str(key_to_id(k)) for k in list(digests)[:SAMPLES]]
        if history is not None:
            kept = history.extra_keys()
            check.history_extra = len(kept)
            check.sample("history_extra", [{"key": k} for k in kept[:SAMPLES]])
    wanted = {m.collection for _, m in pairs}
    report.problems += _foreign(db, sorted(wanted))
    for name in meta.get("collections", []):
        if name not in wanted:
            count = db[name].count_documents(own(source_id))
            check = CollectionCheck(name, None, target_docs=count, extra=count)
            report.collections.append(check)
            if count:
                report.problems.append(f"collection {name}: no legacy table maps to it any more")
    return report
