"""The daemon's boundaries (issue 22), read from the code: the capture mode is decided
in one place, the daemon and the engine see the legacy store through protocols only,
the daemon reads no settings file, and its parts are small enough to hold in mind."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = {"legacy_adapters.base", "legacy_adapters.changelog", "legacy_adapters.feed",
             "legacy_adapters.values"}


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_daemon_and_engine_import_only_legacy_protocols():
    for path in _modules("syncd/daemon") + _modules("syncd/engine"):
        concrete = {m for m in _imports(path) if m.startswith("legacy_adapters")} - PROTOCOLS
        assert not concrete, f"{path.relative_to(ROOT)} imports {sorted(concrete)}"


def test_daemon_reads_no_settings_file():
    for path in _modules("syncd/daemon"):
        assert "syncd.config" not in _imports(path), path.relative_to(ROOT)


def test_the_capture_mode_is_tested_in_the_feed_factory_only():
    for path in _modules("syncd"):
        hits = re.findall(r"capture is (?:not )?None", path.read_text())
        assert not hits, path.relative_to(ROOT)


def test_daemon_constructors_take_at_most_six_parameters():
    for path in _modules("syncd/daemon"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                count = len(node.args.args) - 1 + len(node.args.kwonlyargs)
                assert count <= 6, f"{path.relative_to(ROOT)}:{node.lineno} takes {count}"


# -- settings: read once in syncd.api, handed down as frozen options -----------------------

# The user library's entry (CachedWindowDataset(config=...)) loads the CLI's settings file
# itself, as syncd/cli does: an entry point, not a stage below the API.
ENTRIES = {"syncd/config.py", "syncd/__main__.py", "syncd/client/layouts.py"}


def test_nothing_below_the_api_imports_the_settings_model():
    for path in _modules("syncd"):
        name = str(path.relative_to(ROOT))
        if name.startswith(("syncd/api/", "syncd/cli/")) or name in ENTRIES:
            continue
        assert "syncd.config" not in _imports(path), name


def test_every_stage_options_object_is_frozen():
    from syncd.checkpoint.sources import SourceRef
    from syncd.daemon.options import DaemonOptions
    from syncd.embedded.endpoints import Endpoints
    from syncd.engine.options import MigrateOptions
    from syncd.hdf5.features import FeatureConfig
    from syncd.hdf5.options import Hdf5Config
    from syncd.http.context import HttpContext
    from syncd.http.options import HttpOptions

    for kind in (SourceRef, DaemonOptions, Endpoints, MigrateOptions, FeatureConfig,
                 Hdf5Config, HttpContext, HttpOptions):
        assert kind.__dataclass_params__.frozen, kind.__name__  # type: ignore[attr-defined]


def _migrated_as_old_id(tmp_path: Path, mongo_url: str, db_name: str) -> Any:
    """A database whose source for this file has an id of its own ("old"), and the
    settings of a later command that leaves --source-id unset (default: host and file)."""
    from syncd import api
    from syncd.config import load_settings
    from syncd.sample import make_eeg2025

    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=3, seed=1)
    flags = {"sqlite": str(legacy), "mongo_url": mongo_url, "database": db_name,
             "state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    api.migrate(load_settings({**flags, "source_id": "old"}, environ={}))
    return load_settings(flags, environ={})


def test_commands_resolve_the_source_id_without_changing_the_settings(tmp_path, mongo_url,
                                                                      db_name):
    from syncd import api

    settings = _migrated_as_old_id(tmp_path, mongo_url, db_name)
    before = dataclasses.asdict(settings)
    assert before["source_id"] != "old"
    done = api.migrate(settings)
    assert done.plan.params.source_id == "old"  # the id the file already has
    assert api.verify(settings).ok
    assert api.status(settings)["source_id"] == "old"
    assert dataclasses.asdict(settings) == before


def test_the_source_file_is_checked_once_per_command(tmp_path, mongo_url, db_name,
                                                     monkeypatch):
    from syncd import api
    from syncd.checkpoint import sources

    settings = _migrated_as_old_id(tmp_path, mongo_url, db_name)
    reads: list[Path] = []
    fingerprint = sources.fingerprint

    def counted(path: Path) -> dict[str, Any]:
        reads.append(Path(path))
        return fingerprint(path)

    monkeypatch.setattr(sources, "fingerprint", counted)
    api.migrate(settings)
    assert len(reads) == 1
    api.migrate(settings, dry_run=True)
    assert len(reads) == 2
    api.verify(settings)
    assert len(reads) == 3
