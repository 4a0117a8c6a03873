"""Errors a new user meets in the second hour say what to do next (issue 21 item 8):
triggers capture on a read-only database points to `--capture scan`, a second daemon
learns who holds the lease and how to stop it, an unreachable MongoDB is one balanced
line, and the documented `syncd run` commands name the database they follow."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.checkpoint.lease import Lease
from syncd.checkpoint.store import StateStore
from syncd.cli.main import build_parser
from syncd.config import load_settings
from syncd.embedded import free_port
from syncd.sample import make_eeg2025
from tests.conftest import ROOT, run_cli, syncd_process
from tests.daemon_support import FAST, wait_for

# Root ignores file modes; without these capabilities it is held to them like anyone.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("syncd: error")]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_triggers_on_a_read_only_database_point_to_scan(tmp_path, target_args, db):
    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    legacy = legacy_dir / "metadata.db"
    make_eeg2025(legacy, runs=3)
    legacy.chmod(0o444)
    legacy_dir.chmod(0o555)
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(FAST)
    args = ["run", "--sqlite", str(legacy), "--config", str(cfg), "--state-dir",
            str(tmp_path / "state"), "--http", "", *target_args]
    base = [*NO_OVERRIDE, sys.executable, "-m", "syncd"]
    try:
        refused = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                                 env=os.environ.copy())
        assert refused.returncode == 2, refused.stderr[-3000:]
        line = _lines(refused.stderr)
        assert len(line) == 1, refused.stderr[-3000:]
        assert "read-only" in line[0] and "--capture scan" in line[0], line
        # ... and what it names works there.
        scan = subprocess.Popen([*base, *args, "--capture", "scan"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        try:
            wait_for(lambda: scan.poll() is not None or db.experiments.count_documents({}) == 3,
                     120, "the scan daemon's backfill")
            assert scan.poll() is None, scan.communicate()[1][-3000:]
        finally:
            scan.terminate()
            _out, err = scan.communicate(timeout=60)
        assert scan.returncode == 0, err[-3000:]
    finally:
        legacy_dir.chmod(0o755)


def test_a_second_daemon_learns_who_holds_the_lease_and_how_to_stop_it(tmp_path, target_args,
                                                                        db):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=3)
    holder = Lease(StateStore(db, "testhost"), "run")
    holder.host, holder.pid = "gpu-host-7", 4242  # a live daemon elsewhere
    holder.acquire()
    try:
        proc = syncd_process("run", "--sqlite", legacy, "--state-dir", tmp_path / "state",
                             "--http", "", *target_args)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err[-3000:]
        line = " ".join(_lines(err))
        assert "holds the run lease" in line and "wait for it" not in line, line
        assert "pid 4242 on gpu-host-7" in line, line
        assert "systemctl stop syncd" in line and "kill 4242" in line, line
        migrate = run_cli("migrate", "--sqlite", legacy, *target_args)
        assert migrate.code == 1 and "syncd run` daemon (pid 4242" in migrate.err, migrate
    finally:
        holder.release()


def test_unreachable_mongodb_is_one_balanced_line(tmp_path):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=3)
    url = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    result = run_cli("migrate", "--sqlite", legacy, "--mongo-url", url, "--mongo-timeout", "0.5")
    assert result.code == 2, result
    line = _lines(result.err)
    assert len(line) == 1 and "not reachable within 0.5 s" in line[0], result
    depth = 0
    for char in line[0]:
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0, line[0]
    assert depth == 0, line[0]


def _shell_blocks(path: Path) -> list[list[str]]:
    return [block.splitlines() for block in
            re.findall(r"```(?:sh|bash|shell)\n(.*?)```", path.read_text(), re.S)]


def test_documented_syncd_run_commands_name_the_database(monkeypatch):
    """Each `syncd run` in a shell block of the docs, with the block's `export`s before
    it, parses and names the legacy metadata.db it follows (run refuses to start
    without one: "--sqlite is not set")."""
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    parser = build_parser()
    checked = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in _shell_blocks(doc):
            env: dict[str, str] = {}
            for raw in block:
                words = shlex.split(raw, comments=True)
                if words[:1] == ["export"]:
                    env.update(w.split("=", 1) for w in words[1:] if "=" in w)
                if words[:2] != ["syncd", "run"]:
                    continue
                args = vars(parser.parse_args(words[1:]))
                settings = load_settings(args, environ=env) if "config" not in args else None
                assert settings is None or settings.sqlite is not None, f"{doc.name}: {raw}"
                checked += 1
    assert checked >= 2  # README's and docs/hdf5-cache.md's at least


def test_quiet_and_verbose_are_taken_after_the_command_too():
    from syncd.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["migrate", "-q"]).quiet is True
    assert parser.parse_args(["-q", "migrate"]).quiet is True
    assert parser.parse_args(["status", "-vv"]).verbose == 2
    assert parser.parse_args(["status"]).quiet is False
    assert parser.parse_args(["status"]).verbose == 0


def test_verbose_before_and_after_the_command_add_up(tmp_path, target_args):
    """`syncd -v verify -v` is -vv (the -v after the command once replaced the count
    before it): pymongo's own debug lines show, as with -vv; with -v alone they do not."""
    parser = build_parser()
    assert parser.parse_args(["-vv", "migrate", "-v"]).verbose == 3
    assert parser.parse_args(["-v", "status", "-vv"]).verbose == 3
    assert not hasattr(parser.parse_args(["status", "-v"]), "verbose_after_command")
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, runs=2)
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0

    def pymongo_lines(before: list[str], after: list[str]) -> int:
        result = run_cli(*before, "verify", "--sqlite", legacy, *target_args, *after)
        assert result.code == 0, result
        return sum(" DEBUG pymongo." in line for line in result.err.splitlines())

    assert pymongo_lines(["-v"], ["-v"]) > 0  # -v verify -v: -vv
    assert pymongo_lines(["-vv"], []) > 0
    assert pymongo_lines(["-v"], []) == 0 and pymongo_lines([], ["-v"]) == 0
