"""Logging to stderr, with every record scrubbed of secrets."""

from __future__ import annotations

import logging
import sys

from syncd.redact import SecretFilter


def setup_logging(verbosity: int = 0) -> None:
    """INFO by default; -v for DEBUG; -q for warnings only."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("pymongo", "apscheduler", "watchdog", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
