"""The target's collections as wholes: create, index, swap in, empty, drop.

The document sinks write documents; a rebuild also needs the collections around
them: a staging collection made with its indexes, swapped in by a rename, this
source's documents removed from a collection no table maps to any more. Those
writes live here, beside the sinks, so that the engine writes the target only
through `syncd/sinks/` (tests/test_owners.py checks it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure

from syncd.checkpoint.store import STAGE_PREFIX
from syncd.projection.model import IndexSpec, Model

ID_BATCH = 100  # keep `$in` lists short: some servers cost per element


def own(source_id: str) -> dict[str, Any]:
    """The filter for one source's documents."""
    return {"_source": source_id}


def stage_name(collection: str, source_id: str) -> str:
    """The staging collection of one source's rebuild of `collection`: named for the
    source too, so that a source starting a rebuild never drops another's staging."""
    tag = hashlib.blake2b(source_id.encode(), digest_size=4).hexdigest()
    return f"{STAGE_PREFIX}{collection}.{tag}"


def source_index(collection: Collection) -> None:
    """`{_source: 1, _id: 1}`: one source's documents found without a scan (reconcile,
    verify, deletes), and the shard key docs/fleet.md proposes."""
    collection.create_index([("_source", 1), ("_id", 1)], name="_source_1__id_1")


class MongoCollections:
    """One source's view of the target database's collections."""

    def __init__(self, db: Database, source_id: str) -> None:
        self.db, self.source_id = db, source_id

    def names(self) -> set[str]:
        return set(self.db.list_collection_names())

    def create(self, name: str) -> None:
        """Create `name` unless it exists (another source may create it at the same moment)."""
        try:
            self.db.create_collection(name)
        except CollectionInvalid:
            pass
        except OperationFailure as exc:
            if exc.code != 48:  # NamespaceExists: created between the check and the create
                raise

    def ensure_indexes(self, name: str, specs: Iterable[IndexSpec],
                       by_source: bool = True) -> None:
        """The source index (unless not `by_source`) and the model's `specs` (idempotent)."""
        if by_source:
            source_index(self.db[name])
        for spec in specs:
            self.db[name].create_index(list(spec.keys), name=spec.name)

    def is_empty(self, name: str) -> bool:
        return self.db[name].find_one({}, {"_id": 1}) is None

    def holds_others(self, name: str) -> bool:
        """Whether `name` holds another source's documents."""
        return self.db[name].find_one({"_source": {"$ne": self.source_id}},
                                      {"_id": 1}) is not None

    def delete_ids(self, name: str, ids: Sequence[Any]) -> None:
        """Remove documents by `_id`, unannounced (a staging collection's)."""
        for start in range(0, len(ids), ID_BATCH):
            self.db[name].delete_many({"_id": {"$in": list(ids[start:start + ID_BATCH])}})

    def delete_own(self, name: str) -> int:
        """Remove this source's documents of `name`; how many there were."""
        return self.db[name].delete_many(own(self.source_id)).deleted_count

    def count_own(self, name: str) -> int:
        """How many of this source's documents `name` holds."""
        return self.db[name].count_documents(own(self.source_id))

    def mirrored(self) -> list[str]:
        """The collections documents are mirrored into (every one but syncd's own)."""
        return sorted(n for n in self.names() if not n.startswith(("_syncd", "system.")))

    def own_staging(self) -> list[str]:
        """This source's staging collections (named for it: `stage_name`)."""
        return sorted(n for n in self.names() if n.startswith(STAGE_PREFIX) and
                      n == stage_name(n[len(STAGE_PREFIX):].rsplit(".", 1)[0], self.source_id))

    def drop_own(self, name: str) -> None:
        """Remove this source's documents of `name`; the collection too once empty."""
        self.delete_own(name)
        if self.is_empty(name):
            self.db.drop_collection(name)

    def drop_staging(self, names: Iterable[str]) -> None:
        """Remove the staging collections `names` (ones an abandoned migration left)."""
        existing = self.names()
        for name in names:
            if name.startswith(STAGE_PREFIX) and name in existing:
                self.db.drop_collection(name)

    def swap_in(self, staging: str, name: str) -> None:
        """Replace `name` by `staging` in one step (readers never see a half-built one)."""
        self.db[staging].rename(name, dropTarget=True)

    def retire_indexes(self, model: Model, newest: Model, alone: bool) -> list[str]:
        """On a move down (`syncd migrate --to N`), drop from each of `model`'s declared
        collections the indexes `newest` declares there and `model` does not; returns
        notes on what was dropped or kept.

        A declared collection (e.g. `hdf5_files`) is never rebuilt from the legacy
        tables, so a move down cannot shed a newer migration's index by swapping in a
        staging collection: it is dropped by name. Only indexes a newer migration of the
        folder declares (never one a person added), and only while this source is alone
        in the database: another source may be at the newer version and rely on them."""
        notes: list[str] = []
        for name in sorted(model.declared):
            retired = ({s.name for s in newest.index_specs(name)}
                       - {s.name for s in model.index_specs(name)})
            present = sorted(retired & set(self.db[name].index_information()))
            if not present:
                continue
            if not alone:
                notes.append(f"kept index(es) {', '.join(present)} of {name}: other sources "
                             "share this database and may be at a newer version")
                continue
            for index in present:
                self.db[name].drop_index(index)
            notes.append(f"dropped index(es) {', '.join(present)} of {name}")
        return notes
