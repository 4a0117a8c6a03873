"""The indexes of the collections other parts of syncd fill (`model.declare_collection`,
e.g. `hdf5_files`), taken back when `syncd migrate --to N` moves down.

A declared collection is never rebuilt from the legacy tables, so a move down cannot
shed a newer migration's index by swapping in a staging collection, as the mirrored
collections do: it drops it by name. Only indexes a newer migration of the folder
declares are dropped (never one a person added), and only while this source is alone
in the database: another source may be at the newer version and rely on them.
"""

from __future__ import annotations

from pymongo.database import Database

from syncd.projection.model import Model


def retire_indexes(db: Database, model: Model, newest: Model, alone: bool) -> list[str]:
    """Drop from each of `model`'s declared collections the indexes `newest` declares
    there and `model` does not; returns notes on what was dropped or kept."""
    notes: list[str] = []
    for name in sorted(model.declared):
        retired = ({s.name for s in newest.index_specs(name)}
                   - {s.name for s in model.index_specs(name)})
        present = sorted(retired & set(db[name].index_information()))
        if not present:
            continue
        if not alone:
            notes.append(f"kept index(es) {', '.join(present)} of {name}: other sources "
                         "share this database and may be at a newer version")
            continue
        for index in present:
            db[name].drop_index(index)
        notes.append(f"dropped index(es) {', '.join(present)} of {name}")
    return notes
