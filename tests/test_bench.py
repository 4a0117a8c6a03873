"""The benches start the way docs/performance.md says to run them (`python -m bench.<name>`
from the repository root), stand on bench/harness.py rather than on each other's
internals or tests/, and the legacy writer is a program of its own. Nothing here
measures anything: a bench's figures come from running it."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time

from syncd.sample import make_eeg2025
from tests.conftest import ROOT

BENCH = ROOT / "bench"


def bench_modules() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def test_every_bench_imports_and_its_help_works():
    """One interpreter imports every bench module and runs each command-line bench with
    --help (as `python -m bench.<name> --help` would): it must exit 0 with its usage."""
    mains = [m for m in bench_modules() if "ArgumentParser(" in (BENCH / f"{m}.py").read_text()]
    assert {"sync", "backfill", "warm", "dataset", "fleet"} <= set(mains)
    script = """
import contextlib, importlib, io, json, runpy, sys
out = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module("bench." + name)
for name in json.loads(sys.argv[2]):
    sys.argv = ["bench." + name, "--help"]
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            runpy.run_module("bench." + name, run_name="__main__")
        code = "returned"
    except SystemExit as exc:
        code = exc.code
    out[name] = [code, text.getvalue()]
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script, json.dumps(bench_modules()),
                           json.dumps(mains)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name in mains:
        code, text = results[name]
        assert code in (0, None), (name, code)
        assert text.startswith("usage:"), (name, text[:200])


def test_benches_use_no_path_hacks_no_tests_and_stay_small():
    for path in BENCH.glob("*.py"):
        text = path.read_text()
        assert "sys.path.insert" not in text and "sys.path.append" not in text, path
        assert not re.search(r"^\s*(from|import)\s+tests\b", text, re.M), path
        assert len(text.splitlines()) <= 400, path
    for path in (ROOT / "tests").glob("*.py"):  # and tests do not lean on bench/
        assert not re.search(r"^\s*(from|import)\s+bench\b", path.read_text(), re.M), path


def test_legacy_writer_runs_as_its_own_program(tmp_path):
    """`python -m bench.legacy_writer CFG` writes the legacy way at the given rate and
    reports each commit; the rows are in the database, the figures in `out`."""
    db = tmp_path / "metadata.db"
    make_eeg2025(db, runs=2)
    before = sqlite3.connect(db).execute("SELECT count(*) FROM epoch_history").fetchone()[0]
    out = tmp_path / "writer.json"
    start = time.time() + 0.2
    cfg = {"db": str(db), "mode": "rate", "start_at": start, "end_at": start + 0.5,
           "seed": 1, "out": str(out), "rate": 20, "run_id": 1}
    done = subprocess.run([sys.executable, "-m", "bench.legacy_writer", json.dumps(cfg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["locked"] == 0 and figures["errors"] == []
    assert len(figures["commits"]) == 10  # 20/s for 0.5 s
    conn = sqlite3.connect(db)
    after = conn.execute("SELECT count(*) FROM epoch_history").fetchone()[0]
    rowids = [r for r, _ in figures["commits"]]
    assert after - before == 10
    assert conn.execute(f"SELECT count(*) FROM epoch_history WHERE rowid IN "
                        f"({','.join(map(str, rowids))})").fetchone()[0] == 10
    conn.close()
