"""A small read API over the synced experiment model (collections from migration 0002).

The same queries the legacy MongoDB experiment tracker offered, so dashboards and
new scripts can use them directly: best experiments of a challenge, one
experiment's history, a side-by-side comparison, and a free filter search.
Experiments can be named by their `_id` (ObjectId hex) or by the legacy `run_id`.
Every answer covers all sources of the database unless `source` narrows it, and
each experiment says which source it came from (`_source`); a run_id that several
sources have is refused, naming them (the `_id` is unique).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING
from pymongo.database import Database

from syncd.client.ranking import fetch, ranked_ids
from syncd.errors import ConfigError, SyncdError
from syncd.projection.envelope import ORIG

if TYPE_CHECKING:
    from syncd.client.asof import Moment
    from syncd.engine.migration_files import MigrationFile

# `_orig` (what a conversion dropped, for `syncd verify --lossless` and restore) is the
# legacy value again, not something to show: no answer here includes it.
WHOLE = {ORIG: 0}
SUMMARY = {"run_id": 1, "challenge": 1, "status": 1, "model.name": 1, "metrics": 1,
           "start_time": 1, "end_time": 1, "config": 1, "notes": 1, "_source": 1}


class Tracker:
    """Queries over every source's experiments, or over `source`'s alone; with `as_of`
    (a time), over them as they were then (`AsOfTracker`, below; `migrations`: the
    files the sources were migrated with, default the bundled ones)."""

    def __new__(cls, db: Database, source: str | None = None, as_of: Any = None,
                migrations: Any = None) -> Tracker:
        if as_of is not None and cls is Tracker:
            cls = AsOfTracker
        return super().__new__(cls)

    def __init__(self, db: Database, source: str | None = None, as_of: Any = None,
                 migrations: Any = None) -> None:
        self.db = db
        self.source = source
        self.experiments = db["experiments"]
        self.epochs = db["epochs"]
        self.checkpoints = db["checkpoints"]

    def _scoped(self, match: dict[str, Any]) -> dict[str, Any]:
        return {**match, "_source": self.source} if self.source else match

    # Said after "no experiment with run_id ...": a deleted run is gone from the live
    # view, not from history (an as-of reader already answers from history: no hint).
    missing_hint = ("; if it was deleted, `syncd experiments history {ref} --versions` "
                    "lists its versions and --as-of a moment before the delete shows it")

    def experiment_id(self, ref: str | int | ObjectId) -> ObjectId:
        """An experiment `_id` from an ObjectId, its hex, or a legacy run_id."""
        if isinstance(ref, ObjectId):
            return ref
        text = str(ref)
        if len(text) == 24:
            try:
                return ObjectId(text)
            except InvalidId:
                pass
        try:
            run_id: Any = int(text)
        except ValueError:
            run_id = text
        if isinstance(run_id, int) and not -2**63 <= run_id < 2**63:
            # No BSON integer is that large (pymongo would raise OverflowError).
            raise SyncdError(f"no experiment with run_id or _id {text!r}")
        docs = list(self.experiments.find(self._scoped({"run_id": run_id}),
                                          {"_id": 1, "_source": 1}).limit(10))
        if not docs:
            raise SyncdError(f"no experiment with run_id or _id {text!r}"
                             f"{self.missing_hint.format(ref=text)}")
        if len(docs) > 1:
            names = ", ".join(sorted({str(d.get("_source")) for d in docs}))
            raise SyncdError(f"run_id {text!r} is in several sources ({names}): pass --source "
                             "or the experiment's _id")
        return docs[0]["_id"]

    @staticmethod
    def best_match(challenge: int, status: str | None = "completed") -> dict[str, Any]:
        """The filter of `best_experiments`: of `challenge`, with a best validation loss."""
        match: dict[str, Any] = {"challenge": challenge,
                                 "metrics.best_val_loss": {"$type": "number"}}
        if status:
            match["status"] = status
        return match

    def best_experiments(self, challenge: int, n: int = 10, status: str | None = "completed",
                         offset: int = 0) -> list[dict[str, Any]]:
        """The `n` experiments of `challenge` with the lowest best validation loss, after
        the first `offset` (`best_page` also says how many there are in all)."""
        return self.best_page(challenge, n, status, offset)[0]

    def best_page(self, challenge: int, n: int = 10, status: str | None = "completed",
                  offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The `n` experiments of `challenge` with the lowest best validation loss (after
        the first `offset`), and how many there are in all.

        Ordered here from one projected pass over the matching runs (their `_id`, loss
        and run_id: syncd.client.ranking), and the page fetched by `_id`: any page, and
        the count, for the cost of one read; sorted and skipped by the server (and
        counted apart) only if a run holds a value that module does not order.
        """
        match = self._scoped(self.best_match(challenge, status))
        ids = ranked_ids(self.experiments, match)
        if ids is not None:
            return fetch(self.experiments, ids[offset:offset + n], SUMMARY), len(ids)
        docs = list(self.experiments.find(match, SUMMARY)
                    .sort([(LOSS, ASCENDING), ("run_id", ASCENDING), ("_id", ASCENDING)])
                    .skip(offset).limit(n))
        return docs, self.count(self.best_match(challenge, status))

    def why_no_best(self, challenge: int, status: str | None = "completed") -> str:
        """One line saying why `best_page` found nothing: what exists instead."""
        where = f"database {self.db.name!r}"
        total = self.experiments.count_documents(self._scoped({}))
        if total == 0:
            return (f"no experiments in {where} (nothing migrated there with the EEG2025 model, "
                    "or the data is in another --database)")
        counts = self._status_counts({"challenge": challenge})
        if not counts:
            others = sorted(c for c in self.experiments.distinct("challenge", self._scoped({}))
                            if c is not None)
            return (f"no experiments for challenge {challenge} in {where}; its {total} "
                    f"experiment(s) are of challenge {', '.join(map(str, others)) or '(none)'}")
        having = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: -i[1]))
        found = f"its {sum(counts.values())} experiment(s): {having}"
        if status and self.experiments.count_documents(self._scoped(
                {"challenge": challenge, "metrics.best_val_loss": {"$type": "number"}})):
            return (f"no {status} experiments with a best_val_loss for challenge {challenge}; "
                    f"{found} (--status '' for any status; syncd experiments search lists them)")
        return (f"no experiment of challenge {challenge} has a best_val_loss yet; {found} "
                "(syncd experiments search lists them)")

    def why_no_match(self, query: dict[str, Any]) -> str:
        """One line saying why `search` found nothing."""
        counts = self._status_counts({})
        having = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: -i[1]))
        return (f"no experiments match {query} in database {self.db.name!r}"
                + (f" (it holds {having})" if having else " (it holds no experiments)"))

    def _status_counts(self, match: dict[str, Any]) -> dict[str, int]:
        groups = self.experiments.aggregate([{"$match": self._scoped(match)},
                                             {"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        return {str(g["_id"]): int(g["n"]) for g in groups}

    def history(self, ref: str | int | ObjectId) -> dict[str, Any]:
        """One experiment with its epochs and checkpoints, in epoch order."""
        oid = self.experiment_id(ref)
        experiment = self.experiments.find_one({"_id": oid}, WHOLE)
        if experiment is None:
            raise SyncdError(f"no experiment with _id {oid}")
        order = [("epoch", ASCENDING), ("_id", ASCENDING)]
        return {
            "experiment": experiment,
            "epochs": list(self._of_experiment("epochs", oid)
                           .find({"experiment_id": oid}, WHOLE).sort(order)),
            "checkpoints": list(self._of_experiment("checkpoints", oid)
                                .find({"experiment_id": oid}, WHOLE).sort(order)),
        }

    def _of_experiment(self, name: str, oid: ObjectId) -> Any:
        """Where `history` reads one experiment's `name` (epochs, checkpoints) from: the
        collection (an as-of Tracker narrows it to what that run's rows rebuild)."""
        return self.epochs if name == "epochs" else self.checkpoints

    def compare(self, refs: Iterable[str | int | ObjectId]) -> list[dict[str, Any]]:
        """Summaries of several experiments side by side, in the order asked."""
        ids = [self.experiment_id(r) for r in refs]
        found = {d["_id"]: d for d in self.experiments.find({"_id": {"$in": ids}}, SUMMARY)}
        return [found[i] for i in ids if i in found]

    def search(self, query: dict[str, Any] | None = None, sort: list[tuple[str, int]] | None = None,
               limit: int = 0, offset: int = 0) -> list[dict[str, Any]]:
        """Experiments matching a MongoDB filter (`offset` of them skipped)."""
        cursor = self.experiments.find(self._scoped(query or {}), SUMMARY)
        cursor = cursor.sort(sort or [("run_id", ASCENDING), ("_id", ASCENDING)])
        if offset:
            cursor = cursor.skip(offset)
        if limit:
            cursor = cursor.limit(limit)
        return list(cursor)

    def count(self, query: dict[str, Any] | None = None) -> int:
        """How many experiments match a MongoDB filter (the same scope as `search`)."""
        return self.experiments.count_documents(self._scoped(query or {}))

    def best_first(self, query: dict[str, Any], offset: int = 0,
                   limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """One page of the experiments matching `query`, best validation loss first
        (those without one last, by run_id), and how many match in all.

        The server's path: the dashboard pages from its own order (syncd.client.
        ranking_feed) and comes here only while that is not ready or cannot answer.
        Sorted and skipped by the server in two ranges (with a loss, by it; then
        without, by run_id), so no more than one page ever crosses the wire. A loss is
        a number from -Infinity up (a range the `{metrics.best_val_loss: 1, run_id: 1}`
        index of migration 0004 serves; SQLite holds no NaN). A page the last read of
        this filter placed in the first range is read first, and the first range is
        counted only when the page turns out to lie past it; any other page counts it
        first, to read only the ranges it lies in.
        """
        scoped = self._scoped(query)
        # An empty filter is the whole collection: its size comes from the server's
        # count, not a pass over the runs.
        total = (self.experiments.count_documents(scoped) if scoped
                 else self.experiments.estimated_document_count())
        if offset >= total:
            return [], total
        with_loss = _also(scoped, HAS_LOSS)
        key = (id(self.db.client), self.db.name, repr(scoped))
        ranked: int | None = None
        if offset and offset >= _ranked.get(key, 0):
            ranked = self.experiments.count_documents(with_loss)
        docs: list[dict[str, Any]] = []
        if ranked is None or offset < ranked:
            docs = list(self.experiments.find(with_loss, SUMMARY)
                        .sort([(LOSS, ASCENDING), ("run_id", ASCENDING), ("_id", ASCENDING)])
                        .skip(offset).limit(limit))
        if len(docs) < limit:  # the page reaches the runs without a loss
            if ranked is None:
                ranked = (offset + len(docs) if docs or not offset
                          else self.experiments.count_documents(with_loss))
            # Sources of a fleet share run_ids: `_id` makes the order, and so the pages,
            # the same on every read.
            docs += list(self.experiments.find(_also(scoped, NO_LOSS), SUMMARY)
                         .sort([("run_id", ASCENDING), ("_id", ASCENDING)])
                         .skip(max(0, offset - ranked)).limit(limit - len(docs)))
        if ranked is not None:
            if len(_ranked) >= RANKED_KEPT:
                _ranked.clear()
            _ranked[key] = ranked
        return docs, total


class AsOfTracker(Tracker):
    """The Tracker's queries on the experiments, epochs and checkpoints as they were at
    `as_of` (made by `Tracker(db, as_of=...)`): the same methods over the in-memory
    collections of syncd.client.asof's view; `scope` says which moment and sources."""

    def __init__(self, db: Database, source: str | None = None, as_of: Moment | None = None,
                 migrations: Sequence[MigrationFile] | None = None) -> None:
        # The rebuild (SQLAlchemy, the projection) only when a moment is asked for: the
        # live Tracker's importers (notebooks, `syncd experiments`) do not pay for it.
        from syncd.client.asof import view

        super().__init__(db, source)
        if as_of is None:
            raise SyncdError("AsOfTracker needs a time (as_of)")
        self.view = view(db, as_of, source, migrations)
        self.migrations = migrations
        self.scope = self.view.scope
        self.as_of = self.scope.moment
        self.experiments = self.view.collection("experiments")  # type: ignore[assignment]
        self.epochs = self.view.collection("epochs")  # type: ignore[assignment]
        self.checkpoints = self.view.collection("checkpoints")  # type: ignore[assignment]

    def _of_experiment(self, name: str, oid: ObjectId) -> Any:
        """That run's rows alone (rebuilding every run's epochs would cost the whole
        table's history): `AsOfView.of_run`."""
        return self.view.of_run(name, oid, self.migrations)

    missing_hint = ""

    def experiment_id(self, ref: str | int | ObjectId) -> ObjectId:
        try:
            return super().experiment_id(ref)
        except ConfigError:
            raise  # a refused moment (`[history] keep`) names it already, exit 2 kept
        except SyncdError as exc:
            from syncd.client.asof import shown

            raise SyncdError(f"{exc} (as of {shown(self.as_of)})") from None


LOSS = "metrics.best_val_loss"
HAS_LOSS = {"$gte": float("-inf")}
NO_LOSS = {"$not": HAS_LOSS}
RANKED_KEPT = 256
# How many runs of a filter had a loss when last counted (per client, database and
# filter): only which range a page is read from first, never what it shows.
_ranked: dict[tuple[int, str, str], int] = {}


def _also(match: dict[str, Any], loss: dict[str, Any]) -> dict[str, Any]:
    """`match` and a condition on the loss: one flat filter (which the server can answer
    from an index) unless `match` has a condition on the loss of its own."""
    if LOSS in match:
        return {"$and": [match, {LOSS: loss}]}
    return {**match, LOSS: loss}
