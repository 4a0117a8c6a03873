"""The `[http]` settings: where the server listens and what it asks of clients.

Loopback by default, so nothing is exposed by accident; any other address needs a
bearer token or basic-auth credentials, and then every route asks for them.
syncd.api.http_options reads and checks them once into a frozen `HttpOptions`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 9187
DEFAULTS: dict[str, Any] = {
    "listen": f"127.0.0.1:{DEFAULT_PORT}",
    "token": "",
    "username": "",
    "password": "",
    # /healthz answers 503 once the follow loop has not ticked for this long.
    "stuck_seconds": 60.0,
    # Open live streams (dashboard pages following an experiment) at most; more: 503.
    "max_streams": 100,
    # Host names browsers may use besides loopback and the listen host ("*": any).
    "allowed_hosts": [],
    # A client has this long to send a request's headers, then its connection closes.
    "header_timeout_seconds": 5.0,
    # The experiments list: "memory" (its order kept by the dashboard, following the
    # change stream) or "server" (each page sorted and skipped by MongoDB).
    "experiments_order": "memory",
}


@dataclass(frozen=True)
class HttpOptions:
    """Resolved `[http]` settings; `host` None means the server is off."""

    host: str | None
    port: int
    token: str = ""
    username: str = ""
    password: str = ""
    stuck_seconds: float = 60.0
    max_streams: int = 100
    allowed_hosts: tuple[str, ...] = ()
    header_timeout_seconds: float = 5.0
    experiments_order: str = "memory"

    @property
    def auth(self) -> bool:
        return bool(self.token or self.username)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
