"""The embedded MongoDB: SecantusDB's `secantusd-py`, a separate program (GPL-2.0,
never imported), with its data under `<state>/mongo/data`."""

from __future__ import annotations

import itertools
from pathlib import Path

from syncd.embedded import children
from syncd.embedded.server import EmbeddedServer

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

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

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
                "--storage-path", str(self.data), "--sync-on-commit", "--log-level", "WARNING"]
