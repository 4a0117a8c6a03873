"""The `[http]` settings: where the server listens and what it asks of clients.

Loopback by default, so nothing is exposed by accident; any other address needs a
bearer token or basic-auth credentials, and then every route asks for them.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from syncd.config import Settings, section
from syncd.errors import ConfigError
from syncd.redact import register_secret

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


def parse_listen(value: str) -> tuple[str | None, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` (loopback) or "" (off)."""
    text = value.strip()
    if not text:
        return None, 0
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"[http] listen = {value!r}: use HOST:PORT (e.g. "
                          f"127.0.0.1:{DEFAULT_PORT}), or \"\" to turn the server off")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_blank(settings: Settings, raw: dict[str, Any]) -> None:
    """A token or password set but empty or whitespace only is a mistake (a template's
    `SYNCD_HTTP_TOKEN=`, a stray " "), not "no auth": refuse it rather than guess."""
    given = settings.extra.get("http", {})
    env = os.environ.get("SYNCD_HTTP_TOKEN")
    if env is not None and not env.strip():
        raise ConfigError("SYNCD_HTTP_TOKEN is set but blank: set a real token, or unset it")
    for key in ("token", "password"):
        if key in given and not str(given[key]).strip():
            raise ConfigError(f"[http] {key} = {given[key]!r} in --config {settings.config_file} "
                              "is blank: set a real one, or remove the line")


def http_options(settings: Settings, listen: str | None = None) -> HttpOptions:
    """The `[http]` settings, checked; `listen` (the --http flag) wins over the
    SYNCD_HTTP_LISTEN environment variable, which wins over `[http] listen`
    (SYNCD_HTTP_TOKEN likewise over `[http] token`).

    A non-loopback address without a token or username/password is refused (a
    ConfigError: exit 2), since the server would show the sync's state to anyone.
    """
    raw = section(settings, "http", DEFAULTS)
    raw["token"] = os.environ.get("SYNCD_HTTP_TOKEN") or raw["token"]
    if listen is None:
        listen = os.environ.get("SYNCD_HTTP_LISTEN")
    if listen is not None:
        raw["listen"] = listen
    host, port = parse_listen(raw["listen"])
    if bool(raw["username"]) != bool(raw["password"]):
        raise ConfigError("[http] username and password: set both (basic auth) or neither")
    _refuse_blank(settings, raw)
    if raw["stuck_seconds"] <= 0:
        raise ConfigError(f"[http] stuck_seconds = {raw['stuck_seconds']}: must be positive")
    if raw["max_streams"] < 1:
        raise ConfigError(f"[http] max_streams = {raw['max_streams']}: must be at least 1")
    if raw["header_timeout_seconds"] <= 0:
        raise ConfigError(f"[http] header_timeout_seconds = {raw['header_timeout_seconds']}: "
                          "must be positive")
    if raw["experiments_order"] not in ("memory", "server"):
        raise ConfigError(f"[http] experiments_order = {raw['experiments_order']!r}: "
                          '"memory" (the default) or "server"')
    hosts = raw["allowed_hosts"]
    if not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError(f"[http] allowed_hosts = {hosts!r}: a list of host names, e.g. "
                          '["trainhost.lab", "10.0.0.5"] (or ["*"] for any)')
    for secret in (raw["token"], raw["password"]):
        register_secret(secret)
    options = HttpOptions(host, port, raw["token"], raw["username"], raw["password"],
                          raw["stuck_seconds"], raw["max_streams"],
                          tuple(h.strip().lower() for h in hosts),
                          raw["header_timeout_seconds"], raw["experiments_order"])
    if host is not None and not is_loopback(host) and not options.auth:
        raise ConfigError(f"[http] listen = {raw['listen']!r} is not a loopback address: set "
                          "[http] token (bearer) or username and password (basic auth), "
                          "or listen on 127.0.0.1")
    return options
