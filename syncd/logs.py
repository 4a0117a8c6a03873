"""Logging to stderr, with every record scrubbed of secrets: text or JSON lines.

JSON lines are for log stacks (journald forwarders, Loki, Elasticsearch): one object
per line with time, level, logger and message, plus whatever a call passes in
`extra=` (source, table, counts). The same SecretFilter masks the message first, and
every extra string is scrubbed too, so a password cannot slip out through a field.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from syncd.redact import SecretFilter, scrub

LOG_FORMATS = ("text", "json")
LOG_DEFAULTS: dict[str, Any] = {"format": "text"}  # `[log]`: syncd.api.options reads it
# What every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _field(value: Any) -> Any:
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _field(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_field(v) for v in value]
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = _field(value)
        if record.exc_info:
            out["exception"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = scrub(record.exc_text)
        return json.dumps(out, ensure_ascii=False, default=str)


class StopSignalNoise(logging.Filter):
    """Drops a library's traceback of syncd's own stop signal.

    SIGTERM, SIGHUP and SIGINT raise in the main thread wherever they land
    (syncd/embedded/interrupts.py). When that is inside SQLAlchemy's connection pool,
    the pool logs the exception with its traceback before passing it on, and syncd
    then says "stopped by SIGHUP" in one line of its own. A library's record whose
    exception is no `Exception` (KeyboardInterrupt, SystemExit) is that noise; its
    real errors, and every record of syncd's own, pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return (exc is None or isinstance(exc, Exception)
                or record.name == "syncd" or record.name.startswith("syncd."))


def setup_logging(verbosity: int = 0, fmt: str = "text") -> None:
    """INFO by default; -v for DEBUG; -vv also the libraries' own DEBUG lines (pymongo's
    commands, the scheduler's runs); -q for warnings only. `fmt`: text or json."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(StopSignalNoise())  # first: SecretFilter turns exc_info into text
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("pymongo", "apscheduler", "watchdog", "urllib3", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity > 1
                                          else max(level, logging.WARNING))
