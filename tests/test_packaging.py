"""The project's promises about itself: the README's commands, packaging, safety rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick)


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2
    install_and_run, tests = commands
    assert install_and_run.startswith("pip install '.[embedded]'") and "syncd migrate" in \
        install_and_run
    assert (ROOT / "examples" / "eeg2025-sample.db").exists()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests
    assert tests.startswith("pip install torch==2.13.0 && ")


def test_what_the_quick_start_writes_into_the_clone_is_ignored_by_git():
    """`syncd sample demo.db --hdf5-dir demo-h5` (the quick start) leaves no untracked
    files behind in `git status`."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git clone")
    quick = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    db, folder = re.search(r"syncd sample (\S+) --hdf5-dir (\S+)", quick).groups()
    paths = [db, f"{folder}/r1.h5"]
    found = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                           capture_output=True, text=True)
    assert found.stdout.split() == paths, found


def test_pyproject_dependencies_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"]).lower()
    for name in ("sqlalchemy", "pymongo", "redis", "h5py", "numpy", "watchdog", "apscheduler"):
        assert name in deps
    assert "torch" not in deps  # optional only
    extras = project["optional-dependencies"]
    assert {"embedded", "torch", "test"} <= set(extras)
    assert any(e.lower().startswith("secantusdb") for e in extras["embedded"])
    assert all("mongomock" not in e and "fakeredis" not in e for e in extras["test"])
    torch_pins = [e for e in extras["torch"] if e.startswith("torch")]
    assert torch_pins and all("<=" in e or "==" in e for e in torch_pins)  # never a bare torch
    assert project["scripts"]["syncd"] == "syncd.cli:main"


def test_no_pickle_and_no_secantus_import_in_the_product():
    for folder in ("syncd", "legacy_adapters", "migrations"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"^\s*(import|from)\s+(pickle|dill|cloudpickle)\b", text,
                                 re.M), path
            assert not re.search(r"^\s*(import|from)\s+secantus\b", text, re.M), path


def test_cli_help_explains_every_command():
    from syncd.cli.main import build_parser

    parser = build_parser()
    text = parser.format_help()
    for command in ("migrate", "verify", "status", "experiments", "sample"):
        assert command in text
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    migrate_help = sub["migrate"].format_help()
    for flag in ("--to", "--dry-run", "--sqlite", "--mongo-url", "SYNCD_MONGO_URL",
                 "--state-dir", "--source-id", "--config"):
        assert flag in migrate_help


def test_readme_configuration_table_lists_every_setting():
    from syncd.config import OPTIONS

    text = (ROOT / "README.md").read_text()
    for option in OPTIONS:
        row = [line for line in text.splitlines() if line.startswith(f"| `{option.flag}")]
        assert row, option.flag
        assert f"`{option.env}`" in row[0] and f"`{option.key}`" in row[0], row[0]
