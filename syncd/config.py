"""Settings: one model, three layers (TOML file, then SYNCD_* environment, then flags).

Every command shares these names. `OPTIONS` is the single table the TOML loader,
the environment reader and the argparse flags are all generated from, so a
setting cannot exist in one layer and be missing from another.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.errors import ConfigError
from syncd.redact import redact_url, register_secret, register_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass
class Settings:
    """Resolved settings. `explicit` names the ones a user actually set."""

    sqlite: Path | None = None
    hdf5_dirs: list[Path] = field(default_factory=list)
    mongo_url: str | None = None
    redis_url: str | None = None
    database: str = "syncd"
    state_dir: Path = Path(".syncd")
    source_id: str = field(default_factory=socket.gethostname)  # see default_source_id
    migrations: Path | None = None
    timezone: str | None = None
    chunk_size: int = 5000
    mongo_timeout: float = 5.0
    redis_timeout: float = 5.0
    config_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    explicit: set[str] = field(default_factory=set)


def _path(value: Any) -> Path:
    return Path(os.path.expanduser(str(value)))


def _paths(value: Any) -> list[Path]:
    if isinstance(value, str):
        return [_path(p) for p in value.split(os.pathsep) if p]
    if isinstance(value, (list, tuple)):
        return [_path(p) for p in value]
    raise ValueError("expected a list of directories")


def _nonempty(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _database(value: Any) -> str:
    name = _nonempty(value)
    bad = set('/\\. "$*<>:|?') & set(name)
    if bad or len(name) > 63:
        raise ValueError(f"not a valid MongoDB database name (characters {''.join(sorted(bad))!r})")
    return name


def _mongo_url(value: Any) -> str:
    url = _nonempty(value)
    if not url.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("must start with mongodb:// or mongodb+srv://")
    return url


def _redis_url(value: Any) -> str:
    from syncd.connect.redis_urls import parse_redis_url

    url = _nonempty(value)
    try:
        parse_redis_url(url)
    except ConfigError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return url


def _timezone(value: Any) -> str:
    name = _nonempty(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


@dataclass(frozen=True)
class Option:
    """One setting: its key (TOML and Settings attribute), flag, env var, parser, help."""

    key: str
    flag: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str
    repeat: bool = False

    @property
    def env(self) -> str:
        return "SYNCD_" + self.key.upper()


OPTIONS: tuple[Option, ...] = (
    Option("sqlite", "--sqlite", _path, "the legacy metadata.db (opened read-only)", "PATH"),
    Option("hdf5_dirs", "--hdf5-dir", _paths,
           "an HDF5 cache directory (repeatable; env: os.pathsep-separated)", "DIR", repeat=True),
    Option("mongo_url", "--mongo-url", _mongo_url,
           "target MongoDB; unset = start the embedded server under --state-dir", "URL"),
    Option("redis_url", "--redis-url", _redis_url,
           "target Redis; unset = start an embedded Redis under --state-dir", "URL"),
    Option("database", "--database", _database, "MongoDB database (default: syncd)", "NAME"),
    Option("state_dir", "--state-dir", _path,
           "local state: embedded servers' data and logs (default: ./.syncd)", "DIR"),
    Option("source_id", "--source-id", _nonempty,
           "names this legacy source in document ids (default: HOST:/resolved/path/of/metadata.db)",
           "ID"),
    Option("migrations", "--migrations", _path,
           "folder of migration files (default: the ones shipped with syncd); a folder of "
           "your own replaces them, so copy them into it and number yours after them "
           "(docs/migrations.md); give it to every command", "DIR"),
    Option("timezone", "--timezone", _timezone,
           "zone for legacy timestamps without an offset (default: the host's)", "ZONE"),
    Option("chunk_size", "--chunk-size", _positive_int,
           "rows per read transaction and per bulk write (default: 5000)", "N"),
    Option("mongo_timeout", "--mongo-timeout", _positive_float,
           "seconds to wait for MongoDB before giving up (default: 5)", "SECONDS"),
    Option("redis_timeout", "--redis-timeout", _positive_float,
           "seconds to wait for Redis before giving up (default: 5)", "SECONDS"),
)
OPTIONS_BY_KEY = {o.key: o for o in OPTIONS}

# TOML tables owned by individual features: where each one's defaults live (module,
# attribute). The defaults name a table's keys and their types; every command checks
# every table present against them when the settings load (`check_sections`), so a
# mistyped key is refused whichever command reads the file. Each feature checks its
# values further when it reads its table (`section`). An unknown top-level key or
# table is a configuration error.
SECTION_DEFAULTS: dict[str, tuple[str, str]] = {
    "cache": ("syncd.hdf5.options", "CACHE_DEFAULTS"),
    "hdf5": ("syncd.hdf5.options", "HDF5_DEFAULTS"),
    "features": ("syncd.hdf5.features", "FEATURES_DEFAULTS"),
    "daemon": ("syncd.daemon.options", "DEFAULTS"),
    "http": ("syncd.http.options", "DEFAULTS"),
    "log": ("syncd.logs", "LOG_DEFAULTS"),
    "history": ("syncd.sinks.history", "HISTORY_DEFAULTS"),
}
SECTIONS: tuple[str, ...] = tuple(SECTION_DEFAULTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--config` and every shared setting flag to `parser` (defaults stay unset)."""
    group = parser.add_argument_group("settings (flag > SYNCD_* environment > TOML file)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="TOML settings file (env: SYNCD_CONFIG)")
    for opt in OPTIONS:
        group.add_argument(
            opt.flag, dest=opt.key, metavar=opt.metavar, default=argparse.SUPPRESS,
            action="append" if opt.repeat else "store", help=f"{opt.help} (env: {opt.env})",
        )


def _apply(values: dict[str, Any], key: str, raw: Any, origin: str) -> None:
    opt = OPTIONS_BY_KEY[key]
    try:
        values[key] = opt.parse(raw)
    except (ValueError, TypeError) as exc:
        shown = redact_url(str(raw)) if key.endswith("_url") else raw
        raise ConfigError(f"{origin}: {shown!r} is not valid: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from None
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_keys: Sequence[str] = SECTIONS,
) -> Settings:
    """Resolve settings from the TOML file, the environment and the flags, in that order.

    `extra_keys` are the TOML tables owned by features (`SECTIONS`), kept as they
    are in `Settings.extra` for the feature to check with `section`.
    """
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    explicit: set[str] = set()

    config_file = flags.pop("config", None) or environ.get("SYNCD_CONFIG") or None
    if config_file:
        path = _path(config_file)
        for key, raw in _read_toml(path).items():
            if key not in OPTIONS_BY_KEY and key not in extra_keys:
                known = ", ".join([o.key for o in OPTIONS] + [f"[{k}]" for k in extra_keys])
                raise ConfigError(f"--config {path}: unknown key {key!r} (known keys: {known})")
            if key in OPTIONS_BY_KEY:
                _apply(values, key, raw, f"--config {path}: {key}")
                explicit.add(key)
            else:
                if not isinstance(raw, dict):
                    raise ConfigError(f"--config {path}: {key} must be a table ([{key}])")
                values.setdefault("extra", {})[key] = raw
        values["config_file"] = path

    for opt in OPTIONS:
        raw = environ.get(opt.env)
        if raw is not None and raw != "":
            _apply(values, opt.key, raw, opt.env)
            explicit.add(opt.key)

    for key, raw in flags.items():
        if key not in OPTIONS_BY_KEY:
            continue
        opt = OPTIONS_BY_KEY[key]
        if opt.repeat:
            raw = [p for item in raw for p in _paths(item)]
        _apply(values, key, raw, opt.flag)
        explicit.add(key)

    settings = Settings(**values)
    settings.explicit = explicit
    check_sections(settings)
    if "source_id" not in explicit and settings.sqlite is not None:
        settings.source_id = default_source_id(settings.sqlite)
    register_url(settings.mongo_url)
    register_url(settings.redis_url)
    _register_http_secrets(settings, environ)
    return settings


def _register_http_secrets(settings: Settings, environ: Mapping[str, str]) -> None:
    """The dashboard's token and password are redacted from every log line and message
    from the moment the settings load, whatever the command (not only `syncd run`)."""
    http = settings.extra.get("http", {})
    for secret in (environ.get("SYNCD_HTTP_TOKEN"), http.get("token"), http.get("password")):
        if isinstance(secret, str) and secret.strip():
            register_secret(secret)


def section_defaults(name: str) -> Mapping[str, Any]:
    """The defaults (hence the keys) of the `[name]` table, from the feature that owns it.

    Imported on demand: a command whose file has no such table does not pay for the
    feature's imports (h5py, numpy).
    """
    import importlib

    module, attribute = SECTION_DEFAULTS[name]
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


def check_sections(settings: Settings) -> None:
    """Every table of the file against its keys and their types: one ConfigError (exit 2)
    naming the table and the key, for every command alike (`migrate` as `warm`)."""
    for name in settings.extra:
        if name in SECTION_DEFAULTS:
            section(settings, name, section_defaults(name))


def default_source_id(sqlite: Path) -> str:
    """Host name and resolved file: two files on one host are two sources (issue 12)."""
    return f"{socket.gethostname()}:{Path(sqlite).resolve()}"


def require_sqlite(settings: Settings) -> Path:
    """The legacy database path, checked: it exists, is readable and is an SQLite file."""
    path = settings.sqlite
    if path is None:
        raise ConfigError("--sqlite is not set: name the legacy metadata.db (or set SYNCD_SQLITE)")
    if not path.exists():
        raise ConfigError(f"--sqlite {path}: no such file")
    if not path.is_file():
        raise ConfigError(f"--sqlite {path}: not a file")
    try:
        with path.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise ConfigError(f"--sqlite {path}: cannot read ({exc.strerror})") from None
    if header != b"SQLite format 3\x00":
        if len(header) == 0:
            raise ConfigError(f"--sqlite {path}: the file is empty, not an SQLite database")
        raise ConfigError(f"--sqlite {path}: not an SQLite database")
    return path


def section(settings: Settings, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The `[name]` TOML table merged over `defaults`; an unknown key is a ConfigError.

    Values are checked against the type of their default (ints accept whole
    numbers, floats accept numbers, lists and tables must be lists and tables).
    """
    raw = dict(settings.extra.get(name, {}))
    out = dict(defaults)
    where = f"--config {settings.config_file}: [{name}]"
    for key, value in raw.items():
        if key not in defaults:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(defaults)})")
        default = defaults[key]
        ok = (
            default is None
            or (isinstance(default, bool) and isinstance(value, bool))
            or (isinstance(default, int) and not isinstance(default, bool)
                and isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(default, float) and isinstance(value, (int, float))
                and not isinstance(value, bool))
            or (isinstance(default, str) and isinstance(value, str))
            or (isinstance(default, list) and isinstance(value, list))
            or (isinstance(default, dict) and isinstance(value, dict))
        )
        if not ok:
            raise ConfigError(f"{where}: {key} = {value!r} is not valid: expected "
                              f"{type(default).__name__}")
        out[key] = float(value) if isinstance(default, float) else value
    return out
