"""Commands on the legacy file itself: the change-capture triggers, and the sample writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.api.shared import history_options, migration_files
from syncd.config import Settings, require_sqlite
from syncd.engine.migration_files import build_model
from syncd.errors import ConfigError, SyncdError
from syncd.sample import SampleExists, make_eeg2025
from syncd.sample_hdf5 import MAX_FILES, SampleH5, cache_file_rows, existing, make_hdf5_windows


def _capture_tables(settings: Settings) -> tuple[Path, list[Any]]:
    """The legacy file and the tables the latest migration syncs (those triggers watch)."""
    from legacy_adapters.sqlite import SQLiteSource  # SQLAlchemy: only these commands load it

    source = SQLiteSource(require_sqlite(settings))
    migrations = migration_files(settings)
    model = build_model(migrations, len(migrations))
    infos = [info for info, _ in model.resolve(source.schema(), settings.database)]
    source.close()
    return source.path, infos


def capture_install(settings: Settings) -> tuple[Path, list[str]]:
    """Add the triggers and the change log: (the file, the tables newly given triggers)."""
    from legacy_adapters.sqlite_capture import Capture  # SQLAlchemy, as above

    path, infos = _capture_tables(settings)
    capture = Capture(path, keys_only=history_options(settings).exclude)
    try:
        return path, list(capture.install(infos))
    finally:
        capture.close()


def capture_uninstall(settings: Settings, force: bool = False) -> tuple[Path, int]:
    """Drop the triggers and the change log: (the file, how many triggers were removed).

    Refused while a `syncd run` follows the log, unless `force`.
    """
    from legacy_adapters.sqlite_capture import Capture  # SQLAlchemy, as above

    path, _ = _capture_tables(settings)
    capture = Capture(path)
    try:
        live = capture.live_consumers()
        if live and not force:
            raise SyncdError(
                f"syncd run is following this change log ({live[0].label}, "
                f"{live[0].seen_seconds_ago:.0f} s ago); stop it first, or it reinstalls "
                "the triggers and reconciles (--force removes them anyway)")
        return path, capture.uninstall()
    finally:
        capture.close()


def capture_status(settings: Settings) -> dict[str, Any]:
    """Which synced tables have triggers, the log's size and its consumers."""
    from legacy_adapters.sqlite_capture import Capture, capturable, complete  # SQLAlchemy, as above

    path, infos = _capture_tables(settings)
    capture = Capture(path)
    keys_only = history_options(settings).exclude
    try:
        have = capture.triggers()

        def state(info: Any) -> str:
            if complete(info, have):
                return "yes"
            if complete(info, have, 2) and info.name in keys_only:
                return "yes (keys only: [history] exclude leaves it out of history)"
            if complete(info, have, 2):
                return ("yes (keys only, as for a table in [history] exclude, which these "
                        "settings do not name: is --config missing? capture install or "
                        "syncd run with these settings logs its values)")
            if complete(info, have, 1):
                return "yes (an older format: capture install or syncd run upgrades it)"
            return "no (too many key columns)" if not capturable(info) else "no"

        tables = {i.name: state(i) for i in infos}
        return {"database": str(path), "log": capture.log_exists(),
                "install_id": capture.install_id(),
                "last_seq": capture.last_seq() if capture.log_exists() else None,
                "logged": (sum(n for n, _ in capture.pending(0).values())
                           if capture.log_exists() else 0),
                "tables": tables,
                "consumers": [vars(c) for c in capture.consumers()]}
    finally:
        capture.close()


def sample(path: Path, rows: int | None = None, seed: int = 2025, force: bool = False,
           hdf5_dir: Path | None = None, files: int = 4,
           windows: int = 10) -> tuple[dict[str, int], list[SampleH5]]:
    """Write an EEG2025-shaped legacy metadata.db at `path`, and with `hdf5_dir` that
    many small HDF5 window caches its `cache_files` rows name: (row counts per table,
    the files written).

    Existing files are refused (they may be real) unless `force`; both are checked
    before anything is written.
    """
    if not 1 <= files <= MAX_FILES:
        raise ConfigError(f"--files {files}: choose 1 to {MAX_FILES} (one file per "
                          "challenge and release)")
    if windows < 1:
        raise ConfigError(f"--windows {windows}: choose at least 1")
    if not path.absolute().parent.is_dir():
        raise ConfigError(f"sample {path}: no such folder {path.absolute().parent} (make it "
                          "first; the HDF5 folder, unlike this one, is created)")
    if not force and path.exists():
        raise ConfigError(f"sample {path}: the file exists (it may be a real metadata.db); "
                          "choose a new path, or pass --force to replace it")
    if hdf5_dir is not None and not force and (found := existing(hdf5_dir, files)):
        raise ConfigError(f"sample --hdf5-dir {hdf5_dir}: {found[0].name} exists (it may be "
                          "a real window cache); choose a new directory, or pass --force")
    written: list[SampleH5] = []
    try:
        if hdf5_dir is not None:
            written = make_hdf5_windows(hdf5_dir, files=files, windows=windows, seed=seed,
                                        force=force)
        rows_of = cache_file_rows(written) if hdf5_dir is not None else None
        return make_eeg2025(path, rows=rows, seed=seed, force=force,
                            cache_files=rows_of), written
    except SampleExists as exc:  # appeared meanwhile
        raise ConfigError(f"sample: {exc} (it may be real data); pass --force to replace "
                          "it") from None
