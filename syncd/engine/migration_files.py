"""Migration files: plain Python files in one ordered folder, loaded by path.

A file is named `NNNN_some_words.py` and defines `VERSION` (= NNNN),
`DESCRIPTION` and `upgrade(model)`. Its checksum (SHA-256 of the file bytes) is
recorded when it is applied; an applied file that later changes is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from syncd.errors import ConfigError, MigrationError
from syncd.projection.context import MIGRATION_FILE, migration_line
from syncd.projection.model import Model

FILE_NAME = MIGRATION_FILE
# Beside the syncd package (installed or in a checkout), found by path: a user's own
# top-level `migrations` package earlier on sys.path (their project's folder, the
# working directory of a script) must never be taken for syncd's bundled files.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "migrations"


@dataclass(frozen=True)
class MigrationFile:
    """One loaded migration file: its version, name, description, checksum and `upgrade`."""

    version: int
    file: str
    description: str
    checksum: str
    upgrade: Callable[[Model], None]
    folder: str = ""  # where it was loaded from: errors name it


def load_migration(path: Path) -> MigrationFile:
    """Load one migration file (as a private module, not on sys.path)."""
    match = FILE_NAME.match(path.name)
    if not match:
        raise MigrationError(f"{path}: migration files are named NNNN_words.py")
    data = path.read_bytes()
    spec = importlib.util.spec_from_file_location(f"_syncd_migration_{match.group(1)}", path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"{path}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise MigrationError(f"{path.name}: fails to load ({type(exc).__name__}: {exc})") from None
    version = getattr(module, "VERSION", None)
    upgrade = getattr(module, "upgrade", None)
    description = getattr(module, "DESCRIPTION", "")
    number = int(match.group(1))
    if version is None:
        raise MigrationError(f"{path.name}: defines no VERSION (write VERSION = {number}, "
                             "the number its name starts with)")
    if version != number:
        raise MigrationError(f"{path.name}: VERSION = {version!r} does not match the file name "
                             f"(write VERSION = {number}, or rename the file)")
    if not callable(upgrade):
        raise MigrationError(f"{path.name}: defines no upgrade(model) function")
    return MigrationFile(version, path.name, str(description).strip(),
                         hashlib.sha256(data).hexdigest(), upgrade, str(path.parent))


def load_migrations(folder: Path | None = None) -> list[MigrationFile]:
    """All migrations of `folder` (default: the bundled ones), checked to be 1..N in order."""
    folder = Path(folder) if folder else DEFAULT_DIR
    if not folder.is_dir():
        raise ConfigError(f"--migrations {folder}: no such directory")
    _check_names(folder)
    found = sorted(p for p in folder.iterdir() if FILE_NAME.match(p.name))
    try:
        result = [load_migration(p) for p in found]
    except MigrationError as exc:  # a broken file in the folder the settings name
        raise ConfigError(f"--migrations {folder}: {exc}") from None
    for expected, migration in enumerate(result, start=1):
        if migration.version == expected:
            continue
        if migration.version == expected - 1:
            raise ConfigError(
                f"--migrations {folder}: two files have version {migration.version:04d}: "
                f"{result[expected - 2].file} and {migration.file}; give each migration "
                "its own number (a new one: the next after the last)")
        if expected == 1 and folder.resolve() != DEFAULT_DIR.resolve():
            raise ConfigError(
                f"--migrations {folder}: it has no 0001 (its first file is {migration.file}). "
                "A folder of your own replaces the bundled one, so it holds every version: "
                f"to add to syncd's model, copy the bundled files ({DEFAULT_DIR}/0*.py) into "
                f"it and number yours after them ({next_version_hint()})")
        raise ConfigError(
            f"--migrations {folder}: expected version {expected:04d} next, "
            f"found {migration.file} (versions must be 1, 2, 3, ... without gaps)")
    return result


def _check_names(folder: Path) -> None:
    """Refuse a file that looks meant as a migration but would be skipped by its name
    (`0006-datasets.py`, `6_datasets.py`): silently leaving it out would apply a model
    without it."""
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.name[:1].isdigit() and not FILE_NAME.match(path.name):
            raise ConfigError(
                f"--migrations {folder}: {path.name} is not named as a migration "
                "(NNNN_words.py: four digits, an underscore, then letters, digits or "
                "underscores); rename it")


def next_version_hint() -> str:
    """`0006_your_words.py` after the bundled ones: what a user's first file is called."""
    bundled_files = sorted(p for p in DEFAULT_DIR.iterdir() if FILE_NAME.match(p.name))
    return f"{len(bundled_files) + 1:04d}_your_words.py"


def is_bundled(migration: MigrationFile) -> bool:
    """Whether `migration` is one of syncd's own files, byte for byte (also a copy in a
    folder of the user's): its model is for the EEG2025 schema, not a user's typo."""
    own = DEFAULT_DIR / migration.file
    return own.is_file() and hashlib.sha256(own.read_bytes()).hexdigest() == migration.checksum


def mark_drift(changelog: list[dict[str, Any]], migrations: list[MigrationFile]) -> None:
    """Set each changelog entry's `on_disk` (what `syncd status` shows beside it): None
    when the file is as it was applied, else how it differs now (changed, or missing
    from the folder), so the changelog tells the truth before a migrate refuses."""
    by_version = {m.version: m for m in migrations}
    folder = migrations[0].folder if migrations else str(DEFAULT_DIR)
    for entry in changelog:
        now = by_version.get(entry["version"])
        if now is None:
            entry["on_disk"] = (f"MISSING from {folder} (is it the folder it was applied "
                                "from? --migrations DIR names that one)")
        elif not now.checksum.startswith(entry.get("checksum") or "?"):
            entry["on_disk"] = f"CHANGED since applied (sha256 {now.checksum[:12]} now, {now.file})"
        else:
            entry["on_disk"] = None


def folder_hint(migrations: list[MigrationFile]) -> str:
    """The folder these migrations came from, and how to name another: for the errors
    that arise when a database was migrated with a folder of the user's own and a
    command was run without it (or with another)."""
    folder = migrations[0].folder if migrations else ""
    if not folder or Path(folder).resolve() == DEFAULT_DIR.resolve():
        shown = f"the bundled migrations ({DEFAULT_DIR})"
    else:
        shown = f"--migrations {folder}"
    return (f"these are {shown}; if the database was migrated with a folder of your own, "
            "name it with --migrations DIR (or SYNCD_MIGRATIONS, or migrations = in the "
            "TOML file) on every command")


def _line_in(exc: BaseException, file: str) -> str:
    """`, line N`: where in `file` the migration went wrong, or nothing."""
    at = migration_line(exc, file)
    return f", line {at[1]}" if at else ""


def build_model(migrations: list[MigrationFile], version: int) -> Model:
    """The model after applying migrations 1..version in order."""
    if not 0 <= version <= len(migrations):
        raise MigrationError(f"no migration version {version} (there are 0..{len(migrations)})")
    model = Model()
    for migration in migrations[:version]:
        try:
            migration.upgrade(model)
        except MigrationError as exc:  # the model refused the call: where it was made
            raise MigrationError(f"{migration.file}{_line_in(exc, migration.file)}: "
                                 f"{exc}") from None
        except Exception as exc:
            raise MigrationError(
                f"{migration.file}{_line_in(exc, migration.file)}: upgrade failed "
                f"({type(exc).__name__}: {exc})") from None
        model.version = migration.version
        for name, mapping in model.tables.items():
            if not mapping.version:  # made by this migration
                model.tables[name] = replace(mapping, version=migration.version)
    return model
