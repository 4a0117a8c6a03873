"""The embedded MongoDB: SecantusDB's `secantusd-py`, a separate program (GPL-2.0,
never imported), with its data under `<state>/mongo/data`, requiring a password.

It runs with `--auth`: only the user `syncd`, whose generated password is kept in
`<state>/mongo/credentials` (0600), may do anything but the handshake. A data
directory without that user yet is set up first (syncd.embedded.mongo_users), and
`<state>/mongo/users-set` records that it was.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path
from urllib.parse import quote

from syncd.embedded import children, credentials, interrupts, mongo_users
from syncd.embedded.server import EmbeddedServer
from syncd.errors import SyncdError

log = logging.getLogger(__name__)

MONGO_EXECUTABLE = "secantusd-py"


class EmbeddedMongo(EmbeddedServer):
    """A SecantusDB server for one state directory (data in `<state>/mongo/data`)."""

    kind = "MongoDB"
    executable = MONGO_EXECUTABLE
    install_hint = (
        "--mongo-url is not set and the embedded MongoDB is not installed: "
        "pip install 'syncd[embedded]' (SecantusDB), or set --mongo-url / SYNCD_MONGO_URL"
    )

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, "mongo")
        self.users_set = self.home / "users-set"  # the data holds syncd's user, only it
        # a new data directory whose setup has not ended: its next start checks it again
        self.fresh_setup = self.home / "setup-of-new-data"

    @property
    def url(self) -> str:
        if not (self.auth and self.password):
            return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        return (f"mongodb://{mongo_users.USER}:{quote(self.password, safe='')}@127.0.0.1:"
                f"{self.port}/?directConnection=true&authSource=admin")

    def _launch(self, exe: str) -> None:
        """Start with --auth; first give a data directory without syncd's user one."""
        new_password = credentials.read(self.credentials_file) is None  # (re)made now
        self.password = credentials.ensure(self.credentials_file)
        # A new data directory stays "fresh" until its setup ends: one whose setup was
        # refused or cut short is checked again, never served as it is on the next start.
        fresh = (not (self.data.is_dir() and any(self.data.iterdir()))
                 or self.fresh_setup.exists())
        if fresh or new_password or not self.users_set.exists():
            self._set_users(exe, fresh)
        else:
            self.auth = True
            self._start_process(exe)

    def ready(self) -> bool:
        """Answering, and (with --auth) accepting syncd's password: a data directory
        restored from before the password was set would refuse it."""
        if not self.auth:
            return True
        return mongo_users.logs_in(self.url, self.users_set)

    def _set_users(self, exe: str, fresh: bool) -> None:
        """Create syncd's user without --auth, restart with it, drop anyone else's."""
        self.users_set.unlink(missing_ok=True)
        cut_short = fresh and self.fresh_setup.exists()
        if fresh:
            self.fresh_setup.parent.mkdir(parents=True, exist_ok=True)
            self.fresh_setup.touch()
        log.info("setting the embedded MongoDB's password (kept in %s): it starts once "
                 "without one to create syncd's user, then again with it",
                 self.credentials_file)
        self.auth = False
        self._start_first(exe, cut_short)
        assert self.password is not None
        mongo_users.create_user(self.url, self.password)
        with interrupts.deferred():  # a stop signal must not fall between "forgotten" and "stopped"
            self._stop(20.0)
        self.auth = True
        self._start_process(exe)
        mongo_users.sweep(self.url, fresh, str(self.data))
        self.users_set.touch()
        self.fresh_setup.unlink(missing_ok=True)

    def _start_first(self, exe: str, cut_short: bool) -> None:
        """The start without --auth. A new data directory whose setup was cut short (syncd
        killed as the server made its first tables) may no longer open: SecantusDB does not
        recover a table it was creating. Such a directory holds nothing of syncd's yet (no
        sync runs before the setup ends), so it is made again; any other one that does not
        open is an error for the user."""
        try:
            self._start_process(exe)
        except SyncdError as exc:
            if not (cut_short and self.process is not None
                    and self.process.poll() is not None
                    and "resource busy" not in self.log_tail().lower()):
                raise  # (a directory another process holds is that process's to stop)
            log.warning("the embedded MongoDB's new data directory %s, whose setup was cut "
                        "short, does not open (%s); it held nothing yet and is made again",
                        self.data, exc)
            shutil.rmtree(self.data)
            self._start_process(exe)

    def owns(self, args: list[str], port: int | None) -> bool:
        """A secantusd-py serving this state dir's data (what WiredTiger locks)."""
        return any(a == "--storage-path" and b == str(self.data)
                   for a, b in itertools.pairwise(args))

    def explain(self, log_tail: str) -> str:
        if "resource busy" in log_tail.lower():
            pids = children.find_processes(lambda a: self.owns(a, None))
            held = f" (pid {', '.join(map(str, pids))})" if pids else ""
            return (f": another process{held} holds {self.data}: stop it, or give syncd "
                    "another --state-dir")
        return super().explain(log_tail)

    def command(self, exe: str, port: int) -> list[str]:
        return [exe, "--host", "127.0.0.1", "--port", str(port),
                "--storage-path", str(self.data), "--sync-on-commit", "--log-level", "WARNING",
                *(["--auth"] if self.auth else [])]
