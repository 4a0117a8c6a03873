"""The daemon's boundaries (issue 22), read from the code: the capture mode is decided
in one place, the daemon and the engine see the legacy store through protocols only,
the daemon reads no settings file, and its parts are small enough to hold in mind."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
