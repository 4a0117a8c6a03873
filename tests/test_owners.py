"""Who writes what: each stored thing has the one owner docs/architecture.md names.

A static scan of syncd/ (the code, not run): every call of a MongoDB write method
(insert, update, replace, delete, bulk_write, find_one_and_*, drop, rename, index
and collection creation) is attributed to the collection it is made on, and the
module that makes it must be that collection's owner. The owners are read from
docs/architecture.md's "Who owns what" table, so the table and the code cannot
drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYNCD = ROOT / "syncd"

WRITES = frozenset({
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "bulk_write", "find_one_and_update", "find_one_and_replace",
    "find_one_and_delete", "drop", "drop_collection", "rename", "create_index",
    "create_indexes", "create_collection", "drop_index", "drop_indexes"})
# syncd's own collections: the constant naming each, and StateStore's attribute for it.
STATE_COLLECTIONS = {"_syncd_state": ("STATE", "state"),
                     "_syncd_changelog": ("CHANGELOG", "changelog"),
                     "_syncd_runs": ("RUNS", "runs"),
                     "_syncd_quarantine": ("QUARANTINE", "quarantine")}
# The one-time conversion of a database an earlier version left (its table row says
# so): it rewrites every stored thing's layout once, before any owner runs.
CONVERTER = "syncd/checkpoint/upgrade.py"


def owners_in_docs() -> dict[str, set[str]]:
    """`_syncd_*` collection -> the modules whose row of the table names it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Who owns what", 1)[1]
    owners: dict[str, set[str]] = {name: set() for name in STATE_COLLECTIONS}
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) < 4:
            continue
        modules = set(re.findall(r"`([\w/]+\.py)`", cells[1]))
        for name in STATE_COLLECTIONS:
            if re.search(rf"`{name}`", cells[2]):
                owners[name] |= modules
    return owners


def _collection_of(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The syncd collection an expression stands for, if it is one (else None: a
    target collection, or something that is not a collection)."""
    if isinstance(node, ast.Call):  # durable(store.state), x.with_options(...)
        inner = node.func.value if isinstance(node.func, ast.Attribute) else None
        for arg in [*node.args, *([inner] if inner is not None else [])]:
            found = _collection_of(arg, aliases)
            if found:
                return found
        return None
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        if ast.unparse(node) in aliases:  # self.state, set from db[STATE] in this module
            return aliases[ast.unparse(node)]
        for name, (_, attr) in STATE_COLLECTIONS.items():
            if node.attr == attr and _is_store(node.value):
                return name
        return None
    if isinstance(node, ast.Subscript):  # db[STATE], db["_syncd_runs"]
        key = node.slice
        for name, (const, _) in STATE_COLLECTIONS.items():
            if (isinstance(key, ast.Name) and key.id == const) or (
                    isinstance(key, ast.Constant) and key.value == name):
                return name
    return None


def _is_store(node: ast.expr) -> bool:
    """`store`, `self.store`, `x.store`: a StateStore."""
    if isinstance(node, ast.Name):
        return node.id == "store"
    return isinstance(node, ast.Attribute) and node.attr == "store"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Names and attributes assigned a syncd collection in a module: `state = db[STATE]`,
    `self.quarantine = db[QUARANTINE]`, `self.state = store.state`."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name | ast.Attribute):
            name = _collection_of(node.value, {})
            if name:
                aliases[ast.unparse(node.targets[0])] = name
    return aliases


def writes() -> list[tuple[str, int, str, str | None]]:
    """(module, line, method, syncd collection or None) of every write call in syncd/."""
    found = []
    for path in sorted(SYNCD.rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), module)
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in WRITES:
                found.append((module, node.lineno, node.func.attr,
                              _collection_of(node.func.value, aliases)))
    return found


def test_the_table_names_one_owner_for_each_syncd_collection():
    owners = owners_in_docs()
    assert owners["_syncd_state"]  # several modules, each owning its kinds of document
    for name in ("_syncd_changelog", "_syncd_runs", "_syncd_quarantine"):
        assert owners[name] == {"syncd/checkpoint/store.py"}, (name, owners[name])


def test_each_syncd_collection_is_written_by_its_owner_alone():
    owners = owners_in_docs()
    found = writes()
    strays = [(m, line, method, name) for m, line, method, name in found
              if name is not None and m != CONVERTER and m not in owners[name]]
    assert not strays, f"writes outside the owner docs/architecture.md names: {strays}"
    # The scan sees the owners' own writes, so it is not blind to what it forbids.
    seen = {name for m, _, _, name in found if name is not None and m in owners[name]}
    assert seen == set(STATE_COLLECTIONS), seen


def test_the_engine_and_the_projection_write_only_through_sinks_and_checkpoint():
    """Documents go through syncd/sinks/, state through syncd/checkpoint/: the engine
    (backfill, apply, verify, migrate) and the projection make no write of their own."""
    strays = [(m, line, method) for m, line, method, _ in writes()
              if m.startswith(("syncd/engine/", "syncd/projection/"))]
    assert not strays, strays


def test_syncd_collections_are_read_only_through_checkpoint():
    """`_syncd_*` collections are read through their owners in syncd/checkpoint/, never
    raw (the quarantine, say, has one reader and one writer: store.py)."""
    strays = []
    for path in sorted(SYNCD.rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        if module.startswith("syncd/checkpoint/"):
            continue
        tree = ast.parse(path.read_text(), module)
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _collection_of(node, aliases) is not None:
                strays.append((module, node.lineno, ast.unparse(node)))
            if isinstance(node, ast.Name) and node.id in {
                    const for const, _ in STATE_COLLECTIONS.values()} and \
                    isinstance(node.ctx, ast.Load):
                strays.append((module, node.lineno, node.id))
    assert not strays, strays
