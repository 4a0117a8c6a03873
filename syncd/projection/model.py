"""The projection model that migrations build, version by version.

A migration's `upgrade(model)` changes which legacy table goes to which
collection, how a row becomes a document (`build`) and back (`inverse`: a document
to the row's column values, what `syncd verify --lossless` proves exact), and which
indexes exist.
The model at version N is what upgrades 1..N leave behind; the documents in
MongoDB are a deterministic function of (legacy rows, model, parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from legacy_adapters.base import Schema, TableInfo
from syncd.checkpoint.store import STAGE_PREFIX
from syncd.errors import MigrationError
from syncd.projection.unmirrored import NO_KEY, RESERVED, TAKEN, TOO_LONG, NotMirrored, shown

if TYPE_CHECKING:
    from syncd.projection.context import RowContext
    from syncd.projection.inverse_context import InverseContext

Builder = Callable[[Mapping[str, Any], "RowContext"], dict[str, Any]]
Inverse = Callable[[Mapping[str, Any], "InverseContext"], Mapping[str, Any]]

STATE_PREFIX = "_syncd_"
# MongoDB (4.4 and later) holds a namespace "database.collection" of at most 255 UTF-8
# bytes; a rebuild also writes the collection's staging copy, "_syncd_stage.<name>.<tag>".
NAMESPACE_BYTES = 255
STAGING_BYTES = len(STAGE_PREFIX) + len(".") + 8
DATABASE_BYTES = 64  # the longest database name MongoDB allows (no database given)


@dataclass(frozen=True)
class IndexSpec:
    """A secondary index: keys as (field, 1 | -1) pairs. Never unique on legacy data."""

    keys: tuple[tuple[str, int], ...]
    name: str


@dataclass(frozen=True)
class TableMap:
    """Where one legacy table goes. `build=None` is the generic mapping (all columns),
    whose inverse syncd knows; a builder is lossless only with its `inverse`. `version`:
    the migration that made this mapping (0 until build_model stamps it)."""

    table: str
    collection: str
    build: Builder | None = None
    inverse: Inverse | None = None
    version: int = 0

    @property
    def invertible(self) -> bool:
        return self.build is None or self.inverse is not None


def collection_for_table(table: str) -> str:
    """The collection a table maps to generically: its own name, made MongoDB-safe."""
    name = table.replace("$", "\uff04").replace("\x00", "")
    if name.startswith("."):  # MongoDB refuses a collection name that starts with "."
        name = "\uff0e" + name[1:]
    if name.startswith(("system.", STATE_PREFIX)) or not name:
        name = "\uff3f" + name
    return name


def collection_room(database: str | None) -> int:
    """The most UTF-8 bytes a collection name may have in `database` (None: in any)."""
    db_bytes = DATABASE_BYTES if database is None else len(database.encode())
    return NAMESPACE_BYTES - db_bytes - len(".") - STAGING_BYTES


def _check_collection(name: str) -> str:
    if not name or "$" in name or "\x00" in name or name.startswith(("system.", STATE_PREFIX)):
        raise MigrationError(f"{name!r} is not a collection name syncd may write")
    return name


@dataclass
class Model:
    """The projection as the migrations applied so far define it."""

    version: int = 0
    all_tables: bool = False
    tables: dict[str, TableMap] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    indexes: dict[str, dict[str, IndexSpec]] = field(default_factory=dict)
    # Collections filled by another source (e.g. the HDF5 indexer), not by table replay:
    # name -> owner. Migrate creates them and their indexes and never rebuilds them.
    declared: dict[str, str] = field(default_factory=dict)

    # -- the API migrations call -------------------------------------------------

    def map_all_tables(self) -> None:
        """Every legacy table (now or later) goes to a same-named collection, all columns."""
        self.all_tables = True

    def map_table(self, table: str, collection: str | None = None,
                  build: Builder | None = None, inverse: Inverse | None = None) -> None:
        """Send `table` to `collection` (default: its own name), built by `build`;
        `inverse(doc, ctx)` gives the row's column values back from the document."""
        if inverse is not None and build is None:
            raise MigrationError(f"map_table({table!r}): an inverse needs a build (the "
                                 "generic mapping has its own)")
        coll = _check_collection(collection) if collection else collection_for_table(table)
        old = self.tables.get(table)
        if old is not None and old.collection != coll:
            self.indexes.pop(old.collection, None)
        self.tables[table] = TableMap(table, coll, build, inverse)
        self.excluded.discard(table)

    def exclude_table(self, table: str) -> None:
        """Stop syncing `table`."""
        old = self.tables.pop(table, None)
        if old is not None:
            self.indexes.pop(old.collection, None)
        self.excluded.add(table)

    def create_index(self, collection: str, keys: Iterable[tuple[str, int]],
                     name: str | None = None) -> None:
        """Declare a secondary index. Unique indexes are not offered: legacy data is the truth."""
        wrong = MigrationError(f"create_index({collection!r}, {keys!r}): keys must be a list of "
                               "(field, 1 | -1) pairs, e.g. [(\"name\", 1)]")
        if isinstance(keys, (str, bytes)):
            raise wrong
        try:
            keys = tuple((str(f), int(d)) for f, d in keys)
        except (TypeError, ValueError):
            raise wrong from None
        if not keys or any(d not in (1, -1) for _, d in keys):
            raise wrong
        name = name or "_".join(f"{f}_{d}" for f, d in keys)
        self.indexes.setdefault(_check_collection(collection), {})[name] = IndexSpec(keys, name)

    def declare_collection(self, collection: str, owner: str) -> None:
        """A collection another part of syncd fills (`owner`, e.g. "hdf5")."""
        self.declared[_check_collection(collection)] = owner

    # -- what the engine asks ----------------------------------------------------

    def resolve(self, schema: Schema,
                database: str | None = None) -> list[tuple[TableInfo, TableMap]]:
        """The concrete (table, mapping) pairs for a legacy schema, in table-name order:
        the tables syncd can mirror into `database` (`not_mirrored` says which not)."""
        return self._resolve(schema, database)[0]

    def not_mirrored(self, schema: Schema, database: str | None = None) -> list[NotMirrored]:
        """The legacy tables this model would map but syncd cannot mirror, and why."""
        return self._resolve(schema, database)[1]

    def _resolve(self, schema: Schema, database: str | None
                 ) -> tuple[list[tuple[TableInfo, TableMap]], list[NotMirrored]]:
        skipped = [NotMirrored(name, RESERVED, f"names starting with {STATE_PREFIX} are "
                               "reserved for syncd's own tables (rename it to mirror it)")
                   for name in schema.reserved
                   if name not in self.excluded and (self.all_tables or name in self.tables)]
        room = collection_room(database)
        candidates: list[tuple[TableInfo, TableMap, bool]] = []
        for name, info in sorted(schema.tables.items()):
            if name in self.excluded:
                continue
            mapping = self.tables.get(name)
            generic = mapping is None
            if mapping is None:
                if not self.all_tables:
                    continue
                mapping = TableMap(name, collection_for_table(name))
            size = len(mapping.collection.encode("utf-8", "surrogatepass"))
            if size > room:
                where = "any database" if database is None else f"database {database!r}"
                skipped.append(NotMirrored(name, TOO_LONG, (
                    f"its collection name would be {size} bytes; MongoDB holds {room} in "
                    f"{where} (a {NAMESPACE_BYTES}-byte namespace, less syncd's staging "
                    "suffix)")))
            elif not info.addressable:
                skipped.append(NotMirrored(name, NO_KEY, (
                    "it has no primary key and columns named rowid, _rowid_ and oid hide "
                    "its rowid")))
            else:
                candidates.append((info, mapping, generic))
        # Explicit mappings claim their collections first, then tables named as their
        # collection: a generically mapped table whose collection is taken is skipped.
        seen: dict[str, str] = {c: f"({owner})" for c, owner in self.declared.items()}
        order = sorted(candidates, key=lambda c: (c[2], c[1].collection != c[0].name))
        pairs: list[tuple[TableInfo, TableMap]] = []
        for info, mapping, generic in order:
            other = seen.setdefault(mapping.collection, info.name)
            if other == info.name:
                pairs.append((info, mapping))
            elif generic:
                owner = (f"syncd's {other[1:-1]} collection" if other.startswith("(")
                         else f"the mirror of table {shown(other)}")
                skipped.append(NotMirrored(info.name, TAKEN, (
                    f"its collection {shown(mapping.collection)} is already "
                    f"{owner}")))
            else:
                raise MigrationError(f"tables {other} and {info.name} both map to collection "
                                     f"{mapping.collection}")
        pairs.sort(key=lambda p: p[0].name)
        skipped.sort(key=lambda n: n.table)
        return pairs, skipped

    def index_specs(self, collection: str) -> list[IndexSpec]:
        return list(self.indexes.get(collection, {}).values())
