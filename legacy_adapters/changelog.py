"""The ChangeLog boundary: a log of committed row changes a source keeps for syncd.

The daemon follows a source by reading this log in order instead of rescanning
tables (`legacy_adapters/sqlite_capture.py` is the SQLite backend: triggers and a
log table). The contract, whatever the backend:

- every committed change leaves one entry, written atomically with the change;
- entries have a **seq**: positive, contiguous, never reused or going back, so a
  consumer that finds the entry after its checkpoint missing knows it has a gap;
- an **install id** names one installation of the log: a checkpoint taken against
  another install id is stale (the log was removed and installed again);
- several consumers may follow one log; each records its saved seq, and pruning
  never removes what a consumer seen within the retention window still needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from legacy_adapters.base import TableInfo

# A consumer refreshes its registry row at least this often while it runs (others
# count it as running while the row is recent).
CONSUMER_REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class Consumer:
    """One follower of the log: its saved position and when it last said so."""

    consumer: str
    label: str
    seq: int
    seen_seconds_ago: float
    running: bool


@dataclass(frozen=True)
class Change:
    """One logged row change: table, operation ('i', 'u', 'd'), rowid, key values; and
    when the log holds them (format 3), the row's column names and values after the
    change (None for a delete, and for a log of keys only)."""

    seq: int
    table: str
    op: str
    rowid: int | None
    key: tuple[Any, ...]
    at: float | None  # julian day the change's statement ran (the source's clock)
    columns: tuple[str, ...] | None = None
    values: tuple[Any, ...] | None = None


@runtime_checkable
class ChangeLog(Protocol):
    """Installs, reads, prunes and removes the change log of one legacy store."""

    # -- installation -------------------------------------------------------------

    def install(self, tables: list[TableInfo]) -> list[str]:
        """Create the log (if needed) and the capture of `tables` that is missing.

        Returns the tables whose capture was (re)created: their changes before this
        moment were not logged, so they need a reconcile.
        """
        ...

    def uninstall(self) -> int:
        """Remove the capture and the log, leaving the store as before; returns how many
        capture hooks (triggers) were removed."""
        ...

    def log_exists(self) -> bool:
        """Whether the log is installed."""
        ...

    def install_id(self) -> str | None:
        """The id of this installation of the log (None: not installed)."""
        ...

    def triggers(self) -> dict[str, str]:
        """The installed capture hooks: name -> table."""
        ...

    def missing(self, tables: list[TableInfo]) -> list[TableInfo]:
        """Tables whose capture is absent or describes an old key layout."""
        ...

    def capturable(self, table: TableInfo) -> bool:
        """Whether the log can capture `table` (others are followed by reconciles only)."""
        ...

    # -- reading --------------------------------------------------------------------

    def read(self, after: int, limit: int) -> list[Change]:
        """Up to `limit` entries with seq > `after`, oldest first (inside the source's
        `read_transaction` when the log reads through the source)."""
        ...

    def last_seq(self) -> int:
        """The highest seq logged (0: none yet)."""
        ...

    def pending(self, after: int) -> dict[str, tuple[int, float | None]]:
        """Per table: (entries with seq > `after`, julian day of the oldest)."""
        ...

    # -- consumers and pruning ------------------------------------------------------

    def consumers(self) -> list[Consumer]:
        """Every consumer recorded, lowest position first."""
        ...

    def live_consumers(self, exclude: str | None = None) -> list[Consumer]:
        """Consumers that say they run and recorded themselves recently."""
        ...

    def record_consumer(self, consumer: str, label: str, seq: int,
                        running: bool = True) -> bool:
        """Record `consumer`'s saved seq without ever waiting on a legacy writer; False
        when it could not be written now (try again later)."""
        ...

    def prune_bound(self, upto: int, retention_seconds: float) -> int:
        """How far the log may be pruned: `upto`, or less while another consumer seen
        within `retention_seconds` has not applied that far."""
        ...

    def prune(self, upto: int, batch: int = 500, budget_seconds: float = 0.5) -> int:
        """Delete applied entries (seq < `upto`) in small writes within a time budget,
        keeping the entry at `upto` so seq never goes back; returns how many."""
        ...

    def close(self) -> None:
        """Release the log's connections."""
        ...
