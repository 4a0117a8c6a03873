"""The `[http]` settings (and --http, SYNCD_HTTP_*) checked once into `HttpOptions`, and
what the routes are told of the source (`http_context`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo.database import Database

from syncd.api.options import source_ref
from syncd.client.local_tier import LocalTierOptions
from syncd.config import Settings, section
from syncd.errors import ConfigError
from syncd.http.context import HttpContext
from syncd.http.options import DEFAULT_PORT, DEFAULTS, HttpOptions, is_loopback


def http_context(settings: Settings, db: Database, redis: Any | None = None,
                 status: Callable[[], dict[str, Any] | None] | None = None,
                 source_id: str | None = None,
                 local_tier: LocalTierOptions | None = None) -> HttpContext:
    """What every route reads; `source_id`: the id already resolved (`syncd run`), else
    the routes look the configured source up in `db` as they go (`syncd dashboard`);
    `local_tier`: this host's local tier, shown on the cache page."""
    ref = source_ref(settings, source_id)
    migrations = Path(settings.migrations) if settings.migrations else None
    return HttpContext(ref, settings.mongo_timeout, db, redis, status, migrations, local_tier)


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
    options = HttpOptions(host, port, raw["token"], raw["username"], raw["password"],
                          raw["stuck_seconds"], raw["max_streams"],
                          tuple(h.strip().lower() for h in hosts),
                          raw["header_timeout_seconds"], raw["experiments_order"])
    if host is not None and not is_loopback(host) and not options.auth:
        raise ConfigError(f"[http] listen = {raw['listen']!r} is not a loopback address: set "
                          "a token (SYNCD_HTTP_TOKEN, or [http] token; bearer) or [http] "
                          "username and password (basic auth), or listen on 127.0.0.1")
    return options
