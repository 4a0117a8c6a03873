"""A user's own migrations folder going wrong: each mistake is one line that says what to
do (never a traceback, never a file skipped silently), and the changelog in `syncd
status` says when the files on disk are not the ones applied."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.engine.migration_files import DEFAULT_DIR
from syncd.sample import make_eeg2025
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write
from tests.restore_support import dump

DATASETS = """
VERSION = 6
DESCRIPTION = "datasets: meta as a document"


def dataset(row, ctx):
    return {"id": row["id"], "name": row["name"], "meta": ctx.json_object(row["meta"], "meta")}


def dataset_row(doc, ctx):
    return {"id": doc["id"], "name": doc["name"], "meta": ctx.json_object(doc["meta"], "meta")}


def upgrade(model):
    model.map_table("datasets", "datasets", build=dataset, inverse=dataset_row)
"""


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=5)
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE datasets(id INTEGER PRIMARY KEY, name TEXT, meta TEXT);"
                       "INSERT INTO datasets(name, meta) VALUES ('R1', '{\"a\": 1}'), "
                       "('R2', NULL);")
    conn.close()
    return path


def folder_with(tmp_path: Path, files: dict[str, str], bundled: bool = True) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    if bundled:
        for path in DEFAULT_DIR.glob("0*.py"):
            shutil.copyfile(path, folder / path.name)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def migrate(legacy, folder, target_args, *extra):
    return run_cli("migrate", "--sqlite", legacy, "--migrations", folder, *target_args, *extra)


def test_a_folder_with_only_ones_own_file_says_to_copy_the_bundled_ones(
        tmp_path, legacy, target_args, db):
    folder = folder_with(tmp_path, {"0006_datasets.py": DATASETS}, bundled=False)
    result = migrate(legacy, folder, target_args)
    assert result.code == 2, result
    assert "it has no 0001 (its first file is 0006_datasets.py)" in result.err
    assert f"copy the bundled files ({DEFAULT_DIR}/0*.py)" in result.err
    assert "0006_your_words.py" in result.err and "Traceback" not in result.err
    assert db.list_collection_names() == []


@pytest.mark.parametrize(("files", "said"), [
    ({"0006_datasets.py": DATASETS, "0006_other.py": DATASETS},
     "two files have version 0006: 0006_datasets.py and 0006_other.py"),
    ({"0006-datasets.py": DATASETS}, "0006-datasets.py is not named as a migration"),
    ({"6_datasets.py": DATASETS}, "6_datasets.py is not named as a migration"),
    ({"0006_datasets.py": DATASETS.replace("VERSION = 6", "")},
     "0006_datasets.py: defines no VERSION (write VERSION = 6"),
    ({"0006_datasets.py": DATASETS.replace("VERSION = 6", "VERSION = 7")},
     "VERSION = 7 does not match the file name (write VERSION = 6, or rename the file)"),
    ({"0006_datasets.py": DATASETS.replace("def upgrade(model):", "def upgrade(model)")},
     "0006_datasets.py: fails to load (SyntaxError"),
])
def test_a_broken_folder_is_one_line_naming_the_file(tmp_path, legacy, target_args, db,
                                                     files, said):
    result = migrate(legacy, folder_with(tmp_path, files), target_args)
    assert result.code == 2, result
    assert said in result.err and "Traceback" not in result.err, result.err
    assert db.list_collection_names() == []


@pytest.mark.parametrize(("call", "said"), [
    ("model.create_index('datasets', 'name')",
     "0006_datasets.py, line 15: create_index('datasets', 'name'): keys must be a list of "
     "(field, 1 | -1) pairs, e.g. [(\"name\", 1)]"),
    ("model.map_table('datasets', builder=None)",
     "0006_datasets.py, line 15: upgrade failed (TypeError: Model.map_table() got an "
     "unexpected keyword argument 'builder')"),
])
def test_an_upgrade_that_raises_names_its_line(tmp_path, legacy, target_args, db, call, said):
    """The model is built when a command plans (exit 1, nothing written)."""
    text = DATASETS.replace(
        '    model.map_table("datasets", "datasets", build=dataset, inverse=dataset_row)',
        "    " + call)
    result = migrate(legacy, folder_with(tmp_path, {"0006_datasets.py": text}), target_args)
    assert result.code == 1, result
    assert said in result.err and "Traceback" not in result.err, result.err
    assert [c for c in db.list_collection_names() if not c.startswith("_syncd_")] == []


def test_a_new_mapping_of_a_table_that_is_not_there_is_noted(tmp_path, legacy, target_args):
    typo = DATASETS.replace('map_table("datasets"', 'map_table("datasetz"')
    result = migrate(legacy, folder_with(tmp_path, {"0006_datasets.py": typo}), target_args)
    assert result.code == 0, result
    assert ("note: 0006_datasets.py maps table 'datasetz', which the legacy database does "
            "not have") in result.out


def test_the_bundled_models_tables_are_no_typo(tmp_path, target_args):
    """A database without the EEG2025 tables: 0002's and 0005's mappings are not noted."""
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).executescript("CREATE TABLE t(k INTEGER PRIMARY KEY);")
    result = run_cli("migrate", "--sqlite", plain, *target_args)
    assert result.code == 0 and "note:" not in result.out, result


def test_without_the_folder_every_command_names_migrations(tmp_path, legacy, target_args):
    folder = folder_with(tmp_path, {"0006_datasets.py": DATASETS})
    first = migrate(legacy, folder, target_args)
    assert first.code == 0, first
    assert f"--migrations {folder}" in first.out  # the next commands keep the folder
    bare = ["--sqlite", legacy, *target_args]

    again = run_cli("migrate", *bare)
    assert again.code == 1, again
    assert "the database is at version 6 but the migrations folder has only 5" in again.err
    assert "name it with --migrations DIR" in again.err and "pass --to 5" in again.err

    verify = run_cli("verify", *bare)
    assert verify.code == 1, verify
    assert "applied migration 0006 (0006_datasets.py) is missing" in verify.out
    assert "verify: NOT VERIFIED" in verify.out and "DIFFERENT" not in verify.out

    status = json.loads(run_cli("status", "--json", *bare).out)
    marks = {e["version"]: e["on_disk"] for e in status["changelog"]}
    assert marks[5] is None and marks[6].startswith(f"MISSING from {DEFAULT_DIR}")

    (folder / "0006_datasets.py").write_text(DATASETS + "# edited\n")
    text = run_cli("status", "--migrations", folder, *bare)
    assert "0006 0006_datasets.py" in text.out and "CHANGED since applied" in text.out, text
    refused = migrate(legacy, folder, target_args)
    assert refused.code == 1 and "has changed since it was applied" in refused.err


@pytest.mark.parametrize(("inverse", "said"), [
    ('"name": doc["title"]', 'row {"id": 1}: the inverse failed (KeyError: \'title\') '
                             '(0006_datasets.py line 11)'),
    ('"nam": doc["name"]', 'row {"id": 1}, column nam: the inverse gives a column the '
                           'table does not have'),
    ('"name": doc["name"].lower()', "row {\"id\": 1}, column name: text 'R1', given back "
                                    "text 'r1'"),
])
def test_a_wrong_inverse_is_named_by_table_key_and_column(tmp_path, legacy, target_args,
                                                          inverse, said):
    wrong = DATASETS.replace('"name": doc["name"]', inverse)
    folder = folder_with(tmp_path, {"0006_datasets.py": wrong})
    assert migrate(legacy, folder, target_args).code == 0
    result = run_cli("verify", "--lossless", "--sqlite", legacy, "--migrations", folder,
                     *target_args)
    assert result.code == 1, result
    assert f"datasets (table datasets): {said}" in result.out, result.out
    assert ": -, given back" not in result.out and "column -" not in result.out


def test_history_exclude_set_later_is_marked_when_the_daemon_resumes(tmp_path, legacy,
                                                                     target_args, db):
    """`[history] exclude` added after the first sync, with `syncd run` resuming its log
    (no reconcile): restore as of a later moment names the table as left out of history
    instead of giving back the rows it had when history stopped keeping them."""
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    first = Daemon(tmp_path, legacy, target_args, extra=["--http", ""])
    first.wait_ready(db)
    assert first.stop()[0] == 0
    later = Daemon(tmp_path, legacy, target_args, extra=["--http", ""],
                   config='[history]\nexclude = ["datasets"]\n')
    later.wait_ready(db)
    assert later.stop()[0] == 0
    shown = {}
    for extra in ([], ["--config", str(later.cfg)]):
        capture = run_cli("capture", "status", "--json", "--sqlite", legacy, *extra)
        assert capture.code == 0, capture
        shown[len(extra)] = json.loads(capture.out)["tables"]["datasets"]
    assert shown[0].startswith("yes (keys only") and "is --config missing?" in shown[0]
    assert shown[2] == "yes (keys only: [history] exclude leaves it out of history)"
    out = tmp_path / "out.db"
    result = run_cli("restore", "--to", out, "--json", "--sqlite", legacy, *target_args)
    assert result.code == 0, result
    assert json.loads(result.out)["not_restored"] == [
        {"table": "datasets", "why": "left out of history ([history] exclude): its schema "
                                     "only, no rows"}]
    assert dump(out)["rows"]["datasets"] == []

    # Taken back (the setting removed, syncd run restarted on its log): a new baseline.
    legacy_write(legacy, "INSERT INTO datasets(name, meta) VALUES ('R3', NULL)")
    back = Daemon(tmp_path, legacy, target_args, extra=["--http", ""])
    back.wait_ready(db)
    assert back.stop()[0] == 0
    again = tmp_path / "again.db"
    result = run_cli("restore", "--to", again, "--json", "--sqlite", legacy, *target_args)
    assert result.code == 0 and json.loads(result.out)["not_restored"] == [], result
    assert dump(again)["rows"]["datasets"] == dump(legacy)["rows"]["datasets"]


def test_a_builder_that_raises_quarantines_its_rows_naming_its_line(tmp_path, legacy,
                                                                    target_args):
    broken = DATASETS.replace('"meta": ctx.json_object(row["meta"], "meta")}',
                              '"meta": len(row["meta"])}')
    folder = folder_with(tmp_path, {"0006_datasets.py": broken})
    result = migrate(legacy, folder, target_args)
    assert result.code == 0 and "1 rows quarantined" in result.out, result
    status = run_cli("status", "--sqlite", legacy, "--migrations", folder, *target_args)
    assert status.code == 5, status
    assert ("datasets {'id': 2}: TypeError: object of type 'NoneType' has no len() "
            "(0006_datasets.py line 7)") in status.out


def test_a_users_own_migrations_package_is_never_taken_for_the_bundled_one(tmp_path):
    """A script run from a project whose top level has a `migrations` package of its
    own (Alembic's, a user's): syncd's bundled model is still the one found, by path."""
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "__init__.py").write_text("")
    found = subprocess.run(
        [sys.executable, "-c", "from syncd.engine.migration_files import DEFAULT_DIR; "
         "print(DEFAULT_DIR)"], cwd=project, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == DEFAULT_DIR
    assert sorted(p.name for p in DEFAULT_DIR.glob("0001_*.py"))
