"""Hostile legacy values (a 1 MB `notes`, odd shapes of ":", "@", "://") cost linear time
on their way to a page, the CLI or the logs, and never stop the daemon's HTTP server.

Nothing here times anything: a shape that took quadratic time would not finish within
the generous limits of the child processes (minutes, for what takes milliseconds), and
the end-to-end test asks only whether /healthz answered while the page was in flight.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from syncd.sample import make_eeg2025
from tests.conftest import ROOT, run_cli
from tests.daemon_support import Daemon, legacy_write, wait_for

MB = 1_000_000

# Shapes that make a backtracking pattern try (and fail) again from every position.
SHAPES = """
N = {n}
shapes = {{
    "letters": "a" * N, "digits": "1" * N, "a://": "a://" * (N // 4),
    "a:// ": "a:// " * (N // 5), "@": "a://" + "@" * N, ":": ":" * N, "a:": "a:" * (N // 2),
    ":/": ":/" * (N // 2), "/": "/" * N, "?": "a://h" + "?" * N, "&": "a://h?" + "&" * N,
    "password=": "a://h?" + "password=a&" * (N // 11), "u:p@h": "a://u:p@h " * (N // 10),
    "@:": "a://" + "@:" * (N // 2), "?@": "a://" + "?@" * (N // 2),
    "p==": "a://h?password" + "=" * N, "scheme run": "a" * N + "://u:p@h",
}}
"""


def _child(code: str, timeout: float = 240) -> str:
    """Run `code` in a fresh interpreter (a stuck regex holds the GIL: only a process
    can be given up on); its stdout."""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout:.0f} s: super-linear on hostile input")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_scrub_finishes_on_a_megabyte_of_every_hostile_shape():
    out = _child(SHAPES.format(n=MB) + """
from syncd.redact import redact_url, register_url, scrub
for name, text in shapes.items():
    register_url(text)
    print(name, len(scrub(text)), len(redact_url(text)))
""")
    sizes = {name: (int(a), int(b)) for name, a, b in
             (line.rsplit(" ", 2) for line in out.splitlines())}
    assert len(sizes) == 17, out
    assert sizes["letters"] == (MB, MB)  # nothing to mask: unchanged


def _patterns() -> list[str]:
    """Every regular expression syncd's own code compiles or runs (read from its source,
    so one added later is checked too)."""
    found = []
    for package in ("syncd", "legacy_adapters", "migrations"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                        and node.args and isinstance(node.args[0], ast.Constant)
                        and isinstance(node.args[0].value, str)):
                    found.append(node.args[0].value)
    return found


def test_every_pattern_in_syncd_is_linear_on_hostile_input():
    patterns = _patterns()
    assert len(patterns) >= 3, patterns  # the scanner found them
    out = _child(SHAPES.format(n=200_000) + f"""
import re, string
patterns = {patterns!r}
for c in string.printable:
    shapes["x" + c] = c * 200_000
    shapes["ax" + c] = ("a" + c) * 100_000
for p in patterns:
    compiled = re.compile(p)
    for text in shapes.values():
        compiled.search(text)
        compiled.match(text)
    print("ok", p)
""")
    assert out.count("ok ") == len(patterns), out


# -- end to end: a 1 MB value in a synced row, its page open --------------------------------


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_page_with_a_megabyte_value_leaves_healthz_answering(tmp_path, target_args, db):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=3)
    notes = "a" * MB  # letters: the shape the old URL pattern took hours over
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        url = wait_for(lambda: json.loads((daemon.state / "daemon.json").read_text())
                       .get("http"), 30, "the HTTP url")
        legacy_write(legacy, "UPDATE training_runs SET notes = ? WHERE run_id = 1", (notes,))
        wait_for(lambda: len((db["experiments"].find_one({"run_id": 1}) or {})
                             .get("notes") or "") == MB, 60, "the 1 MB notes synced")

        in_flight: list[int | None] = [None]  # which page request is out now
        pages: list[tuple[str, int, bytes]] = []
        overlapped: list[int] = []
        errors: list[str] = []
        done = threading.Event()

        def browse() -> None:
            for n in range(30):  # the page and its JSON, until /healthz was seen
                if done.is_set():
                    break
                path = ("/experiments/1", "/api/experiments/1")[n % 2]
                in_flight[0] = n
                try:
                    code, body = _get(url + path, timeout=120)
                except OSError as exc:
                    errors.append(f"{path}: {exc}")
                    break
                finally:
                    in_flight[0] = None
                pages.append((path, code, body))
            done.set()

        def probe() -> None:
            while not done.is_set():
                before = in_flight[0]
                try:
                    code, _ = _get(url + "/healthz", timeout=30)
                except OSError as exc:
                    errors.append(f"/healthz: {exc}")
                    done.set()
                    return
                if code == 200 and before is not None and in_flight[0] == before:
                    overlapped.append(before)  # answered while page request `before` was out
                    done.set()

        threads = [threading.Thread(target=browse), threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert overlapped, f"/healthz never answered while the page was in flight: {errors}"
        assert pages, errors
        for path, code, body in pages:
            assert code == 200 and notes.encode() in body, (path, code, len(body))
        # The CLI's JSON of the same experiment (a process of its own: see _child).
        out = _child(f"""
import sys
from syncd.cli.main import main
sys.exit(main(["experiments", "search", '{{"run_id": 1}}', "--json",
               "--mongo-url", {target_args[1]!r}, "--database", {db.name!r}]))
""")
        assert json.loads(out)[0]["notes"] == notes
    finally:
        daemon.stop()


def test_a_long_value_is_cut_in_text_tables(tmp_path, target_args, db):
    """Every row of a text table is padded to its column's widest cell: one 1 MB model
    name would make each of the experiments' rows a megabyte long."""
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=20)
    legacy_write(legacy, "UPDATE training_runs SET model_name = ? WHERE run_id = 1",
                 ("EEGNet " * (MB // 7),))
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    result = run_cli("experiments", "search", "{}", *target_args)
    assert result.code == 0, result
    assert result.out.count("\n") >= 20  # a row per experiment
    assert len(result.out) < 20 * 1000, len(result.out)  # not 20 rows of a megabyte
    assert "EEGNet EEGNet" in result.out and "…" in result.out
