"""Which `ChangeFeed` `syncd run` follows: the one place the capture mode is decided.

`triggers` follows the SQLite change log (legacy_adapters/sqlite_capture.py, the
only concrete capture code the daemon ever runs, handed to it here as
`ChangeLog`s); `scan` reads new rows past high-water marks and writes nothing to
metadata.db. Below this module nothing asks which mode it is in.
"""

from __future__ import annotations

from legacy_adapters.base import Source
from legacy_adapters.errors import SourceReadOnly
from legacy_adapters.feed import ChangeFeed
from legacy_adapters.sqlite_capture import Capture
from syncd.daemon.feed_scan import ScanFeed
from syncd.daemon.feed_triggers import LogConnections, TriggerFeed
from syncd.daemon.follow import FeedParts
from syncd.daemon.options import DaemonOptions
from syncd.daemon.runner import FeedFactory
from syncd.errors import ConfigError


def feed_factory(options: DaemonOptions, source: Source) -> FeedFactory:
    """What makes the daemon's feed, for `options.capture`."""
    if options.capture == "scan":
        return ScanFeed

    def triggers(parts: FeedParts) -> ChangeFeed:
        # The loop reads the log through the source (one read transaction covers the
        # log and the changed rows); scheduler threads (pruning, the status's lag) get
        # connections of their own.
        path, keys_only = options.sqlite, options.history.exclude  # left out of history
        logs = LogConnections(Capture(path, source=source, keys_only=keys_only),
                              Capture(path, keys_only=keys_only),
                              Capture(path, keys_only=keys_only))
        return TriggerFeed(logs, parts)

    return triggers


def read_only_error(exc: SourceReadOnly) -> ConfigError:
    """The start-up error when triggers capture cannot write its log: follow with scan."""
    return ConfigError(f"{exc}; triggers capture (the default) writes its triggers and "
                       "change log into the database: follow it with --capture scan "
                       '(or [daemon] capture = "scan"), which writes nothing to it')
