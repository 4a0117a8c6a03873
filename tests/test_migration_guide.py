"""docs/migrations.md is true: its files and its SQL, taken from the page, do what it says
(a table of one's own with its inverse; a new shape in a later file; a table left out),
through migrate, verify --lossless, run, status's changelog and restore."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

from syncd.engine.migration_files import DEFAULT_DIR
from syncd.sample import make_eeg2025
from tests.conftest import ROOT, run_cli
from tests.daemon_support import Daemon, legacy_write, verified, wait_for
from tests.restore_support import dump, moment

GUIDE = ROOT / "docs" / "migrations.md"


def guide_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), re.S)


def guide_file(name: str) -> str:
    """The page's ```python block whose first line is `# mymigrations/NAME`."""
    for block in guide_blocks("python"):
        first, _, rest = block.partition("\n")
        if first == f"# mymigrations/{name}":
            return rest
    raise AssertionError(f"docs/migrations.md has no block for {name}")


def guide_sql() -> str:
    (sql,) = [b for b in guide_blocks("sql") if b.startswith("-- datasets.sql")]
    return sql


def own_folder(tmp_path: Path, *names: str) -> Path:
    """The page's recipe: the bundled files copied, then the page's own files."""
    folder = tmp_path / "mymigrations"
    folder.mkdir(exist_ok=True)
    for path in DEFAULT_DIR.glob("0*.py"):
        shutil.copyfile(path, folder / path.name)
    for name in names:
        (folder / name).write_text(guide_file(name))
    return folder


def test_the_guide_recipe_and_its_commands_are_in_the_page():
    text = GUIDE.read_text()
    assert "cp \"$(python -c 'import migrations, os; print(os.path.dirname(migrations.__file__))'" \
        ")\"/0*.py mymigrations/" in text
    import migrations  # what the recipe's one-liner prints: the bundled folder
    assert Path(migrations.__file__).parent == DEFAULT_DIR


def test_the_guide_is_true(tmp_path, target_args, db):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=5)
    conn = sqlite3.connect(legacy)
    conn.executescript(guide_sql() + "CREATE TABLE scratch(k TEXT PRIMARY KEY, v BLOB);"
                       "INSERT INTO scratch VALUES ('a', x'0102'), ('b', NULL);")
    conn.close()
    folder = own_folder(tmp_path, "0006_datasets.py")
    args = ["--sqlite", legacy, "--migrations", folder, *target_args]

    # A table of one's own, with its inverse.
    first = run_cli("migrate", *args)
    assert first.code == 0, first
    assert "version 0 -> 6" in first.out and "flagged 1x datasets.meta: not JSON" in first.out
    assert f"syncd status --migrations {folder}" in first.out  # the hint keeps the folder
    docs = {d["name"]: d for d in db.datasets.find()}
    r1, r2, r3, r4 = (docs[n] for n in ("R1", "R2", "R3", "R4"))
    assert r1["meta"] == {"subjects": 20, "hz": 100} and r1["_v"] == 6
    assert r1["created_at"] == datetime(2025, 10, 20, 14, 3, 38, 728000)
    assert r1["_orig"] == {"created_at": 523}
    assert r2["meta"] == {"subjects": 12}
    assert r2["created_at"] == datetime(2025, 10, 21, 9)
    assert r2["_orig"] == {"meta": '{"subjects":12}', "created_at": "2025-10-21 09:00:00"}
    assert r3["meta"] is None and r3["created_at"] is None and "_orig" not in r3
    assert r4["meta"] == "not json" and r4["_flags"] == ["meta: not JSON"]
    assert r4["created_at"] == datetime(2025, 10, 22, 10) and "_orig" not in r4
    assert run_cli("verify", *args).code == 0
    lossless = run_cli("verify", "--lossless", *args)
    assert lossless.code == 0 and "every row given back exactly" in lossless.out, lossless

    # Follow the legacy writers, then give the file back from MongoDB alone.
    daemon = Daemon(tmp_path, legacy, target_args, extra=["--migrations", str(folder),
                                                          "--http", ""])
    try:
        daemon.wait_ready(db)
        legacy_write(legacy, "INSERT INTO datasets(name, meta, created_at) VALUES "
                             "('R5', '{\"subjects\": 7}', '2025-11-01T08:00:00')")
        legacy_write(legacy, "UPDATE datasets SET meta = '{\"subjects\": 21}' WHERE name = 'R1'")
        legacy_write(legacy, "DELETE FROM datasets WHERE name = 'R3'")
        wait_for(lambda: verified(legacy, target_args, ("--migrations", str(folder))), 60,
                 "the writes mirrored")
    finally:
        code, err = daemon.stop()
    assert code == 0, err[-2000:]
    restored = tmp_path / "restored.db"
    back = run_cli("restore", "--to", restored, "--sqlite", legacy, *target_args)
    assert back.code == 0, back
    assert dump(restored)["rows"]["datasets"] == dump(legacy)["rows"]["datasets"]

    # A new shape in a later file: every collection rebuilt from the legacy rows.
    (folder / "0007_datasets_v2.py").write_text(guide_file("0007_datasets_v2.py"))
    plan = run_cli("migrate", "--dry-run", *args)
    assert plan.code == 0 and "version 6 -> 7 (rebuild)" in plan.out, plan
    second = run_cli("migrate", "--json", *args)
    assert second.code == 0, second
    report = json.loads(second.out)
    assert all(t["written"] == t["rows"] for t in report["tables"])  # not only datasets
    r1 = db.datasets.find_one({"title": "R1"})
    assert r1["info"]["meta"] == {"subjects": 21} and "name" not in r1 and r1["_v"] == 7
    assert db.experiments.find_one()["_v"] == 7
    assert run_cli("verify", "--lossless", *args).code == 0
    status = json.loads(run_cli("status", "--json", *args).out)
    assert [e["version"] for e in status["changelog"]] == [1, 2, 3, 4, 5, 6, 7]
    assert all(e["on_disk"] is None for e in status["changelog"])

    # A table left out: its collection dropped, its history ends there.
    before = moment()
    (folder / "0008_no_scratch.py").write_text(guide_file("0008_no_scratch.py"))
    third = run_cli("migrate", *args)
    assert third.code == 0 and "dropped collection scratch (not in version 8)" in third.out
    assert "scratch" not in db.list_collection_names()
    check = run_cli("verify", *args)
    assert check.code == 0 and ("note: left out by the model (a migration's exclude_table), "
                                "not compared: scratch") in check.out, check
    legacy_write(legacy, "INSERT INTO scratch VALUES ('c', x'03')")
    now = tmp_path / "now.db"
    later = json.loads(run_cli("restore", "--to", now, "--json", "--sqlite", legacy,
                               *target_args).out)
    assert {"table": "scratch", "why": "not mirrored since then (a migration left it out): "
            "its schema only, no rows"} in later["not_restored"]
    assert dump(now)["rows"]["scratch"] == []
    then = tmp_path / "then.db"
    earlier = run_cli("restore", "--to", then, "--as-of", before, "--json", "--sqlite",
                      legacy, *target_args)
    assert earlier.code == 0, earlier
    assert json.loads(earlier.out)["not_restored"] == []
    assert len(dump(then)["rows"]["scratch"]) == 2
