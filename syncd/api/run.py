"""`run`: follow the legacy database until stopped (the wiring: run_daemon.py)."""

from __future__ import annotations

from syncd.config import Settings


def run(settings: Settings, capture: str | None = None, adopt_file: bool = False,
        http: str | None = None) -> int:
    """Follow the legacy database until stopped (SIGTERM/SIGINT); the exit code.

    `capture` is "triggers" or "scan" (default: [daemon] capture); `http` the
    listen address (default: [http] listen; "" turns the server off). A stop
    requested before the daemon starts following raises SystemExit(0).
    """
    # The daemon's stack (SQLAlchemy, APScheduler, numpy, Starlette...): `syncd run` only.
    from syncd.api.run_daemon import run as follow

    return follow(settings, capture, adopt_file, http)
