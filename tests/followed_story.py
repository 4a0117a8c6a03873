"""A legacy file that `syncd run` follows, copies of it taken at moments (SQLite's
backup API), and what `syncd restore --as-of` each moment got wrong: the frame of the
restore stories that hostile writers play (test_history_hostile, test_restore_sequence)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.daemon_support import Daemon, wait_for
from tests.restore_support import backup, dump, moment


def write(path: Path, *statements: Any, pragmas: tuple[str, ...] = ()) -> None:
    """One legacy transaction of `statements` (SQL, or (SQL, params))."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("BEGIN")
        for s in statements:
            conn.execute(*(s if isinstance(s, tuple) else (s,)))
        conn.execute("COMMIT")
    finally:
        conn.close()


class Story:
    """metadata.db made by `fill` (its schema must have `mark (id INTEGER PRIMARY KEY,
    v)`), migrated; `syncd run` following it once started; copies kept by name."""

    def __init__(self, tmp: Path, target_args: list[str], db: Any,
                 fill: Callable[[sqlite3.Connection], None]) -> None:
        self.tmp, self.target_args, self.db = tmp, target_args, db
        self.legacy = tmp / "metadata.db"
        conn = sqlite3.connect(self.legacy)
        fill(conn)
        conn.commit()
        conn.close()
        assert run_cli("migrate", "--sqlite", self.legacy, *target_args).code == 0
        self.copies: dict[str, tuple[str, Path]] = {}
        self.daemon: Daemon | None = None

    def start(self) -> None:
        self.daemon = Daemon(self.tmp, self.legacy, self.target_args)
        self.daemon.wait_ready(self.db)

    def caught_up(self) -> None:
        """A marker row written, then waited for in history: all before it is recorded."""
        write(self.legacy, "INSERT INTO mark (v) VALUES ('m')")
        mark = sqlite3.connect(self.legacy).execute("SELECT max(id) FROM mark").fetchone()[0]
        daemon = self.daemon
        assert daemon is not None

        def recorded() -> Any:
            if daemon.proc.poll() is not None:
                pytest.fail(f"syncd run exited: {daemon.proc.communicate()[1][-2000:]}")
            return self.db["_syncd_history"].find_one({"table": "mark", "key": [mark],
                                                       "op": "insert"})
        wait_for(recorded, what="syncd run to catch up")

    def keep(self, name: str) -> None:
        at = moment()
        backup(self.legacy, self.tmp / f"{name}.db")
        self.copies[name] = (at, self.tmp / f"{name}.db")

    def differences(self, also: Callable[[Path, Path], Any] | None = None) -> list[Any]:
        """What a restore as of each kept moment got wrong (nothing, when exact);
        `also(restored, copy)`: a further comparison, its difference or None."""
        bad: list[Any] = []
        for name, (at, copy) in self.copies.items():
            out = self.tmp / f"restored-{name}.db"
            result = run_cli("restore", "--to", out, "--as-of", at, *self.target_args)
            if result.code != 0:
                bad.append((name, result.err.strip().splitlines()[-1:]))
                continue
            got, want = dump(out), dump(copy)
            bad += [(name, part, "restored", got[part], "copy", want[part])
                    for part in got if got[part] != want[part]]
            other = also(out, copy) if also is not None else None
            if other is not None:
                bad.append((name, *other))
        return bad
